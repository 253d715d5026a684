import math

import numpy as np
import pytest

from rerank_export.evalsets import EvalGroup, EvalSet
from rerank_export.formats.spec import Thresholds
from rerank_export.parity import compare, ndcg

EVALSET = EvalSet("t", (EvalGroup("a", "q1", ("d1", "d2", "d3"), (2.0, 0.0, 1.0)),
                        EvalGroup("b", "q2", ("d4", "d5", "d6"), None)))
REF = [0.9, 0.1, 0.5, 0.2, 0.3, 0.8]


def _dcg(gains):
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_ndcg_matches_the_textbook_formula():
    gains = np.array([0.0, 2.0, 1.0])
    assert ndcg(gains, gains) == pytest.approx(_dcg([0, 2, 1]) / _dcg([2, 1, 0]))
    assert ndcg(np.zeros(3), np.zeros(3)) == 1.0


def test_identical_scores_pass_everything():
    report = compare(REF, REF, EVALSET, Thresholds())
    assert report.passed and report.breaches == []
    assert report.metrics["max_abs_dp"] == 0 and report.metrics["spearman_worst"] == pytest.approx(1.0)
    assert report.metrics["label_ndcg10_reference"] == report.metrics["label_ndcg10_artifact"] == 1.0


def test_a_flipped_ranking_breaches_every_ranking_metric():
    cand = [1 - x for x in REF]
    report = compare(REF, cand, EVALSET, Thresholds())
    breached = {b.split()[0] for b in report.breaches}
    assert not report.passed
    assert {"max_abs_dp", "mean_abs_dp", "spearman_mean", "spearman_worst", "kendall_mean", "top1_mean",
            "ndcg10_vs_reference_mean"} <= breached


def test_nan_is_a_failure_never_clamped():
    cand = list(REF)
    cand[2] = float("nan")
    report = compare(REF, cand, EVALSET, Thresholds(max_abs_dp=1.0, mean_abs_dp=1.0))
    assert not report.passed and report.metrics["non_finite"] == 1
    assert report.breaches[0].startswith("non_finite")


def test_small_drift_within_limits_passes_and_is_measured():
    cand = [x + 0.004 for x in REF]
    report = compare(REF, cand, EVALSET, Thresholds(max_abs_dp=0.01, mean_abs_dp=0.01))
    assert report.passed and report.metrics["max_abs_dp"] == pytest.approx(0.004)


def test_a_constant_candidate_fails_the_ranking_metrics():
    """No correlation to compute is not a pass: a scorer that ranks nothing gets 0 on every varying query."""
    report = compare(REF, [0.5] * len(REF), EVALSET, Thresholds(max_abs_dp=1.0, mean_abs_dp=1.0))
    assert report.metrics["spearman_mean"] == report.metrics["kendall_mean"] == 0.0
    breached = {b.split()[0] for b in report.breaches}
    assert {"spearman_mean", "spearman_worst", "kendall_mean"} <= breached and not report.passed


def test_ties_are_broken_against_the_candidate():
    """The group lists its best document first; tying it with a worse one must not earn top-1."""
    evalset = EvalSet("t", (EvalGroup("a", "q", ("best", "worse"), None),))
    report = compare([0.9, 0.2], [0.7, 0.7], evalset, Thresholds(max_abs_dp=1.0, mean_abs_dp=1.0))
    assert report.metrics["top1_mean"] == 0.0
    assert report.metrics["ndcg10_vs_reference_mean"] < 1.0
    untied = compare([0.9, 0.2], [0.7, 0.6], evalset, Thresholds(max_abs_dp=1.0, mean_abs_dp=1.0))
    assert untied.metrics["top1_mean"] == 1.0 and untied.passed


def test_no_varying_reference_means_nothing_to_correlate():
    evalset = EvalSet("t", (EvalGroup("a", "q", ("d1", "d2"), None),))
    report = compare([0.4, 0.4], [0.4, 0.4], evalset, Thresholds())
    assert report.metrics["ranked_queries"] == 0 and report.passed


# --- batch invariance -----------------------------------------------------------------------------

class RowBackend:
    """Each row's logit from its own real tokens only (what every format must do)."""

    name = "rows"

    def logits(self, ids, mask):
        return ((ids * mask).sum(axis=1) % 97 / 97.0 - 0.5).astype(np.float32)


