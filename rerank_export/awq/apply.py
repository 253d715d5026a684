"""Apply an AWQResult to a float decoder: fold the scales, clip, then swap linears for 4-bit ones.

Kept apart from the search so a saved result can be inspected, re-applied, or tested on its own.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .qlinear import WQLinearGEMM, swap_linears
from .search import AWQResult

log = logging.getLogger(__name__)


def fold_scales(decoder: nn.Module, result: AWQResult) -> None:
    """prev op's output /= s, the linears' input columns *= s: the float function is unchanged."""
    with torch.no_grad():
        for r in result.scales:
            block = decoder.layers[r.block]
            prev = block.get_submodule(r.prev)
            s = r.scales.to(prev.weight.dtype)
            if isinstance(prev, nn.Linear):
                prev.weight.div_(s.unsqueeze(-1))
                if prev.bias is not None:
                    prev.bias.div_(s)
            else:  # an RMSNorm: its weight multiplies each channel
                prev.weight.div_(s)
            for name in r.linears:
                block.get_submodule(name).weight.mul_(s)


def clip_weights(decoder: nn.Module, result: AWQResult) -> None:
    """Clamp each group of each searched linear to +-max_val (on the already scaled weight)."""
    with torch.no_grad():
        for r in result.clips:
            weight = decoder.layers[r.block].get_submodule(r.linear).weight
            out_f = weight.shape[0]
            bound = r.max_val.to(weight.dtype).unsqueeze(-1)
            grouped = weight.view(out_f, r.max_val.shape[1], -1)
            grouped.copy_(torch.clamp(grouped, -bound, bound))


def quantize_linears(decoder: nn.Module, group_size: int) -> int:
    """Replace every nn.Linear inside the decoder blocks by a WQLinearGEMM; returns how many."""
    return swap_linears(decoder.layers, lambda linear: WQLinearGEMM.from_linear(linear, group_size))


def apply_awq(decoder: nn.Module, result: AWQResult) -> int:
    """Fold scales, clip, quantise: the decoder's blocks become 4-bit in place. Returns linears converted."""
    fold_scales(decoder, result)
    clip_weights(decoder, result)
    count = quantize_linears(decoder, result.settings.group_size)
    log.info("quantised %d linears to 4 bits (group size %d)", count, result.settings.group_size)
    return count
