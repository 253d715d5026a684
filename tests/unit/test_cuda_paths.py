"""The runtime's CUDA-only branches, as far as a CPU can run them: the memory cap a --memory plan puts on
the allocator, the CUDA context taken off a card's budget, OOM translation, AWQ's GPU compute dtype, the
GPU search's device moves, and the refusals where no GPU is visible (benchmarks/gpu_check.py runs the rest
on a real card)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rerank_export import host
from rerank_export.errors import UsageError
from rerank_export.formats import FORMATS
from rerank_export.formats.awq import check_search_device, compute_dtype
from rerank_export.formats.baseline import TorchBackend
from rerank_export.scoring import OutOfMemory, score_encoded
from rerank_export.select import DeviceFacts

GiB = 2**30


def test_a_card_budget_leaves_room_for_the_cuda_context(monkeypatch):
    monkeypatch.setattr(host, "cuda_available", lambda: False)  # planning for a GPU elsewhere
    facts = host.device_facts("cuda", "4GiB")
    assert facts.total_bytes == 4 * GiB and facts.free_bytes == 4 * GiB - host.CUDA_CONTEXT_BYTES
    assert "CUDA context" in facts.source
    assert host.device_facts("cpu", "4GiB").free_bytes == 4 * GiB  # a CPU budget is all usable


def test_a_memory_plan_caps_the_allocator_on_a_bigger_card(monkeypatch):
    fractions = []
    monkeypatch.setattr(host, "cuda_available", lambda: True)
    monkeypatch.setattr(host, "gpu_memory", lambda: (70 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, *a: fractions.append(f))
    planned = DeviceFacts("cuda", 4 * GiB - host.CUDA_CONTEXT_BYTES, 4 * GiB, "--memory, less the CUDA context")
    assert host.cap_cuda_memory(planned) == pytest.approx(planned.free_bytes / (80 * GiB))
    assert fractions == [pytest.approx(planned.free_bytes / (80 * GiB))]
    # The driver's own numbers, a CPU, or a budget above the card: nothing to cap.
    assert host.cap_cuda_memory(DeviceFacts("cuda", 70 * GiB, 80 * GiB, "cuda driver")) is None
    assert host.cap_cuda_memory(DeviceFacts("cpu", GiB, GiB, "--memory")) is None
    assert host.cap_cuda_memory(DeviceFacts("cuda", 100 * GiB, 100 * GiB, "--memory")) == 1.0
    assert len(fractions) == 1


def test_no_cap_without_a_gpu():
    if host.cuda_available():
        pytest.skip("a GPU is visible")
    assert host.cap_cuda_memory(DeviceFacts("cuda", GiB, GiB, "--memory")) is None


class _OomAbove(torch.nn.Module):
    """A sequence classifier stand-in that raises the real torch.OutOfMemoryError above `limit` tokens."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, input_ids, attention_mask, use_cache=False):
        if input_ids.numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return type("Out", (), {"logits": (input_ids.float().sum(dim=1, keepdim=True) * self.weight)})()


def test_a_cuda_oom_halves_the_batch_and_scores_stay_the_same():
    from rerank_export.contract import Encoded

    seqs = [Encoded(list(range(1, 10 + i)), False) for i in range(8)]
    backend = TorchBackend(_OomAbove(limit=40))
    with pytest.raises(OutOfMemory, match="out of memory"):
        backend.logits(np.ones((8, 16), dtype=np.int64), np.ones((8, 16), dtype=np.int64))
    scored = score_encoded(backend, seqs, pad_id=0, token_budget=10_000)
    alone = [score_encoded(backend, [s], pad_id=0).scores[0] for s in seqs]
    assert scored.retries > 0 and scored.scores == alone


def test_awq_computes_in_fp16_on_a_gpu_and_fp32_on_a_cpu():
    assert compute_dtype("cuda") is torch.float16 and compute_dtype("cuda:1") is torch.float16
    assert compute_dtype("cpu") is torch.float32


def test_gpu_search_refused_without_a_gpu():
    if host.cuda_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(UsageError, match="no CUDA GPU"):
        check_search_device("cuda")
    check_search_device("cpu")


def test_the_search_moves_batches_to_its_device():
    from rerank_export.awq.search import Batch, to_device

    batch = Batch(torch.ones(1, 2, 3), {"position_embeddings": (torch.ones(2), torch.ones(2)), "n": 1},
                  torch.ones(1, 2, dtype=torch.bool))
    [moved] = to_device([batch], "meta")
    assert moved.hidden.device.type == moved.mask.device.type == "meta"
    assert all(t.device.type == "meta" for t in moved.kwargs["position_embeddings"]) and moved.kwargs["n"] == 1


def test_registry_devices_name_a_runner_per_device():
    # The fp32, int8 and int4 graphs use CPU-only kernels (GroupQueryAttention in fp32,
    # DynamicQuantizeMatMul), the fp16 graph is for CUDA; PyTorch formats run on either.
    for spec in FORMATS.values():
        assert set(spec.devices) <= {"cpu", "cuda"} and spec.devices
        runners = {"torch"} if spec.backend == "torch" else {"CPUExecutionProvider", "CUDAExecutionProvider"}
        assert set(spec.devices.values()) <= runners, spec.name
        assert ("cuda" in spec.devices) == (spec.gpu_speed > 0), spec.name
    assert dict(FORMATS["onnx-fp16"].devices) == {"cuda": "CUDAExecutionProvider"}
    assert all(dict(FORMATS[n].devices) == {"cpu": "CPUExecutionProvider"}
               for n in ("onnx-fp32", "onnx-int8", "onnx-int4"))


def test_parity_on_cuda_refused_without_a_gpu(verified_artifacts, capsys):
    from rerank_export.cli import main

    if host.cuda_available():
        pytest.skip("a GPU is visible")
    assert main(["parity", str(verified_artifacts), "--device", "cuda"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
