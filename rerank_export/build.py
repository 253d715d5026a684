"""`build`: a recipe's export -> measure -> parity -> select, ending in one summary table (SUMMARY.md)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError, UsageError
from .evalsets import load_eval_set
from .export import export_formats
from .host import device_facts
from .manifest import Manifest, read_manifest, verify_files, write_atomic
from .parity import check_artifacts
from .plan import traits_from_formats
from .recipe import ArtifactSpec, Recipe, TargetSpec
from .reference import SourceModel
from .select import Decision, choose_artifact

log = logging.getLogger(__name__)

SUMMARY = "SUMMARY.md"
# The first line of every SUMMARY.md build writes: how the next build knows the file is its own to replace.
SUMMARY_MARKER = "<!-- written by rerank-export build: replaced by the next build -->"


@dataclass
class BuildResult:
    built: list[str]
    skipped: list[str]
    manifests: dict[str, Manifest]
    targets: list[tuple[TargetSpec, Decision]]
    summary: str

    @property
    def passed(self) -> bool:
        return all(m.verified for m in self.manifests.values())


def recipe_stamp(recipe: Recipe, artifact: ArtifactSpec) -> dict[str, Any]:
    """What an artifact was built from; equal stamps mean it need not be rebuilt."""
    return {"recipe": recipe.name, "model": recipe.source.model, "revision": recipe.source.revision,
            "format": artifact.format, "options": dict(artifact.options)}


def build(recipe: Recipe, out: Path, force: bool = False, progress: bool = True) -> BuildResult:
    """export -> measure -> parity -> select -> summary, for what is missing or stale.

    Manifests are read once: the current ones here, the new ones from the export stage (which measures
    each artifact before renaming it into place); parity records its verdicts in those same objects.
    """
    check_summary(out / SUMMARY)  # before any work: the summary is written last
    _ensure_tiny_source(recipe)
    manifests = {} if force else _current(recipe, out)
    todo = [a for a in recipe.artifacts if a.format not in manifests]
    skipped = [a.format for a in recipe.artifacts if a.format in manifests]
    for name in skipped:
        log.info("%s is up to date (same recipe and source); --force rebuilds it", name)
    unchecked = [a.format for a in recipe.artifacts if a in todo or manifests[a.format].parity is None]
    source = SourceModel(recipe.source.model, recipe.source.revision) if unchecked else None
    if todo:
        manifests.update(_export(recipe, out, todo, source))
    if unchecked:
        _parity(recipe, out, source, unchecked, manifests, progress)
    manifests = {a.format: manifests[a.format] for a in recipe.artifacts}  # recipe order
    decisions = [(t, _select(out, manifests, t)) for t in recipe.targets]
    summary = render_summary(recipe, manifests, decisions)
    check_summary(out / SUMMARY)
    write_atomic(out / SUMMARY, f"{SUMMARY_MARKER}\n{summary}")
    return BuildResult([a.format for a in todo], skipped, manifests, decisions, summary)


def check_summary(path: Path) -> None:
    """Refuse to overwrite a SUMMARY.md that build did not write (its first line is not our marker)."""
    if not os.path.lexists(path):
        return
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError as exc:
        raise UsageError(f"cannot read '{path}': {exc.strerror or exc}") from exc
    if head.split("\n", 1)[0] != SUMMARY_MARKER and not _legacy_summary(head):
        raise UsageError(f"'{path}' was not written by rerank-export build, which never overwrites it: move it "
                         "away or choose another --out")


def _legacy_summary(head: str) -> bool:
    """A summary from before the marker: our heading, then our table's header."""
    lines = head.split("\n")
    return lines[0].startswith("# ") and lines[0].endswith(": build summary") \
        and "| artifact | bytes | vs baseline |" in head


def _current(recipe: Recipe, out: Path) -> dict[str, Manifest]:
    """Artifacts under `out` that are complete and were built from the same recipe entry and source."""
    current = {}
    for artifact in recipe.artifacts:
        folder = out / artifact.format
        try:
            manifest = read_manifest(folder)
            verify_files(folder, manifest)
        except ArtifactError:
            continue
        if manifest.recipe == recipe_stamp(recipe, artifact):
            current[artifact.format] = manifest
    return current


