"""Artifact selection over synthetic manifests and device facts (no model, no GPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rerank_export.errors import UsageError
from rerank_export.manifest import Manifest, MemoryModel
from rerank_export.plan import traits_from_formats
from rerank_export.select import (
    GPU_FULL_BATCH_TOKENS,
    MAX_TOKEN_BUDGET,
    USABLE_FRACTION,
    DeviceFacts,
    FormatTraits,
    choose_artifact,
    cpu_supports_bf16,
    gpu_score,
    parse_memory,
    render_decision,
    token_budget,
)

GiB, MiB = 2**30, 2**20
PASS, FAIL = {"verdict": "pass"}, {"verdict": "fail"}

TRAITS = {
    "fp32": FormatTraits(fidelity=100, cpu_speed=20, devices=("cpu", "cuda"), dtype="fp32", backend="torch",
                         gpu_speed=30),
    "bf16": FormatTraits(fidelity=80, cpu_speed=30, devices=("cpu", "cuda"), dtype="bf16", backend="torch",
                         needs_native_bf16=True, gpu_speed=95),
    "fp16": FormatTraits(fidelity=85, cpu_speed=5, devices=("cuda",), dtype="fp16", backend="torch", gpu_speed=100),
    "onnx-int8": FormatTraits(fidelity=40, cpu_speed=90, devices=("cpu",), dtype="int8", backend="onnxruntime"),
    "int4": FormatTraits(fidelity=50, cpu_speed=10, devices=("cuda",), dtype="int4", backend="torch", gpu_speed=60),
}


def manifest(fmt: str, weights: int, per_token: int = 100_000, parity: dict | None = PASS,
             max_length: int = 32768, overhead: int = 0, growth: float = 0.0) -> Manifest:
    memory = MemoryModel(weights, overhead, per_token, activation_bytes_per_token_per_position=growth)
    return Manifest(format=fmt, dtype=TRAITS.get(fmt, TRAITS["fp32"]).dtype, source_model="m", source_revision=None,
                    yes_id=1, no_id=2, max_length=max_length, memory=memory, parity=parity)


def gpu(free: int, total: int | None = None) -> DeviceFacts:
    return DeviceFacts("cuda", free, total or free, "test")


def cpu(free: int, bf16: bool = False) -> DeviceFacts:
    return DeviceFacts("cpu", free, free, "test", bf16)


def choose(arts, device, max_length=8192, **kw):
    return choose_artifact([(f"/a/{m.format}", m) for m in arts], device, max_length, TRAITS, **kw)


def test_weights_that_leave_no_room_are_ruled_out_at_4gib():
    # 4 GiB budget, 8192 tokens: the fp32 weights alone take 3.9 GiB, more than the usable share.
    arts = [manifest("fp32", int(3.9 * GiB)), manifest("int4", int(0.6 * GiB), per_token=120_000)]
    decision = choose(arts, gpu(4 * GiB))
    fp32 = next(c for c in decision.candidates if c.format == "fp32")
    assert not fp32.fits and "weights alone" in fp32.reason
    assert decision.chosen.format == "int4"


def test_fit_needs_room_for_one_full_length_sequence():
    per_token = 100_000
    weights = int(4 * GiB * USABLE_FRACTION) - per_token * 8192 + 1  # one byte short at 8192 tokens
    arts = [manifest("fp32", weights, per_token)]
    assert choose(arts, gpu(4 * GiB)).chosen is None
    assert choose(arts, gpu(4 * GiB), max_length=4096).chosen.format == "fp32"


def test_gpu_prefers_the_fastest_format_with_room_for_full_batches():
    arts = [manifest("bf16", 1 * GiB), manifest("fp32", 2 * GiB), manifest("int4", GiB // 2)]
    # Room for full batches everywhere: 16-bit beats fp32 (twice the bytes, no tensor cores) and int4.
    assert choose(arts, gpu(24 * GiB)).chosen.format == "bf16"
    assert choose(arts + [manifest("fp16", GiB)], gpu(24 * GiB)).chosen.format == "fp16"


def test_gpu_weighs_speed_by_headroom():
    # 100 KB per token: bf16's 1 GiB of weights leaves room for ~4,100 tokens per batch in 1.9 GiB usable,
    # a quarter of GPU_FULL_BATCH_TOKENS (95 x 0.25 = 24); int4's 0.25 GiB leaves ~12,600 (60 x 0.77 = 46).
    arts = [manifest("bf16", 1 * GiB), manifest("int4", GiB // 4)]
    decision = choose(arts, gpu(int(2.1 * GiB)), max_length=2048)
    assert decision.chosen.format == "int4"
    ranks = {c.format: c.rank[0] for c in decision.candidates}
    assert ranks["int4"] > ranks["bf16"] > 0
    assert gpu_score(TRAITS["bf16"], GPU_FULL_BATCH_TOKENS) == 95  # full batches: the full speed
    assert gpu_score(TRAITS["bf16"], GPU_FULL_BATCH_TOKENS // 4) == pytest.approx(95 / 4)
    # With room for full batches the fastest wins again.
    assert choose(arts, gpu(8 * GiB), max_length=2048).chosen.format == "bf16"


def test_gpu_equal_speed_goes_to_fidelity():
    traits = {**TRAITS, "int4": FormatTraits(50, 10, ("cuda",), "int4", "torch", gpu_speed=100)}
    arts = [manifest("fp16", GiB), manifest("int4", GiB // 2)]
    decision = choose_artifact([(f"/a/{m.format}", m) for m in arts], gpu(24 * GiB), 8192, traits)
    assert decision.chosen.format == "fp16"


def test_never_picks_failed_or_unchecked_parity():
    arts = [manifest("fp32", GiB, parity=FAIL), manifest("bf16", GiB, parity=None),
            manifest("int4", GiB, parity=PASS)]
    decision = choose(arts, gpu(24 * GiB))
    assert decision.chosen.format == "int4" and not decision.unverified
    reasons = {c.format: c.reason for c in decision.candidates}
    assert reasons["fp32"] == "parity failed" and "never checked" in reasons["bf16"]


def test_allow_unverified_says_so_in_the_result():
    arts = [manifest("fp32", GiB, parity=None)]
    assert choose(arts, gpu(24 * GiB)).chosen is None
    decision = choose(arts, gpu(24 * GiB), allow_unverified=True)
    assert decision.chosen.format == "fp32" and decision.unverified
    assert "UNVERIFIED" in decision.note and "UNVERIFIED" in render_decision(decision)


def test_allow_unverified_still_prefers_a_verified_artifact():
    arts = [manifest("bf16", GiB, parity=FAIL), manifest("fp32", GiB)]
    assert choose(arts, gpu(24 * GiB), allow_unverified=True).chosen.format == "fp32"


def test_cpu_prefers_fastest_and_skips_gpu_only_formats():
    arts = [manifest("fp32", GiB), manifest("onnx-int8", GiB // 4), manifest("fp16", GiB // 2)]
    decision = choose(arts, cpu(16 * GiB))
    assert decision.chosen.format == "onnx-int8"
    fp16 = next(c for c in decision.candidates if c.format == "fp16")
    assert not fp16.eligible and "cuda only" in fp16.reason


def test_cpu_bf16_torch_only_preferred_with_native_bf16():
    arts = [manifest("fp32", 2 * GiB), manifest("bf16", GiB)]
    assert choose(arts, cpu(16 * GiB, bf16=False)).chosen.format == "fp32"
    assert choose(arts, cpu(16 * GiB, bf16=True)).chosen.format == "bf16"


def test_requested_length_beyond_the_artifact_is_refused():
    decision = choose([manifest("fp32", GiB, max_length=4096)], gpu(24 * GiB), max_length=8192)
    assert decision.chosen is None and "at most 4096" in decision.candidates[0].reason


def test_unknown_format_and_backend_filter():
    arts = [manifest("mystery", GiB), manifest("onnx-int8", GiB)]
    decision = choose(arts, cpu(16 * GiB), backends=("torch",))
    reasons = {c.format: c.reason for c in decision.candidates}
    assert "unknown format 'mystery'" in reasons["mystery"]
    assert "not servable" in reasons["onnx-int8"] and decision.chosen is None


def test_token_budget_arithmetic():
    m = manifest("fp32", GiB, per_token=1000, overhead=MiB)
    usable = GiB + MiB + 1000 * 10_000
    assert token_budget(m, usable, 512) == 10_000
    assert token_budget(m, usable * 100, 512) == MAX_TOKEN_BUDGET
    assert token_budget(m, GiB, 512) == 512  # never below one full sequence (the fit check guards it)
    decision = choose([m], gpu(int(usable / USABLE_FRACTION) + 10), max_length=512)
    assert decision.token_budget == 10_000


@pytest.mark.parametrize("text,expected", [("4GiB", 4 * GiB), ("512MiB", 512 * MiB), ("6GB", 6 * 10**9),
                                           ("1.5g", int(1.5e9)), ("1000", 1000), (" 2 gib ", 2 * GiB)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "4 parsecs", "-1GiB", "0"])
def test_parse_memory_rejects_with_the_bad_value(text):
    with pytest.raises(UsageError, match="is not a size"):
        parse_memory(text)


def test_cpu_bf16_detection_from_cpuinfo():
    assert cpu_supports_bf16("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert cpu_supports_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert cpu_supports_bf16("Features\t: fp asimd bf16 i8mm\n")
    assert not cpu_supports_bf16("flags : fpu avx2 avx512f\nmodel name : bf16 in a name\n")


def test_render_lists_every_candidate_and_the_choice():
    arts = [manifest("fp32", int(3.9 * GiB)), manifest("int4", GiB // 2)]
    text = render_decision(choose(arts, gpu(4 * GiB)))
    assert "fp32" in text and "int4" in text and "choice: int4" in text
    assert "no" in text and "pass" in text and "3.90 GiB" in text


def test_traits_cover_every_format():
    from rerank_export.formats import FORMATS

    assert set(traits_from_formats()) == set(FORMATS)


def test_select_imports_no_torch():
    code = "import sys, rerank_export.select; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_attention_that_grows_with_length_rules_out_long_sequences():
    # The 0.6B ONNX graph's fit (tests/unit/test_memory.py): 271 KiB/token plus 0.32 KiB/token per position.
    growing = manifest("onnx-int8", GiB, per_token=271 * 1024, growth=328.0)
    flat = manifest("onnx-int8", GiB, per_token=271 * 1024)
    device = cpu(12 * GiB)
    for max_length, fits in ((2048, True), (8192, False)):
        [cand] = choose([growing], device, max_length=max_length).candidates
        assert cand.fits is fits, (max_length, cand.reason)
        assert cand.peak_bytes == GiB + int((271 * 1024 + 328.0 * max_length) * max_length)
    assert choose([flat], device).candidates[0].fits  # the flat rule would have said 8192 fits
    # Batches are planned at the longest sequence's per-token cost, so they shrink as it grows.
    assert token_budget(growing, 12 * GiB, 8192) < token_budget(flat, 12 * GiB, 8192)


def test_a_4gib_card_gets_an_artifact_the_gpu_check_runs(monkeypatch):
    """Every format of the registry at the 0.6B's sizes (CPU-measured per-token cost): the 4 GiB choice is one
    benchmarks/gpu_check.py exports, loads and serves on CUDA (16-bit first; never an fp32 or CPU graph)."""
    from rerank_export import host
    from rerank_export.formats import FORMATS

    monkeypatch.setattr(host, "cuda_available", lambda: False)  # planning for a card elsewhere
    sizes = {"fp32": 2.4 * GiB, "fp16": 1.2 * GiB, "bf16": 1.2 * GiB, "int8": 0.9 * GiB, "int4": 0.55 * GiB}
    arts = [(f"/a/{name}", Manifest(format=name, dtype=spec.dtype, source_model="m", source_revision=None, yes_id=1,
                                    no_id=2, max_length=32768, parity=PASS,
                                    memory=MemoryModel(int(sizes[spec.dtype]), 0, 60 * 1024)))
            for name, spec in FORMATS.items()]
    decision = choose_artifact(arts, host.device_facts("cuda", "4GiB"), 8192, traits_from_formats())
    assert decision.chosen.format == "baseline-fp16"  # among baseline-bf16/fp16 and awq-int4: the check's three
    assert not any(c.eligible for c in decision.candidates if c.format in ("onnx-fp32", "onnx-int8", "onnx-int4"))
