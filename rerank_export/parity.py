"""The parity gate: score eval sets with the reference and with each artifact, compare, record a verdict.

The reference comes from the original causal LM's last-position yes/no logits (reference.py), computed
independently of any artifact. Every breached metric of every artifact is collected before the verdict.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .card import write_card
from .contract import pad_left, prompt_text
from .errors import ArtifactError, RerankExportError, UsageError
from .evalsets import EvalSet
from .formats import get_format
from .formats.spec import Thresholds
from .host import cpu_facts, describe_cpu, engine_facts, gpu_name
from .manifest import Manifest, find_artifacts, read_manifest, verify_files
from .reference import ReferenceBackend, SourceModel
from .scoring import DEFAULT_TOKEN_BUDGET, Backend, score_encoded, sigmoid

log = logging.getLogger(__name__)

NDCG_K = 10


@dataclass
class ParityReport:
    name: str
    passed: bool
    metrics: dict[str, Any]
    breaches: list[str]
    thresholds: dict[str, float]
    scores: dict[str, list[float]] = field(default_factory=dict)  # eval set -> artifact scores
    reference: dict[str, list[float]] = field(default_factory=dict)
    # Where the candidate's scores were computed: {"device", "engine", "cpu"}. Quantized kernels round
    # differently by instruction set, so a metric means little without the CPU it came from.
    ran_on: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"verdict": "pass" if self.passed else "fail", "metrics": self.metrics,
                "breaches": self.breaches, "thresholds": self.thresholds, "ran_on": self.ran_on}


def score_set(backend: Backend, source: SourceModel, evalset: EvalSet, progress: bool = False) -> list[float]:
    """Scores for every (query, document) of the set in order, batched across queries."""
    encoded = [source.contract.encode(g.query, d, g.instruction) for g in evalset.groups for d in g.documents]
    return score_encoded(backend, encoded, source.contract.pad_id, progress=progress).scores


# Sequences per batch in the batch-invariance check's mixed batches (each mixes short and long ones).
MIXED_BATCH = 8


def batch_invariance(backend: Backend, source: SourceModel, evalset: EvalSet, batched: Sequence[float]) -> float:
    """Largest |dp| between a pair scored alone and the same pair inside batches: the gate's own batches
    (`batched`: length-sorted, as the runtime makes them) and batches that put the set's shortest and
    longest sequences together. A score must not depend on what else is in its request or batch."""
    contract = source.contract
    seqs = [contract.encode(g.query, d, g.instruction).input_ids for g in evalset.groups for d in g.documents]
    alone = np.concatenate([_probs(backend, [s], contract.pad_id) for s in seqs])
    mixed = np.empty(len(seqs))
    for batch in mixed_batches([len(s) for s in seqs]):
        mixed[batch] = _probs(backend, [seqs[i] for i in batch], contract.pad_id)
    return float(max(np.max(np.abs(alone - mixed)), np.max(np.abs(alone - np.asarray(batched)))))


def mixed_batches(lengths: Sequence[int], budget: int = DEFAULT_TOKEN_BUDGET) -> list[list[int]]:
    """Indices taken shortest, longest, next shortest, next longest, ... into batches of up to MIXED_BATCH
    whose padded tokens stay within `budget` (as the runtime's would: an 8k-token document in a batch of
    eight would need 8x its attention memory)."""
    by_length = sorted(range(len(lengths)), key=lambda i: lengths[i])
    order = [by_length[i // 2] if i % 2 == 0 else by_length[-1 - i // 2] for i in range(len(lengths))]
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else []
        width = max([lengths[j] for j in current] + [lengths[i]])
        if current and len(current) < MIXED_BATCH and (len(current) + 1) * width <= budget:
            current.append(i)
        else:
            batches.append([i])
    return batches


def _probs(backend: Backend, seqs: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
    ids, mask = pad_left(list(seqs), pad_id)
    return sigmoid(backend.logits(np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.int64)))


def _split(values: Sequence[float], evalset: EvalSet) -> list[np.ndarray]:
    parts, start = [], 0
    for group in evalset.groups:
        parts.append(np.asarray(values[start:start + len(group.documents)], dtype=np.float64))
        start += len(group.documents)
    return parts


def ndcg(gains_in_ranked_order: np.ndarray, ideal_gains: np.ndarray, k: int = NDCG_K) -> float:
    """NDCG@k with linear gains; 1.0 when every gain is zero (nothing to rank)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(np.sum(gains_in_ranked_order[:k] * discounts[: len(gains_in_ranked_order[:k])]))
    ideal = np.sort(ideal_gains)[::-1][:k]
    idcg = float(np.sum(ideal * discounts[: len(ideal)]))
    return 1.0 if idcg == 0 else dcg / idcg


