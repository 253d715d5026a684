"""Asymmetric group-wise 4-bit quantisation and AutoAWQ's GEMM packing.

Layout (what AutoAWQ's WQLinear_GEMM writes and vLLM's awq kernels read), for a weight W [out, in]:
  qweight int32 [in, out/8]: nibble k (bits 4k..4k+3) of qweight[i, c] is Q[8c + ORDER[k], i]
  qzeros  int32 [in/group, out/8]: the zero points, packed the same way, stored raw (0..15)
  scales  fp16  [in/group, out]
and W ~= (Q - z) * s per group of `group_size` input channels.
"""

from __future__ import annotations

from typing import Any

import torch

BITS = 4
MAX_Q = 2**BITS - 1
PACK = 32 // BITS  # nibbles per int32
ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ's interleave: nibble k holds output column ORDER[k]
REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # its inverse: column j sits in nibble REVERSE_ORDER[j]
MIN_RANGE = 1e-5


def check_shape(weight: torch.Tensor, group_size: int) -> None:
    """A packable weight: 2-D, in % group_size == 0, out % 8 == 0."""
    out_f, in_f = weight.shape
    if in_f % group_size or out_f % PACK:
        raise ValueError(
            f"weight {tuple(weight.shape)} cannot be packed with group size {group_size}: "
            f"in-features must be a multiple of it and out-features a multiple of {PACK}"
        )


def quantize(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q int32 [out, in], zeros int32 [out, in/g], scales fp16 [out, in/g] of a float weight.

    The scale is rounded to fp16 before Q and z are computed, so dequantising with the stored fp16
    scales reproduces exactly the fake-quantised weight the search evaluated.
    """
    check_shape(weight, group_size)
    out_f, in_f = weight.shape
    w = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    w_max, w_min = w.amax(dim=-1), w.amin(dim=-1)
    scales = ((w_max - w_min).clamp(min=MIN_RANGE) / MAX_Q).half()
    s = scales.float()
    zeros = torch.clamp(-torch.round(w_min / s), 0, MAX_Q)
    q = torch.clamp(torch.round(w / s.unsqueeze(-1)) + zeros.unsqueeze(-1), 0, MAX_Q)
    return q.reshape(out_f, in_f).to(torch.int32), zeros.to(torch.int32), scales


def dequantize(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(Q - z) * s as a [out, in] tensor of `dtype`, from [out, in] codes and [out, in/g] zeros/scales."""
    out_f, in_f = q.shape
    groups = zeros.shape[1]
    w = (q.reshape(out_f, groups, in_f // groups) - zeros.unsqueeze(-1)).to(dtype)
    return (w * scales.to(dtype).unsqueeze(-1)).reshape(out_f, in_f)


def fake_quantize(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """Quantise and dequantise in one step (what the search evaluates), in the weight's dtype.

    The same arithmetic as dequantize(*quantize(w)) in fp32, equal to it bit for bit, without the integer
    tensors: the search calls this for every candidate, so it keeps to a few in-place passes.
    """
    check_shape(weight, group_size)
    out_f, in_f = weight.shape
    w = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    return fake_quantize_groups(w, *torch.aminmax(w, dim=-1)).reshape(out_f, in_f).to(weight.dtype)


def fake_quantize_groups(w: torch.Tensor, w_min: torch.Tensor, w_max: torch.Tensor) -> torch.Tensor:
    """fake_quantize on fp32 [out, groups, group_size] whose per-group min and max ([out, groups]) are
    known (the clip search derives them per candidate without a pass over the weight)."""
    s = ((w_max - w_min).clamp(min=MIN_RANGE) / MAX_Q).half().float().unsqueeze(-1)
    zeros = torch.clamp(-torch.round(w_min.unsqueeze(-1) / s), 0, MAX_Q)
    q = torch.div(w, s).round_().add_(zeros).clamp_(0, MAX_Q)
    return q.sub_(zeros).mul_(s)


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """int [rows, cols] with values 0..15 -> int32 [rows, cols/8] in AutoAWQ's nibble order."""
    rows, cols = values.shape
    v = values.to(torch.int64).reshape(rows, cols // PACK, PACK)[..., list(ORDER)]
    shifts = torch.arange(0, 32, BITS, dtype=torch.int64)
    packed = (v << shifts).sum(dim=-1)  # disjoint bit ranges: the sum is the bitwise or
    # int32 two's complement: the top nibble's high bit is the sign bit
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_columns(packed: torch.Tensor) -> torch.Tensor:
    """int32 [rows, cols/8] -> int32 [rows, cols] with values 0..15 (inverse of pack_columns).

    Column 8c + j sits in nibble REVERSE_ORDER[j], so shifting by 4 * REVERSE_ORDER[j] yields the
    columns already in order, with no gather.
    """
    rows, n = packed.shape
    shifts = torch.tensor([BITS * k for k in REVERSE_ORDER], dtype=torch.int32, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & MAX_Q).reshape(rows, n * PACK)


def pack_gemm(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> dict[str, torch.Tensor]:
    """The GEMM tensors {qweight, qzeros, scales} from Q [out, in], zeros and scales [out, in/g]."""
    return {
        "qweight": pack_columns(q.t().contiguous()),
        "qzeros": pack_columns(zeros.t().contiguous()),
        "scales": scales.t().contiguous().half(),
    }


def unpack_gemm(tensors: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q [out, in], zeros [out, in/g], scales fp16 [out, in/g] back from the GEMM tensors."""
    q = unpack_columns(tensors["qweight"]).t().contiguous()
    zeros = unpack_columns(tensors["qzeros"]).t().contiguous()
    return q, zeros, tensors["scales"].t().contiguous()