def _export(recipe: Recipe, out: Path, todo: list[ArtifactSpec], source: SourceModel) -> dict[str, Manifest]:
    """The export stage (with its measurement), then each new manifest stamped with its recipe entry."""
    # The options the recipe reader parsed (and checked) already: export_formats passes instances through.
    manifests = export_formats(recipe.source.model, recipe.source.revision, out, [a.format for a in todo],
                               {a.format: a.parsed for a in todo}, source=source)
    for artifact, manifest in zip(todo, manifests):
        manifest.recipe = recipe_stamp(recipe, artifact)
        manifest.write(out / artifact.format)
    return {m.format: m for m in manifests}


def _parity(recipe: Recipe, out: Path, source: SourceModel, names: list[str], manifests: dict[str, Manifest],
            progress: bool) -> None:
    eval_sets = [load_eval_set(_resolve(e, recipe)).limit(recipe.parity.max_queries) for e in recipe.parity.eval]
    check_artifacts(out, source, eval_sets, recipe.parity.thresholds, names, progress=progress, manifests=manifests)


def _ensure_tiny_source(recipe: Recipe) -> None:
    model = Path(recipe.source.model)
    if recipe.source.tiny_seed is not None and not (model / "config.json").is_file():
        from .tiny import build_tiny

        log.info("building the embedded tiny model into %s", model)
        build_tiny(model, seed=recipe.source.tiny_seed)


def _resolve(eval_name: str, recipe: Recipe) -> str:
    """Eval paths in a recipe are relative to the recipe file; 'builtin' stays a name."""
    path = Path(eval_name)
    if eval_name == "builtin" or path.is_absolute() or not recipe.path:
        return eval_name
    return str(Path(recipe.path).parent / path)


def _select(out: Path, manifests: dict[str, Manifest], target: TargetSpec) -> Decision:
    """The selection stage for one deployment target, over the recipe's artifacts."""
    artifacts = [(str(out / name), m) for name, m in manifests.items()]
    return choose_artifact(artifacts, device_facts(target.device, target.memory), target.max_length,
                           traits_from_formats())


def render_summary(recipe: Recipe, manifests: dict[str, Manifest], decisions: list[tuple[TargetSpec, Decision]]) -> str:
    """Markdown: every artifact's size, ratio to the baseline, parity; then each target's pick and why."""
    base = _baseline_bytes(manifests)
    lines = [f"# {recipe.name}: build summary", "", f"Source: `{recipe.source.model}`"
             + (f" @ `{recipe.source.revision}`" if recipe.source.revision else ""), "",
             "| artifact | bytes | vs baseline | parity | max abs dp | spearman mean | top-1 | label NDCG@10 |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for name, m in manifests.items():
        size = sum(f["bytes"] for f in m.files.values())
        ratio = f"{size / base:.2f}x" if base else "-"
        met = (m.parity or {}).get("metrics", {})
        verdict = (m.parity or {}).get("verdict", "unchecked").upper()
        lines.append(f"| {name} | {size:,} | {ratio} | {verdict} | {_f(met.get('max_abs_dp'))} | "
                     f"{_f(met.get('spearman_mean'))} | {_f(met.get('top1_mean'))} | "
                     f"{_f(met.get('label_ndcg10_artifact'))} |")
    lines += ["", "| target | device | memory | max length | picks | why |", "|---|---|---|---:|---|---|"]
    for target, decision in decisions:
        chosen = decision.chosen
        pick = Path(chosen.folder).name if chosen else "nothing fits"
        why = chosen.reason if chosen else "; ".join(f"{Path(c.folder).name}: {c.reason}" for c in decision.candidates)
        lines.append(f"| {target.name} | {target.device} | {target.memory} | {target.max_length} | {pick} | {why} |")
    failed = [n for n, m in manifests.items() if not m.verified]
    lines += ["", f"Parity: {'all artifacts pass' if not failed else 'FAILED: ' + ', '.join(failed)}", ""]
    return "\n".join(lines)


def _baseline_bytes(manifests: dict[str, Manifest]) -> int:
    """Bytes of the size reference (the 16-bit baseline) the ratios are against; 0 when none was built."""
    from .formats import FORMATS

    for name, spec in FORMATS.items():
        if spec.size_reference and name in manifests:
            return sum(f["bytes"] for f in manifests[name].files.values())
    return 0


def _f(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"