def _ranking(scores: np.ndarray, worst_first: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties broken against the scorer: the lowest `worst_first` value first.

    Eval sets often list the best document first, so breaking ties by position would credit a scorer that
    ties everything (a constant) with the right top-1.
    """
    return np.lexsort((worst_first, -scores))


def _group_metrics(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    order = _ranking(cand, ref)
    out = {"ndcg10_vs_reference": ndcg(ref[order], ref), "top1": float(ref[order[0]] == ref.max())}
    if len(ref) >= 2 and np.ptp(ref) > 0:
        # A candidate that scores every document alike carries no ranking: correlation 0, not "undefined".
        varies = np.ptp(cand) > 0
        out["spearman"] = float(stats.spearmanr(ref, cand).statistic) if varies else 0.0
        out["kendall"] = float(stats.kendalltau(ref, cand).statistic) if varies else 0.0
    return out


def compare(reference: Sequence[float], candidate: Sequence[float], evalset: EvalSet,
            thresholds: Thresholds, name: str = "artifact", batch_dp: float | None = None) -> ParityReport:
    """All parity metrics of `candidate` against `reference` on one eval set, and the breaches.

    `batch_dp` is batch_invariance()'s result; None where it was not measured (scores from an engine).
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    finite = np.isfinite(cand)
    metrics: dict[str, Any] = {"pairs": len(ref), "queries": len(evalset.groups),
                               "non_finite": int((~finite).sum())}
    breaches = [f"non_finite: {metrics['non_finite']} scores are NaN or inf"] if not finite.all() else []
    # NaN compares as a failure everywhere below: it propagates into max/mean and fails each check.
    delta = np.abs(ref - cand)
    metrics["max_abs_dp"] = float(np.max(delta)) if finite.all() else math.nan
    metrics["mean_abs_dp"] = float(np.mean(delta)) if finite.all() else math.nan
    per_group = [_group_metrics(r, c) for r, c in zip(_split(ref, evalset), _split(cand, evalset))] \
        if finite.all() else []
    metrics["ranked_queries"] = sum("spearman" in g for g in per_group)
    for key in ("spearman", "kendall", "ndcg10_vs_reference", "top1"):
        values = [g[key] for g in per_group if key in g]
        metrics[f"{key}_mean"] = float(np.mean(values)) if values else math.nan
        metrics[f"{key}_worst"] = float(np.min(values)) if values else math.nan
    metrics.update(_label_metrics(ref, cand, evalset) if finite.all() else {})
    if batch_dp is not None:
        metrics["batch_max_dp"] = batch_dp
    breaches += _breaches(metrics, thresholds)
    return ParityReport(name, not breaches, metrics, breaches, dict(thresholds.__dict__),
                        {evalset.name: cand.tolist()}, {evalset.name: ref.tolist()})


def _label_metrics(ref: np.ndarray, cand: np.ndarray, evalset: EvalSet) -> dict[str, float]:
    rows = [(g.labels, r, c) for g, r, c in zip(evalset.groups, _split(ref, evalset), _split(cand, evalset))
            if g.labels is not None]
    if not rows:
        return {}
    ref_ndcg = [ndcg(np.asarray(lab)[_ranking(r, np.asarray(lab))], np.asarray(lab)) for lab, r, _ in rows]
    cand_ndcg = [ndcg(np.asarray(lab)[_ranking(c, np.asarray(lab))], np.asarray(lab)) for lab, _, c in rows]
    return {"label_ndcg10_reference": float(np.mean(ref_ndcg)), "label_ndcg10_artifact": float(np.mean(cand_ndcg)),
            "labelled_queries": len(rows)}


# metric -> (threshold field, "max" if the metric must stay below it else "min")
CHECKS = {
    "max_abs_dp": ("max_abs_dp", "max"),
    "mean_abs_dp": ("mean_abs_dp", "max"),
    "spearman_mean": ("min_spearman_mean", "min"),
    "spearman_worst": ("min_spearman_worst", "min"),
    "kendall_mean": ("min_kendall_mean", "min"),
    "top1_mean": ("min_top1", "min"),
    "ndcg10_vs_reference_mean": ("min_ndcg10", "min"),
    "batch_max_dp": ("max_batch_dp", "max"),
}
# Metrics a check may lack: batch invariance is measured on the built-in runtime only, not through an engine.
OPTIONAL_METRICS = {"batch_max_dp"}


def _breaches(metrics: dict[str, Any], thresholds: Thresholds) -> list[str]:
    out = []
    for metric, (field_name, kind) in CHECKS.items():
        limit = getattr(thresholds, field_name)
        value = metrics.get(metric, math.nan)
        if limit is None or (metric in OPTIONAL_METRICS and metric not in metrics):
            continue
        if math.isnan(value):
            if metric.startswith(("spearman", "kendall")) and metrics.get("non_finite", 0) == 0 \
                    and metrics.get("ranked_queries") == 0:
                continue  # no query whose reference scores vary: nothing to correlate
            out.append(f"{metric} is NaN")
        elif (kind == "max" and value > limit) or (kind == "min" and value < limit):
            out.append(f"{metric} {value:.6g} {'>' if kind == 'max' else '<'} {limit:g}")
    return out


def combine(eval_sets: Sequence[EvalSet]) -> EvalSet:
    """One set holding every group of `eval_sets` (metrics are computed over all queries)."""
    if not eval_sets:
        raise UsageError("no eval set given")
    return EvalSet("+".join(e.name for e in eval_sets), tuple(g for e in eval_sets for g in e.groups))


def load_thresholds(path: str | Path | None) -> dict[str, Thresholds]:
    """Per-format limits from JSON or TOML overrides, {"onnx-int8": {"max_abs_dp": 0.05}, ...}: each named
    format's FORMATS limits with its overrides in place, every value checked now, before any scoring."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"thresholds file '{path}' not found")
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(path.read_text())
        else:
            data = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"thresholds file '{path}' is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"thresholds file '{path}' must map format names to {{metric: limit}} tables")
    return {name: _format_limits(name, limits, f"thresholds file '{path}'") for name, limits in data.items()}


def _format_limits(name: str, limits: Any, where: str) -> Thresholds:
    try:
        spec = get_format(name)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return spec.thresholds.override(limits, f"{where}: {name}")


def check_artifacts(root: str | Path, source: SourceModel, eval_sets: Sequence[EvalSet],
                    thresholds: dict[str, dict[str, float]] | None = None,
                    names: Sequence[str] | None = None, progress: bool = False,
                    engine: Any = None, manifests: dict[str, Manifest] | None = None,
                    device: str = "cpu", replace_verdict: bool = False) -> list[ParityReport]:
    """Check every artifact under `root` (or only `names`), write its reports, record its verdict.

    `manifests` ({folder name: Manifest}) are the caller's copies, used instead of reading the folders
    again and updated in place with the verdicts.

    With an `engine` (vllm.engine.VllmEngine) the artifacts are scored through it instead of the built-in
    runtime; its reports are parity-<engine>.*, and the verdict load() trusts stays the runtime's.
    `device` is where the artifacts run ("cuda": each on its GPU runner); the reference stays fp32 on the CPU.
    A verdict recorded from more pairs than `eval_sets` hold is kept unless `replace_verdict`.
    """
    folders = [f for f in find_artifacts(root) if names is None or f.name in names]
    if not folders:
        raise ArtifactError(f"no artifact folders (with manifest.json) under '{root}'")
    evalset = combine(eval_sets)
    log.info("parity: %d artifacts, %d queries, %d pairs", len(folders), len(evalset.groups), evalset.num_pairs)
    reference = score_set(ReferenceBackend(source), source, evalset, progress)
    known = manifests or {}
    return [_check_one(f, known.get(f.name) or read_manifest(f), source, evalset, reference, thresholds or {},
                       progress, engine, device, replace_verdict) for f in folders]


def _check_one(folder: Path, manifest: Manifest, source: SourceModel, evalset: EvalSet, reference: list[float],
               overrides: dict[str, dict[str, float]], progress: bool, engine: Any = None,
               device: str = "cpu", replace_verdict: bool = False) -> ParityReport:
    spec = get_format(manifest.format)
    limits = spec.thresholds.override(overrides.get(spec.name, {}))
    try:
        verify_files(folder, manifest)
        _check_contract(manifest, source)
        if engine is None:
            backend = spec.loader(folder, manifest, device)
            scores = score_set(backend, source, evalset, progress)
            batch_dp = batch_invariance(backend, source, evalset, scores)
        else:
            scores, batch_dp = engine.scores(folder, manifest, source.contract, evalset), None
        plain = plain_check(folder, manifest, evalset, reference, limits) \
            if engine is None and spec.backend == "onnxruntime" else None
    except RerankExportError as exc:
        report = ParityReport(spec.name, False, {}, [f"cannot score: {exc}"], dict(limits.__dict__))
    else:
        report = compare(reference, scores, evalset, limits, spec.name, batch_dp)
        if plain is not None:
            _merge_plain(report, plain)
    report.metrics["eval_sets"] = evalset.name
    report.ran_on = {"device": device, "engine": engine_facts(spec.backend), "cpu": cpu_facts(),
                     **({"gpu": gpu_name()} if device == "cuda" else {})}
    if engine is not None:
        return _record_engine_check(folder, manifest, report, engine)
    _record_verdict(folder, manifest, report, source, evalset, replace_verdict)
    return report


def _record_verdict(folder: Path, manifest: Manifest, report: ParityReport, source: SourceModel,
                    evalset: EvalSet, replace: bool) -> None:
    """Reports, the manifest's verdict (with the eval set's size and digest) and the card. A verdict from
    more pairs is kept unless `replace`: load() trusts it, and a one-pair "pass" proves little."""
    recorded = recorded_pairs(manifest.parity)
    if evalset.num_pairs < recorded and not replace:
        log.warning("%s: kept its recorded verdict (%s on %d pairs); this check's %d pairs are not recorded "
                    "(--replace-verdict records them)", folder.name, manifest.parity.get("verdict"), recorded,
                    evalset.num_pairs)
        return
    write_reports(folder, report)
    manifest.parity = {**report.summary(), "eval_sets": evalset.name.split("+"), "eval": evalset.describe(),
                       "reference": {"model": source.model_id, "revision": source.revision},
                       "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest.write(folder)
    write_card(folder, manifest)


def recorded_pairs(parity: dict[str, Any] | None) -> int:
    """Pairs behind a recorded verdict (its eval record; in older manifests its metrics); 0 without one."""
    for where in ((parity or {}).get("eval"), (parity or {}).get("metrics")):
        pairs = where.get("pairs") if isinstance(where, dict) else None
        if isinstance(pairs, int) and not isinstance(pairs, bool):
            return pairs
    return 0


PLAIN_PATH = "plain onnxruntime"  # how the card's own snippet runs an ONNX artifact (formats/onnx/plain.py)


def plain_check(folder: Path, manifest: Manifest, evalset: EvalSet, reference: Sequence[float],
                limits: Thresholds) -> ParityReport:
    """The artifact scored as its card says: a default onnxruntime session, the folder's tokenizer on the
    rendered prompts, each pair alone (its scores meet every limit against the reference) and in mixed
    batches padded left and right by the tokenizer (batch_max_dp: the largest move from alone)."""
    from .formats.onnx.plain import SIDES, PlainScorer  # onnxruntime: the cpu extra

    try:
        scorer = PlainScorer(folder)
    except Exception as exc:  # tokenizer or onnxruntime refusing the folder as a user's would
        raise ArtifactError(f"{PLAIN_PATH} cannot load {folder}: {exc}") from exc
    seqs = [scorer.encode(prompt_text(g.query, d, g.instruction), manifest.max_length)
            for g in evalset.groups for d in g.documents]
    alone = sigmoid(np.concatenate([scorer.logits([s], SIDES[0]) for s in seqs]))
    moved = 0.0
    for side in SIDES:
        batched = np.empty(len(seqs))
        for batch in mixed_batches([len(s) for s in seqs]):
            batched[batch] = sigmoid(scorer.logits([seqs[i] for i in batch], side))
        moved = max(moved, float(np.max(np.abs(batched - alone))))
    return compare(reference, alone, evalset, limits, PLAIN_PATH, moved)


def _merge_plain(report: ParityReport, plain: ParityReport) -> None:
    """The card path's metrics beside the runtime's, its breaches named by path; batch_max_dp is the larger
    of the two, since a user may score either way."""
    keys = ("max_abs_dp", "mean_abs_dp", "spearman_mean", "top1_mean", "batch_max_dp")
    report.metrics["plain"] = {"path": f"{PLAIN_PATH}, the folder's tokenizer, padded left and right",
                               **{k: plain.metrics[k] for k in keys if k in plain.metrics}}
    report.metrics["batch_max_dp"] = max(report.metrics.get("batch_max_dp", 0.0), plain.metrics["batch_max_dp"])
    report.breaches += [f"{PLAIN_PATH}: {breach}" for breach in plain.breaches]
    report.passed = not report.breaches


def _record_engine_check(folder: Path, manifest: Any, report: ParityReport, engine: Any) -> ParityReport:
    """An engine's check: its own report files and an entry beside the runtime's verdict, not over it."""
    report.ran_on.update(engine.ran_on())
    write_reports(folder, report, f"parity-{engine.name}")
    if manifest.parity:  # an unchecked artifact stays unchecked: the engine's result is in its report only
        parity = dict(manifest.parity)
        parity["engines"] = {**parity.get("engines", {}), engine.name: report.summary()}
        manifest.parity = parity
        manifest.write(folder)
    return report


def _check_contract(manifest: Any, source: SourceModel) -> None:
    ids = (source.contract.yes_id, source.contract.no_id)
    if (manifest.yes_id, manifest.no_id) != ids:
        raise ArtifactError(
            f"artifact was built for yes/no ids {(manifest.yes_id, manifest.no_id)}, the reference uses {ids}: "
            "check --model names the model the artifact was exported from"
        )


def write_reports(folder: Path, report: ParityReport, stem: str = "parity") -> None:
    """parity.json (metrics and every score), parity.md (readable), parity.png (scatter)."""
    (folder / f"{stem}.json").write_text(json.dumps(
        {**report.summary(), "name": report.name, "scores": report.scores, "reference": report.reference},
        indent=1, allow_nan=True))
    (folder / f"{stem}.md").write_text(render_markdown([report]))
    if report.scores:
        _scatter(folder / f"{stem}.png", report)


def _scatter(path: Path, report: ParityReport) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = np.concatenate([np.asarray(v) for v in report.reference.values()])
    cand = np.concatenate([np.asarray(v) for v in report.scores.values()])
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1)
    ax.scatter(ref, np.nan_to_num(cand, nan=-0.05), s=8, alpha=0.7)  # NaNs drawn below 0, still failed
    ax.set(xlabel="reference p(yes)", ylabel=f"{report.name} p(yes)", xlim=(-0.07, 1.02), ylim=(-0.07, 1.02),
           title=f"{report.name}: {'PASS' if report.passed else 'FAIL'} "
                 f"(max |dp| {report.metrics.get('max_abs_dp', math.nan):.2g})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


SUMMARY_METRICS = ["max_abs_dp", "mean_abs_dp", "spearman_mean", "spearman_worst", "kendall_mean",
                   "top1_mean", "ndcg10_vs_reference_mean", "label_ndcg10_reference", "label_ndcg10_artifact",
                   "batch_max_dp"]


def render_markdown(reports: Sequence[ParityReport]) -> str:
    """A table of every artifact's verdict and metrics, then every breach."""
    head = "| artifact | verdict | " + " | ".join(SUMMARY_METRICS) + " |"
    rule = "|" + "---|" * (len(SUMMARY_METRICS) + 2)
    rows = [f"| {r.name} | {'PASS' if r.passed else '**FAIL**'} | "
            + " | ".join(_fmt(r.metrics.get(m)) for m in SUMMARY_METRICS) + " |" for r in reports]
    lines = ["# Parity against the reference", "", head, rule, *rows, ""]
    for r in reports:
        lines += [f"- {r.name}: breached {b}" for b in r.breaches]
    lines += _plain_lines(reports)
    lines += _ran_on_lines(reports)
    return "\n".join(lines) + "\n"


def _plain_lines(reports: Sequence[ParityReport]) -> list[str]:
    """One line per ONNX artifact: its scores as the card runs it (batch_max_dp above includes them)."""
    lines = [f"- {r.name} as its card runs it ({p['path']}): "
             + ", ".join(f"{k} {_fmt(p[k])}" for k in p if k != "path")
             for r in reports if (p := r.metrics.get("plain"))]
    return ["", *lines] if lines else []


def _ran_on_lines(reports: Sequence[ParityReport]) -> list[str]:
    """One line per artifact: device, engine and CPU (quantized scores vary with the CPU's kernels)."""
    lines = []
    for r in reports:
        if r.ran_on:
            engine = r.ran_on["engine"]
            lines.append(f"- {r.name} ran on {r.ran_on['device']} with {engine['name']} {engine['version']}, "
                         f"CPU {describe_cpu(r.ran_on['cpu'])}")
    return ["", *lines] if lines else []


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
