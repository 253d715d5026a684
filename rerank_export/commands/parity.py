"""rerank-export parity: the CI gate. Exit 0 when every artifact passes, 1 when any breaches."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from ..evalsets import BUILTIN, load_eval_set
from ..manifest import load_artifacts
from ..parity import check_artifacts, load_thresholds, render_markdown
from ..reference import SourceModel
from ._common import add_model_arguments, positive_int

NAME = "parity"
HELP = "score eval sets with the reference and every artifact; exit 1 on any breach"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", help="artifacts root (or one artifact folder)")
    add_model_arguments(parser)
    parser.add_argument("--eval", action="append", metavar="FILE",
                        help=f"eval set: '{BUILTIN}', a JSONL file or a NovelEval folder (repeatable; "
                             f"default {BUILTIN})")
    parser.add_argument("--thresholds", default=None, help="JSON/TOML file of per-format threshold overrides")
    parser.add_argument("--only", action="append", metavar="NAME", help="check only these artifact folders")
    parser.add_argument("--max-queries", type=positive_int, default=None,
                        help="use only the first N queries of each eval set (quick checks)")
    parser.add_argument("--replace-verdict", action="store_true",
                        help="record this check's verdict even when the recorded one came from more pairs "
                             "(by default a smaller eval set never replaces it)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the artifacts run (default cpu); with cuda, formats that run on a GPU "
                             "only (the reference stays fp32 on the CPU)")
    parser.add_argument("--engine", choices=["builtin", "vllm"], default="builtin",
                        help="score with the built-in runtime (default) or through a vLLM server per artifact "
                             "(the artifacts vLLM loads; reports parity-vllm.*, the runtime's verdict stays)")
    parser.add_argument("--vllm-python", default=None, metavar="PYTHON",
                        help="with --engine vllm: the interpreter that has vLLM (default: "
                             "$RERANK_EXPORT_VLLM_PYTHON, else this one; see scripts/vllm-venv.sh)")


def run(args: argparse.Namespace) -> int:
    if args.replace_verdict and args.engine != "builtin":
        raise UsageError("--replace-verdict applies to the built-in runtime's verdict; an engine's check never "
                         "replaces it")
    eval_sets = [load_eval_set(e).limit(args.max_queries) for e in (args.eval or [BUILTIN])]
    thresholds = load_thresholds(args.thresholds)
    names = artifact_names(Path(args.artifacts), args.only)
    engine = _engine(args)
    names = _on_device(Path(args.artifacts), names, args.device, engine)
    if engine is not None:
        names = _vllm_loadable(Path(args.artifacts), names)
    source = SourceModel(args.model, args.revision)
    reports = check_artifacts(Path(args.artifacts), source, eval_sets, thresholds, names,
                              progress=not args.quiet, engine=engine, device=args.device,
                              replace_verdict=args.replace_verdict)
    print(render_markdown(reports), end="")
    failed = [r.name for r in reports if not r.passed]
    if failed:
        print(f"rerank-export: parity FAILED for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def artifact_names(root: Path, only: list[str] | None) -> list[str]:
    """The artifacts to check, known before the model loads: readable ones (a broken manifest is
    skipped with a warning), narrowed to --only, each of which must name one of them."""
    names = [folder.name for folder, _ in load_artifacts(root)]
    missing = [n for n in only or [] if n not in names]
    if missing:
        raise UsageError(f"--only {missing[0]}: no artifact folder of that name under '{root}' "
                         f"(found: {', '.join(names)})")
    return [n for n in names if only is None or n in only]


def _on_device(root: Path, names: list[str], device: str, engine: object | None) -> list[str]:
    """The artifacts that run on `device` (the registry's devices); cuda needs a visible GPU."""
    if device == "cpu":
        return names
    from ..formats import FORMATS
    from ..host import cuda_available

    if engine is not None:
        raise UsageError("--device cuda applies to the built-in runtime; vLLM picks its own device")
    if not cuda_available():
        raise UsageError("--device cuda asked for but no CUDA GPU is visible; run parity on the CPU (the default)")
    formats = {folder.name: m.format for folder, m in load_artifacts(root)}
    kept = [n for n in names if device in getattr(FORMATS.get(formats.get(n, "")), "devices", {})]
    for name in sorted(set(names) - set(kept)):
        print(f"rerank-export: skipping {name}: its format does not run on {device}", file=sys.stderr)
    if not kept:
        raise UsageError(f"none of the artifacts under '{root}' runs on {device}")
    return kept


def _engine(args: argparse.Namespace) -> object | None:
    """The vLLM engine, checked to be installed before any model loads; None for the built-in runtime."""
    if args.engine == "builtin":
        if args.vllm_python:
            raise UsageError("--vllm-python applies to --engine vllm only")
        return None
    from ..vllm.engine import VllmEngine

    engine = VllmEngine(args.vllm_python)
    engine.check()
    return engine


def _vllm_loadable(root: Path, names: list[str]) -> list[str]:
    """The named artifacts vLLM loads (baseline, AWQ); the others are named and skipped."""
    from ..vllm.engine import vllm_loadable

    folders = {folder.name: folder for folder, _ in load_artifacts(root)}
    keep = [n for n in names if vllm_loadable(folders[n])]
    skipped = [n for n in names if n not in keep]
    if skipped:
        print(f"rerank-export: vLLM does not load {', '.join(skipped)} (ONNX): not checked", file=sys.stderr)
    if not keep:
        raise UsageError(f"no artifact under '{root}' that vLLM loads (baseline or AWQ folders)")
    return keep
