"""runtime.load() over real tiny artifacts verified by the real parity gate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import rerank_export
from rerank_export.cli import main
from rerank_export.errors import ArtifactError, NoArtifactFits, UsageError
from rerank_export.evalsets import builtin_eval_set
from rerank_export.host import device_facts
from rerank_export.manifest import read_manifest
from rerank_export.runtime import Reranker
from rerank_export.scoring import OutOfMemory
from rerank_export.select import USABLE_FRACTION, token_budget

pytestmark = pytest.mark.needs_fixtures

SAME_ARTIFACT_TOL = 1e-5  # same weights, same contract; only batch composition (padding) may differ
GiB = 2**30


@pytest.fixture(scope="module")
def verified(tmp_path_factory, baseline_artifacts, source):
    """fp32 checked by the parity gate (pass); bf16 left unchecked."""
    from rerank_export.parity import check_artifacts

    root = tmp_path_factory.mktemp("verified") / "artifacts"
    shutil.copytree(baseline_artifacts, root)
    evalset = builtin_eval_set(long_document=False)  # 8k-token truncation is slow here; tested below
    reports = check_artifacts(root, source, [evalset], names=["baseline-fp32"])
    assert reports[0].passed, reports[0].breaches
    return root, evalset, reports[0]


@pytest.mark.parametrize("prefix_reuse", [True, False])
def test_runtime_scores_equal_the_parity_gates(verified, prefix_reuse):
    root, evalset, report = verified
    reranker = rerank_export.load(root, device="cpu", prefix_reuse=prefix_reuse)
    assert reranker.format == "baseline-fp32"
    ours = []
    for group in evalset.groups:
        ours += reranker.score([(group.query, d) for d in group.documents], group.instruction)
    gate = np.array(report.scores[evalset.name])
    assert np.max(np.abs(np.array(ours) - gate)) < SAME_ARTIFACT_TOL


def test_rerank_sorts_cuts_and_reports_truncation(verified):
    root, _, _ = verified
    reranker = rerank_export.load(root, device="cpu", max_length=128)
    docs = ["Paris is the capital of France.", "Bananas are yellow.", "word " * 500, "Paris is the capital of France."]
    ranking = reranker.rerank("What is the capital of France?", docs)
    scores = [r.relevance_score for r in ranking.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert sorted(r.index for r in ranking.results) == [0, 1, 2, 3]
    assert all(r.document == docs[r.index] for r in ranking.results)
    assert ranking.truncated == [2] and ranking.total_tokens > 128
    by_index = {r.index: r.relevance_score for r in ranking.results}
    assert by_index[0] == by_index[3]  # identical documents, identical scores
    top = reranker.rerank("What is the capital of France?", docs, top_n=2, return_documents=False)
    assert [r.index for r in top.results] == [r.index for r in ranking.results[:2]]
    assert all(r.document is None for r in top.results)
    with pytest.raises(UsageError, match="top_n"):
        reranker.rerank("q", docs, top_n=0)


def test_corrupted_artifact_is_refused_naming_the_file(verified, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(verified[0], root)
    weights = root / "baseline-fp32" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    # The corrupted artifact is passed over, naming the file; nothing else is verified, so nothing loads.
    with pytest.raises(NoArtifactFits, match="baseline-fp32: unusable.*model.safetensors.*sha256"):
        rerank_export.load(root, device="cpu")
    assert rerank_export.load(root, device="cpu", allow_unverified=True).format == "baseline-bf16"


def test_unverified_artifacts_need_the_flag(verified, tmp_path):
    root = tmp_path / "artifacts"
    root.mkdir()
    shutil.copytree(verified[0] / "baseline-bf16", root / "baseline-bf16")
    with pytest.raises(NoArtifactFits, match="never checked"):
        rerank_export.load(root, device="cpu")
    reranker = rerank_export.load(root, device="cpu", allow_unverified=True)
    assert reranker.decision.unverified and "UNVERIFIED" in reranker.decision.note


def test_nothing_fits_a_tiny_budget(verified):
    with pytest.raises(NoArtifactFits, match="weights alone"):
        rerank_export.load(verified[0], device="cpu", memory_budget="1MiB")


def record_batch_shapes(reranker):
    """Wrap the reranker's backend so every batch's (rows, width) lands in the returned list."""
    shapes = []
    inner = reranker.backend

    class Recording:
        name = "recording"

        def logits(self, ids, mask):
            shapes.append(ids.shape)
            return inner.logits(ids, mask)

    reranker.backend = Recording()
    return shapes


def test_batches_follow_the_memory_derived_token_budget(verified):
    root, _, _ = verified
    manifest = read_manifest(root / "baseline-fp32")
    max_length = 256
    tokens = 600  # room for 600 padded tokens per batch beside the weights
    budget_bytes = int((manifest.memory.weight_bytes + tokens * manifest.memory.bytes_per_token(max_length))
                       / USABLE_FRACTION) + 64
    reranker = rerank_export.load(root, device="cpu", memory_budget=budget_bytes, max_length=max_length,
                                  prefix_reuse=False)
    expected = token_budget(manifest, int(budget_bytes * USABLE_FRACTION), max_length)
    assert reranker.token_budget == expected == tokens
    shapes = record_batch_shapes(reranker)
    reranker.rerank("capital of France?", [f"document number {i} about Paris" for i in range(40)])
    assert len(shapes) > 1 and all(b * length <= expected for b, length in shapes)


def test_batches_are_sized_at_their_own_width_when_memory_grows_with_length(verified, tmp_path):
    """A memory model whose per-token cost grows with length (attention keeping length x length scores)
    gives batches of short documents more tokens than the budget at the longest sequence."""
    import dataclasses

    root = tmp_path / "artifacts"
    shutil.copytree(verified[0] / "baseline-fp32", root / "baseline-fp32")
    manifest = read_manifest(root / "baseline-fp32")
    per_token = manifest.memory.activation_bytes_per_token
    manifest.memory = dataclasses.replace(manifest.memory, activation_bytes_per_token_per_position=per_token / 8)
    manifest.write(root / "baseline-fp32")
    max_length = 256
    usable = int(manifest.memory.weight_bytes + 600 * manifest.memory.bytes_per_token(max_length))
    reranker = rerank_export.load(root, device="cpu", memory_budget=int(usable / USABLE_FRACTION) + 64,
                                  max_length=max_length, prefix_reuse=False, allow_unverified=True)
    assert reranker.token_budget == token_budget(manifest, reranker.decision.device.usable_bytes, max_length)
    shapes = record_batch_shapes(reranker)
    reranker.rerank("capital of France?", [f"Paris {i}" for i in range(200)])
    usable = reranker.decision.device.usable_bytes
    assert all(b * length <= token_budget(manifest, usable, length) for b, length in shapes)
    assert max(b * length for b, length in shapes) > reranker.token_budget


def test_out_of_memory_halves_and_never_crashes(verified):
    reranker = rerank_export.load(verified[0], device="cpu", prefix_reuse=False)
    docs = [f"passage {i} on the Seine" for i in range(9)]
    expected = reranker.score([("q?", d) for d in docs])
    inner, seen = reranker.backend, []

    class SmallDevice:
        name = "small"

        def logits(self, ids, mask):
            seen.append(len(ids))
            if len(ids) > 2:
                raise OutOfMemory("CUDA out of memory (simulated)")
            return inner.logits(ids, mask)

    reranker.backend = SmallDevice()
    got = reranker.score([("q?", d) for d in docs])
    assert max(seen) > 2 and np.allclose(got, expected, atol=SAME_ARTIFACT_TOL)


def test_nan_scores_are_an_error_not_a_ranking(verified):
    reranker = rerank_export.load(verified[0], device="cpu")

    class Broken:
        name = "broken"

        def logits(self, ids, mask):
            return np.full(len(ids), np.nan, dtype=np.float32)

    reranker.backend = Broken()
    with pytest.raises(ArtifactError, match="NaN"):
        reranker.rerank("q?", ["a", "b"])


def test_device_facts():
    facts = device_facts("cpu", "4GiB")
    assert (facts.kind, facts.free_bytes, facts.source) == ("cpu", 4 * GiB, "--memory")
    assert device_facts("cpu").free_bytes > 0
    assert device_facts("cuda", 8 * GiB).kind == "cuda"  # planning for a GPU elsewhere needs no GPU here
    with pytest.raises(UsageError, match="'tpu'"):
        device_facts("tpu")


def test_cuda_without_a_gpu_or_budget_is_a_usage_error(monkeypatch):
    monkeypatch.setattr("rerank_export.host.cuda_available", lambda: False)
    with pytest.raises(UsageError, match="no CUDA GPU"):
        device_facts("cuda")


def test_public_api():
    assert rerank_export.load.__module__ == "rerank_export.runtime" and rerank_export.Reranker is Reranker


def test_pick_cli(verified, capsys):
    root = verified[0]
    assert main(["pick", str(root), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "baseline-fp32" in out and "baseline-bf16" in out and "never checked" in out
    assert "choice: baseline-fp32" in out
    assert main(["pick", str(root), "--device", "cpu", "--memory", "10MiB"]) == 1
    assert "choice: none" in capsys.readouterr().out
    assert main(["pick", str(root), "--memory", "lots"]) == 2
    assert "'lots' is not a size" in capsys.readouterr().err
