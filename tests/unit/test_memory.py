"""The activation memory model: the fit over measured shapes, and old manifests without the growth term."""

from __future__ import annotations

import json

import pytest

from rerank_export.errors import ArtifactError
from rerank_export.manifest import MANIFEST, Manifest, MemoryModel, read_manifest
from rerank_export.memory import MEASURE_SHAPES, fit_activation

KiB = 1024
# Per-token peaks measured on the real 0.6B shape (benchmarks/RESULTS.md), in bytes.
TORCH = {(4, 512): 74.8 * KiB, (1, 2048): 105.3 * KiB, (1, 4096): 70.8 * KiB}
ONNX = {(4, 512): 336.8 * KiB, (1, 2048): 927.3 * KiB, (1, 4096): 1312.6 * KiB}


def _activations(constant: int, slope: float) -> MemoryModel:
    return MemoryModel(weight_bytes=0, overhead_bytes=0, activation_bytes_per_token=constant,
                       activation_bytes_per_token_per_position=slope)


def test_flat_cost_keeps_the_largest_per_token_peak():
    constant, slope = fit_activation(TORCH)
    assert slope == 0 and constant == pytest.approx(105.3 * KiB, abs=1)


def test_growing_cost_is_extrapolated_in_proportion_and_covers_every_shape():
    constant, slope = fit_activation(ONNX)
    assert slope == pytest.approx(1312.6 * KiB / 4096)
    memory = _activations(constant, slope)
    for (batch, length), cost in ONNX.items():
        assert memory.bytes_per_token(length) >= cost - 1
    assert memory.bytes_per_token(2048) == pytest.approx(927.3 * KiB, abs=1)  # the shape that sets it
    # Measured at 1 x 8192 (not a fitted shape): 2,487 KiB per token. The old flat rule read 927 (2.68x low).
    assert 1.0 < memory.bytes_per_token(8192) / (2486.8 * KiB) < 1.25


def test_a_mild_rise_follows_the_line_through_the_two_lengths():
    # onnx-int8 with GroupQueryAttention, 0.6B shape, KiB per token (benchmarks/RESULTS.md).
    measured = {(4, 512): 41.8 * KiB, (1, 2048): 41.8 * KiB, (1, 4096): 48.9 * KiB}
    constant, slope = fit_activation(measured)
    assert slope == pytest.approx(7.1 * KiB / 2048)
    memory = _activations(constant, slope)
    for (batch, length), cost in measured.items():
        assert memory.bytes_per_token(length) >= cost - 1
    # Measured at 1 x 8192: 53.3 KiB per token; the flat rule (the largest measured, 48.9) reads it 8% low.
    assert 1.0 < memory.bytes_per_token(8192) / (53.3 * KiB) < 1.4


def test_a_rise_without_growth_at_equal_tokens_is_not_attention():
    # onnx-int4 (MatMulNBits, GroupQueryAttention), 0.6B shape: 1.27x from 2048 to 4096, but a 2048-token row
    # costs what four 512-token rows do. Measured at 1 x 8192: 57.2 KiB per token.
    measured = {(4, 512): 40.3 * KiB, (1, 2048): 40.3 * KiB, (1, 4096): 51.0 * KiB}
    constant, slope = fit_activation(measured)
    assert slope == pytest.approx(10.7 * KiB / 2048)
    assert 1.0 < _activations(constant, slope).bytes_per_token(8192) / (57.2 * KiB) < 1.5  # proportional: 2.4x


def test_a_cost_that_falls_at_the_longest_length_is_flat_at_its_largest():
    constant, slope = fit_activation({(4, 512): 100.0, (1, 2048): 110.0, (1, 4096): 100.0})
    assert slope == 0 and constant == 110


def test_measured_shapes_include_two_single_sequences():
    assert sorted(length for batch, length in MEASURE_SHAPES if batch == 1)[-2:] == [2048, 4096]


def test_manifests_without_the_growth_term_read_as_flat():
    memory = {"weight_bytes": 10, "overhead_bytes": 0, "activation_bytes_per_token": 3, "measured_on": "cpu",
              "measured_at_tokens": 2048}
    manifest = Manifest.from_dict({"format": "baseline-fp32", "dtype": "fp32", "source_model": "m",
                                   "source_revision": None, "yes_id": 1, "no_id": 2, "max_length": 8192,
                                   "memory": memory})
    assert manifest.memory.activation_bytes_per_token_per_position == 0
    assert manifest.memory.peak_bytes(100) == 10 + 300


@pytest.mark.parametrize("field", ["activation_bytes_per_token", "activation_bytes_per_token_per_position"])
@pytest.mark.parametrize("value", ["x", -1, None, float("nan")])
def test_a_corrupted_memory_field_is_a_manifest_error(tmp_path, field, value):
    memory = {"weight_bytes": 10, "overhead_bytes": 0, "activation_bytes_per_token": 3, field: value}
    (tmp_path / MANIFEST).write_text(json.dumps(
        {"format": "onnx-int8", "dtype": "int8", "source_model": "m", "source_revision": None, "yes_id": 1,
         "no_id": 2, "max_length": 8192, "memory": memory}))
    with pytest.raises(ArtifactError, match=f"not a valid manifest: memory.{field} must be a non-negative"):
        read_manifest(tmp_path)
