"""The AWQ search's settings, apart from the search itself so that option parsing needs no torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchSettings:
    group_size: int = 128
    n_grid: int = 20  # alpha in {0, 1/n, ..., (n-1)/n}
    scale_search: bool = True  # False: s = 1 everywhere, i.e. plain round-to-nearest
    clip: bool = True
    max_shrink: float = 0.5  # clip search tries max|w| * (1 - i/n_grid) for i < max_shrink * n_grid
    clip_tokens: int = 512  # tokens (strided sample) that score the clip candidates
    search_tokens: int = 1024  # real tokens (whole sequences) that score each scale candidate
    batch_tokens: int = 2048  # padded tokens per calibration batch

    def alphas(self) -> list[float]:
        return [i / self.n_grid for i in range(self.n_grid)] if self.scale_search else [0.0]
