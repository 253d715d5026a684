"""The runtime 4-bit linear: keeps the packed GEMM tensors and dequantises on the fly per call.

Only one layer's float weight exists at a time, so resident memory stays near the packed size on CPU
and GPU alike. Plain PyTorch: no kernels, no extra dependency.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .pack import PACK, pack_gemm, quantize, unpack_columns


class WQLinearGEMM(nn.Module):
    """A linear layer stored as AutoAWQ GEMM tensors (qweight, qzeros, scales[, bias])."""

    def __init__(self, in_features: int, out_features: int, group_size: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if in_features % group_size or out_features % PACK:
            raise ValueError(f"cannot pack a {in_features}->{out_features} linear with group size {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(in_features, out_features // PACK, dtype=torch.int32,
                                                    device=device))
        self.register_buffer("qzeros", torch.zeros(groups, out_features // PACK, dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.zeros(groups, out_features, dtype=torch.float16, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int) -> WQLinearGEMM:
        """Quantise a float linear (round to nearest, after any AWQ scaling/clipping was applied)."""
        layer = cls(linear.in_features, linear.out_features, group_size, linear.bias is not None)
        for name, tensor in pack_gemm(*quantize(linear.weight.data, group_size)).items():
            getattr(layer, name).copy_(tensor)
        if linear.bias is not None:
            layer.bias.data = linear.bias.data.detach().clone().half()
        return layer

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight [out, in] the packed tensors encode."""
        return self.dequantized_weight_t(dtype).t()

    def dequantized_weight_t(self, dtype: torch.dtype) -> torch.Tensor:
        """The transposed weight [in, out], built in the packed layout's own order (no transposes)."""
        groups = self.scales.shape[0]
        q = unpack_columns(self.qweight).view(groups, self.group_size, self.out_features)
        zeros = unpack_columns(self.qzeros).unsqueeze(1)  # [groups, 1, out]
        w = (q - zeros).to(dtype) * self.scales.to(dtype).unsqueeze(1)
        return w.view(self.in_features, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(x, self.dequantized_weight_t(x.dtype))
        return out + self.bias.to(x.dtype) if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, w_bit=4, group_size={self.group_size}"


def swap_linears(layers: nn.ModuleList, make: Callable[[nn.Linear], nn.Module]) -> int:
    """Replace every nn.Linear inside the decoder blocks by make(linear); returns how many (the score head
    and embedding sit outside the blocks and stay as they are)."""
    count = 0
    for block in layers:
        for name, module in list(block.named_modules()):
            if isinstance(module, nn.Linear):
                parent, _, child = name.rpartition(".")
                setattr(block.get_submodule(parent) if parent else block, child, make(module))
                count += 1
    return count
