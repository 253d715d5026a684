"""Attention as onnxruntime's fused GroupQueryAttention, so memory grows linearly with length.

The dynamo exporter spells attention out as MatMul -> Softmax -> MatMul (opset <= 20) or as ONNX
Attention (opset 23); onnxruntime 1.32 keeps the batch x heads x L x L score matrix for both (19 GiB for
one 8,192-token document on the 0.6B shape). com.microsoft.GroupQueryAttention runs blockwise on the CPU
provider and with flash / memory-efficient kernels on CUDA, reads grouped K/V heads as they are, and is
causal by definition: rows are right-padded and `seqlens_k` gives each row's last real position.

While a graph is traced, the decoder's attention is this module's: transformers calls `gqa_attention`
per layer and builds no mask (`padding_mask` hands the 2-D padding mask through).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

ATTENTION = "rerank-export-gqa"
OP = "com.microsoft::GroupQueryAttention"


def gqa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float,
                  dropout: float = 0.0, **_: Any) -> tuple[Any, None]:
    """transformers' attention interface: (B, H, L, D) query, (B, KV, L, D) key/value -> (B, L, H, D)."""
    import torch

    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    # GroupQueryAttention reads (B, L, heads * D): the layout before the projections were split into heads.
    q, k, v = (t.transpose(1, 2).reshape(batch, length, -1) for t in (query, key, value))
    seqlens_k = (attention_mask.to(torch.int32).sum(-1) - 1).to(torch.int32)
    total = torch.full((), length, dtype=torch.int32)
    # The present K/V outputs are unused, but onnxruntime takes its blockwise (flash) CPU path only
    # when they exist.
    present = (batch, kv_heads, length, dim)
    out, _, _ = torch.onnx.ops.symbolic_multi_out(
        OP, (q, k, v, None, None, seqlens_k, total),
        {"num_heads": heads, "kv_num_heads": kv_heads, "scale": float(scaling)},
        dtypes=(q.dtype,) * 3, shapes=(q.shape, present, present), version=1,
    )
    return out.reshape(batch, length, heads, dim), None


def padding_mask(batch_size: int, q_length: int, kv_length: int, attention_mask: Any = None,
                 **_: Any) -> Any:
    """transformers' mask interface: no L x L mask, only the (B, L) padding mask for `gqa_attention`."""
    import torch

    if attention_mask is None:
        return torch.ones(batch_size, kv_length, dtype=torch.bool)
    return attention_mask


@contextlib.contextmanager
def fused_attention(decoder: Any) -> Iterator[None]:
    """Trace `decoder` with GroupQueryAttention; its own attention implementation comes back after."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION, gqa_attention)
    AttentionMaskInterface.register(ATTENTION, padding_mask)
    config = decoder.config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
