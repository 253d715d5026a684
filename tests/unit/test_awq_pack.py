"""The GEMM layout, checked against a from-scratch unpacker written with explicit loops and bit ops."""

from __future__ import annotations

import pytest
import torch

from rerank_export.awq.pack import (
    ORDER,
    check_shape,
    dequantize,
    fake_quantize,
    pack_columns,
    pack_gemm,
    quantize,
    unpack_gemm,
)
from rerank_export.awq.qlinear import WQLinearGEMM

SEED = 0
GROUP = 128
FORWARD_ATOL = 1e-5  # fp32 matmul of the same weights in a different association order


def reference_unpack(packed: torch.Tensor) -> torch.Tensor:
    """int32 [rows, n] -> [rows, 8n]: nibble k of word (r, c) is value (r, 8c + ORDER[k]). Loops only."""
    rows, n = packed.shape
    out = torch.zeros(rows, 8 * n, dtype=torch.int64)
    for r in range(rows):
        for c in range(n):
            word = int(packed[r, c]) & 0xFFFFFFFF  # the int32's bits as an unsigned number
            for k in range(8):
                out[r, 8 * c + ORDER[k]] = (word >> (4 * k)) & 0xF
    return out


def reference_dequantize(tensors: dict[str, torch.Tensor], group_size: int) -> torch.Tensor:
    """W [out, in] from qweight [in, out/8], qzeros [in/g, out/8], scales [in/g, out], element by element."""
    q = reference_unpack(tensors["qweight"])  # [in, out]
    z = reference_unpack(tensors["qzeros"])  # [in/g, out]
    s = tensors["scales"].float()
    w = torch.zeros(q.shape[1], q.shape[0])
    for i in range(q.shape[0]):
        g = i // group_size
        w[:, i] = (q[i] - z[g]).float() * s[g]
    return w


def test_known_word():
    # Column j of one row holds j + 1: nibbles in order k hold ORDER[k] + 1 = 1,3,5,7,2,4,6,8.
    packed = pack_columns(torch.arange(1, 9, dtype=torch.int32).unsqueeze(0))
    assert int(packed[0, 0]) & 0xFFFFFFFF == 0x86427531


def test_pack_round_trip_random_codes():
    gen = torch.Generator().manual_seed(SEED)
    q = torch.randint(0, 16, (24, 256), generator=gen, dtype=torch.int32)  # [out, in]
    zeros = torch.randint(0, 16, (24, 2), generator=gen, dtype=torch.int32)
    scales = torch.rand(24, 2, generator=gen).half()
    tensors = pack_gemm(q, zeros, scales)
    assert tensors["qweight"].shape == (256, 3) and tensors["qweight"].dtype == torch.int32
    assert tensors["qzeros"].shape == (2, 3) and tensors["scales"].shape == (2, 24)
    assert torch.equal(reference_unpack(tensors["qweight"]), q.t().long())
    assert torch.equal(reference_unpack(tensors["qzeros"]), zeros.t().long())
    q2, z2, s2 = unpack_gemm(tensors)
    assert torch.equal(q2, q) and torch.equal(z2, zeros) and torch.equal(s2, scales)


def test_high_nibble_sets_the_sign_bit():
    q = torch.full((8, 8), 15, dtype=torch.int32)
    packed = pack_columns(q)
    assert int(packed[0, 0]) == -1  # all 32 bits set
    assert torch.equal(reference_unpack(packed), q.long())


def test_quantize_matches_the_formula():
    gen = torch.Generator().manual_seed(SEED)
    w = torch.randn(16, 256, generator=gen)
    q, zeros, scales = quantize(w, GROUP)
    for o in range(16):
        for g in range(2):
            block = w[o, g * GROUP:(g + 1) * GROUP]
            s = torch.tensor(float(max(block.max() - block.min(), 1e-5)) / 15).half().float()
            z = min(max(-round(float(block.min() / s)), 0), 15)
            assert float(scales[o, g]) == float(s) and int(zeros[o, g]) == z
            expected = torch.clamp(torch.round(block / s) + z, 0, 15).to(torch.int32)
            assert torch.equal(q[o, g * GROUP:(g + 1) * GROUP], expected)


def test_unpack_of_packed_layer_is_its_fake_quantized_weight():
    torch.manual_seed(SEED)
    linear = torch.nn.Linear(256, 64, bias=False)
    fake = fake_quantize(linear.weight.data, GROUP)
    layer = WQLinearGEMM.from_linear(linear, GROUP)
    tensors = {"qweight": layer.qweight, "qzeros": layer.qzeros, "scales": layer.scales}
    assert torch.equal(reference_dequantize(tensors, GROUP), fake)
    assert torch.equal(layer.dequantized_weight(), fake)
    assert torch.equal(dequantize(*unpack_gemm(tensors)), fake)
    x = torch.randn(5, 256)
    assert torch.allclose(layer(x), x @ fake.t(), atol=FORWARD_ATOL)


def test_layer_with_bias():
    torch.manual_seed(SEED)
    linear = torch.nn.Linear(128, 16, bias=True)
    layer = WQLinearGEMM.from_linear(linear, GROUP)
    x = torch.randn(3, 128)
    expected = x @ fake_quantize(linear.weight.data, GROUP).t() + linear.bias.data.half().float()
    assert torch.allclose(layer(x), expected, atol=FORWARD_ATOL)


def test_constant_group_does_not_divide_by_zero():
    w = torch.zeros(8, 128)
    assert torch.equal(fake_quantize(w, GROUP), w)


@pytest.mark.parametrize("shape", [(8, 100), (12, 128)])
def test_unpackable_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="cannot be packed"):
        check_shape(torch.zeros(shape), GROUP)
