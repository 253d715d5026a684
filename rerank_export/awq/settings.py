"""The AWQ search's settings, apart from the search itself so that option parsing needs no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DTYPES = ("bfloat16", "float32")


@dataclass(frozen=True)
class SearchSettings:
    group_size: int = 128
    n_grid: int = 20  # alpha in {0, 1/n, ..., (n-1)/n}
    # Score every 4th alpha, then halve the step around the best: 9 of the 20 (1: all of them, as llm-awq).
    alpha_stride: int = 4
    scale_search: bool = True  # False: s = 1 everywhere, i.e. plain round-to-nearest
    clip: bool = True
    max_shrink: float = 0.5  # clip search tries max|w| * (1 - i/n_grid) for i < max_shrink * n_grid
    clip_tokens: int = 512  # tokens (strided sample) that score the clip candidates
    search_tokens: int = 1024  # real tokens (whole sequences) that score each scale candidate
    batch_tokens: int = 2048  # padded tokens per calibration batch
    # The blocks' forward passes run in this dtype (fake quantisation and the clip search stay fp32): bf16
    # matmuls are ~2.6x fp32's on CPUs with bf16 dot products; llm-awq runs the search in fp16 on GPUs.
    search_dtype: str = "bfloat16"

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.search_dtype)
