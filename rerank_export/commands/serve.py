"""rerank-export serve: the HTTP reranker over the artifact that fits, or the `vllm serve` command for it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import MissingExtra, NoArtifactFits, UsageError
from ..select import Decision, why_nothing
from .pick import add_device_arguments

NAME = "serve"
HELP = "serve the best verified artifact that fits over HTTP (/v1/rerank, /score, a try-it page)"
API_KEY_ENV = "RERANK_EXPORT_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..serve import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DOCUMENTS
    from ._common import positive_int

    parser.add_argument("artifacts", help="artifacts root (or one artifact folder)")
    add_device_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None,
                        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set)")
    parser.add_argument("--served-model-name", default=None, help="model name in responses (default: source model)")
    parser.add_argument("--max-documents", type=positive_int, default=DEFAULT_MAX_DOCUMENTS,
                        help=f"most documents (or pairs) per request (default {DEFAULT_MAX_DOCUMENTS})")
    parser.add_argument("--max-body", default=str(DEFAULT_MAX_BODY_BYTES), metavar="SIZE",
                        help="largest request body, e.g. 8MiB (default 8MiB)")
    parser.add_argument("--no-prefix-reuse", action="store_true",
                        help="run every pair in full instead of reusing the query's KV cache (torch backends)")
    parser.add_argument("--engine", choices=["builtin", "vllm"], default="builtin",
                        help="builtin server (default) or vLLM for GPU serving at scale")
    parser.add_argument("--print-command", action="store_true", help="with --engine vllm: print, do not run")


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if args.engine == "vllm":
        return _run_vllm(args, api_key)
    if args.print_command:
        raise UsageError("--print-command applies to --engine vllm only")
    return _run_builtin(args, api_key)


def _run_builtin(args: argparse.Namespace, api_key: str | None) -> int:
    from ..runtime import load
    from ..select import parse_memory
    from ..serve import Limits, create_app

    limits = Limits(args.max_documents, parse_memory(args.max_body))
    try:
        import uvicorn
    except ImportError:
        raise MissingExtra("uvicorn", "serve") from None
    reranker = load(args.artifacts, args.device, args.memory, args.max_length, args.allow_unverified,
                    prefix_reuse=not args.no_prefix_reuse)
    app = create_app(reranker, args.served_model_name, api_key, limits)
    print(f"serving {reranker.folder} ({reranker.format}) on http://{args.host}:{args.port}/ "
          f"(POST /v1/rerank; try-it page at /)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0


def _vllm_decision(args: argparse.Namespace) -> tuple[Decision, object | None]:
    from ..runtime import device_facts, plan
    from ..select import FormatTraits, choose_artifact
    from ..vllm_command import is_original_checkpoint, original_checkpoint_manifest

    if args.device == "cpu":
        raise UsageError("--engine vllm serves on a CUDA GPU; drop --device cpu (use --memory to plan elsewhere)")
    if is_original_checkpoint(args.artifacts):
        manifest = original_checkpoint_manifest(args.artifacts)
        traits = {"original": FormatTraits(100, 0, ("cuda",), manifest.dtype, "torch")}
        decision = choose_artifact([(args.artifacts, manifest)], device_facts("cuda", args.memory),
                                   args.max_length, traits, args.allow_unverified)
        return decision, {args.artifacts: manifest}
    decision, manifests = plan(args.artifacts, "cuda", args.memory, args.max_length, args.allow_unverified,
                               backends=("torch",))
    return decision, manifests


def _run_vllm(args: argparse.Namespace, api_key: str | None) -> int:
    from ..vllm_command import build_command, exec_vllm, read_config, render, settings_from

    decision, manifests = _vllm_decision(args)
    if decision.chosen is None:
        raise NoArtifactFits(why_nothing(decision))
    folder = Path(decision.chosen.folder)
    manifest = manifests[decision.chosen.folder]
    cmd = build_command(folder, settings_from(decision), read_config(folder), manifest, args.host, args.port,
                        args.served_model_name or manifest.source_model, api_key)
    if args.print_command:
        print(render(cmd))
        return 0
    exec_vllm(cmd)
    return 0