class BatchScaledBackend(RowBackend):
    """Like onnx-int8's dynamic quantization: one scale over the whole padded batch moves every row."""

    def logits(self, ids, mask):
        scale = 1.0 + 0.05 * (ids.shape[1] / 100)  # wider batches (a long batch-mate) shift the scores
        return super().logits(ids, mask) * scale


def _source_stub(qwen_tokenizer):
    from types import SimpleNamespace

    from rerank_export.contract import Contract

    return SimpleNamespace(contract=Contract(qwen_tokenizer))


def test_mixed_batches_mix_short_and_long_within_the_budget():
    from rerank_export.parity import MIXED_BATCH, mixed_batches

    lengths = [10, 900, 20, 30, 800, 40, 50, 700, 60, 5000, 70]
    batches = mixed_batches(lengths, budget=4096)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= MIXED_BATCH and len(b) * max(lengths[i] for i in b) <= 4096 for b in batches if len(b) > 1)
    assert any(min(lengths[i] for i in b) <= 20 and max(lengths[i] for i in b) >= 800 for b in batches)


@pytest.mark.needs_fixtures
def test_batch_invariance_is_zero_for_a_row_wise_backend_and_fails_a_batch_dependent_one(qwen_tokenizer):
    from rerank_export.parity import batch_invariance, score_set

    source = _source_stub(qwen_tokenizer)
    evalset = EvalSet("t", (EvalGroup("a", "short query", ("a", "b " * 300, "c d e")),
                            EvalGroup("b", "another", ("x " * 50, "y"))))
    for backend, expect_zero in [(RowBackend(), True), (BatchScaledBackend(), False)]:
        batched = score_set(backend, source, evalset)
        dp = batch_invariance(backend, source, evalset, batched)
        assert (dp == 0.0) == expect_zero, (type(backend).__name__, dp)
    report = compare(REF, REF, EVALSET, Thresholds(max_batch_dp=1e-5), batch_dp=dp)
    assert not report.passed and report.breaches[0].startswith("batch_max_dp")


def test_batch_invariance_is_optional_only_when_not_measured():
    assert compare(REF, REF, EVALSET, Thresholds(max_batch_dp=1e-5)).passed  # through an engine: not measured
    assert not compare(REF, REF, EVALSET, Thresholds(max_batch_dp=1e-5), batch_dp=math.nan).passed


@pytest.mark.needs_fixtures
def test_the_gate_reports_batch_invariance_with_its_limit(verified_artifacts):
    import json

    report = json.loads((verified_artifacts / "baseline-fp32" / "parity.json").read_text())
    assert report["thresholds"]["max_batch_dp"] == 1e-5
    assert 0 <= report["metrics"]["batch_max_dp"] <= 1e-5, report["metrics"]["batch_max_dp"]
    assert "batch_max_dp" in (verified_artifacts / "baseline-fp32" / "parity.md").read_text()


def test_a_thresholds_file_reads_into_formats_limits_with_its_overrides(tmp_path):
    from dataclasses import replace

    from rerank_export.formats import FORMATS
    from rerank_export.parity import load_thresholds

    path = tmp_path / "t.toml"
    path.write_text("[onnx-int8]\nmax_abs_dp = 0.05\nmin_top1 = 1\n")
    limits = load_thresholds(path)["onnx-int8"]
    assert limits == replace(FORMATS["onnx-int8"].thresholds, max_abs_dp=0.05, min_top1=1.0)
    assert isinstance(limits.min_top1, float)  # an integer limit is a number like any other
    assert FORMATS["onnx-int8"].thresholds.override(limits) is limits  # parsed once: passes through the gate


@pytest.mark.parametrize("values, message", [
    ({"max_abs_dp": 1.5}, "x: 'max_abs_dp' must be a finite number from 0 to 1, not 1.5"),
    ({"min_spearman_worst": -2}, "'min_spearman_worst' must be a finite number from -1 to 1, not -2"),
    ({"max_batch_dp": True}, "'max_batch_dp' must be a finite number from 0 to 1, not True"),
    ({"min_top1": 10**400}, "'min_top1' must be a finite number from 0 to 1, not 1000000"),
    ({"max_dp": 0.1}, "x: unknown threshold 'max_dp' (known: max_abs_dp, max_batch_dp,"),
    ([0.1], "x: expected a table, not [0.1]"),
])
def test_every_threshold_is_checked_against_its_range(values, message):
    from rerank_export.errors import UsageError

    with pytest.raises(UsageError) as exc:
        Thresholds().override(values, "x")
    assert message in str(exc.value)
