"""rerank-export serve: the HTTP reranker over the artifact that fits, or the `vllm serve` command for it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import MissingExtra, NoArtifactFits, UsageError
from ..select import why_nothing
from .pick import add_device_arguments

NAME = "serve"
HELP = "serve the best verified artifact that fits over HTTP (/v1/rerank, /score, a try-it page)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..serve import (
        DEFAULT_MAX_BODY_BYTES,
        DEFAULT_MAX_DOCUMENTS,
        DEFAULT_MAX_REQUEST_TOKENS,
        DEFAULT_READ_TIMEOUT_S,
        DEFAULT_REQUEST_TIMEOUT_S,
        host_list,
        positive_seconds,
    )
    from ..serve.keys import API_KEY_ENV
    from ..vllm.command import VLLM_PYTHON_ENV
    from ._common import port_int, positive_int, size_bytes

    parser.add_argument("artifacts", help="artifacts root (or one artifact folder)")
    add_device_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_int, default=8000, help="port to bind (default 8000; 0: any free one)")
    parser.add_argument("--allowed-hosts", type=host_list, default=None, metavar="HOST[,HOST...]",
                        help="Host headers to answer, '*' for any (default: --host and localhost; any when "
                             "--host is 0.0.0.0 or ::); others get a 400, which stops DNS rebinding")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--api-key-file", default=None, metavar="PATH",
                      help="require 'Authorization: Bearer KEY', KEY being this file's content (default: "
                           f"${API_KEY_ENV} if set; without either, no key is required)")
    keys.add_argument("--api-key", default=None, metavar="KEY",
                      help=f"the key itself: `ps` shows it to every user of this machine, so prefer --api-key-file "
                           f"or ${API_KEY_ENV}")
    parser.add_argument("--served-model-name", default=None, help="model name in responses (default: source model)")
    parser.add_argument("--max-documents", type=positive_int, default=DEFAULT_MAX_DOCUMENTS,
                        help=f"most documents (or pairs) per request (default {DEFAULT_MAX_DOCUMENTS})")
    parser.add_argument("--max-request-tokens", type=positive_int, default=DEFAULT_MAX_REQUEST_TOKENS,
                        metavar="TOKENS", help="most tokens per request, all documents together after "
                                               f"truncation (default {DEFAULT_MAX_REQUEST_TOKENS}); more is a 413")
    parser.add_argument("--request-timeout", type=positive_seconds, default=DEFAULT_REQUEST_TIMEOUT_S,
                        metavar="SECONDS", help="stop scoring a request after this long and answer 408 (default "
                                                f"{DEFAULT_REQUEST_TIMEOUT_S:g})")
    parser.add_argument("--read-timeout", type=positive_seconds, default=DEFAULT_READ_TIMEOUT_S,
                        metavar="SECONDS", help="close a connection whose request headers, or then its body, take "
                                                f"longer than this to arrive (slowloris; default "
                                                f"{DEFAULT_READ_TIMEOUT_S:g}); a 408 says so")
    parser.add_argument("--max-body", type=size_bytes, default=DEFAULT_MAX_BODY_BYTES, metavar="SIZE",
                        help="largest request body, e.g. 8MiB (default 8MiB)")
    parser.add_argument("--no-prefix-reuse", action="store_true",
                        help="run every pair in full instead of reusing the query's KV cache (torch backends)")
    parser.add_argument("--engine", choices=["builtin", "vllm"], default="builtin",
                        help="builtin server (default) or vLLM (CUDA build on a GPU, CPU build on a CPU)")
    parser.add_argument("--print-command", action="store_true", help="with --engine vllm: print, do not run")
    parser.add_argument("--vllm-python", default=None, metavar="PYTHON",
                        help="with --engine vllm: the interpreter that has vLLM (default: "
                             f"${VLLM_PYTHON_ENV}, else this one; see scripts/vllm-venv.sh)")
    parser.add_argument("--vllm-timeout", type=float, default=None, metavar="SECONDS",
                        help="with --engine vllm: how long vLLM may take to answer /health (default 900); "
                             "further vLLM flags go last, after --, e.g. -- --tensor-parallel-size 2")


def run(args: argparse.Namespace) -> int:
    from ..serve.keys import resolve_api_key

    api_key = resolve_api_key(args.api_key_file, args.api_key)
    args.vllm_args = list(getattr(args, "passthrough", []))
    if args.engine == "vllm":
        return _run_vllm(args, api_key)
    if args.print_command or args.vllm_args or args.vllm_python or args.vllm_timeout is not None:
        raise UsageError("--print-command, --vllm-python, --vllm-timeout and -- VLLM_ARGS apply to "
                         "--engine vllm only")
    return _run_builtin(args, api_key)


def _run_builtin(args: argparse.Namespace, api_key: str | None) -> int:
    from ..runtime import load
    from ..serve import Limits, bind, create_app, default_allowed_hosts, run_server

    limits = Limits(args.max_documents, args.max_body, args.max_request_tokens, args.request_timeout,
                    args.read_timeout)
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtra("uvicorn", "serve") from None
    sock = bind(args.host, args.port)  # a port in use is said here, before the model loads
    reranker = load(args.artifacts, args.device, args.memory, args.max_length, args.allow_unverified,
                    prefix_reuse=not args.no_prefix_reuse)
    app = create_app(reranker, args.served_model_name, api_key, limits,
                     args.allowed_hosts or default_allowed_hosts(args.host))
    print(f"serving {reranker.folder} ({reranker.format}) on http://{args.host}:{sock.getsockname()[1]}/ "
          f"(POST /v1/rerank; try-it page at /)", flush=True)
    run_server(app, sock, log_level="warning" if args.quiet else "info", limits=limits)
    return 0


def _run_vllm(args: argparse.Namespace, api_key: str | None) -> int:
    from ..manifest import verify_files
    from ..serve.keys import API_KEY_ENV
    from ..vllm.command import build_command, check_vllm, read_config, settings_from, vllm_python
    from ..vllm.decide import decide, native_bf16
    from ..vllm.engine import free_port
    from ..vllm.server import DEFAULT_START_TIMEOUT, VllmServer, run_foreground

    if args.allowed_hosts is not None:
        raise UsageError("--allowed-hosts applies to the builtin engine only (vLLM has no Host check)")
    if any(a == "--api-key" or a.startswith("--api-key=") for a in args.vllm_args):
        raise UsageError(f"pass the key with --api-key-file or ${API_KEY_ENV}: it reaches vLLM through its "
                         "environment, never its argv")
    decision, manifests = decide(args.artifacts, args.device, args.memory, args.max_length, args.allow_unverified)
    if decision.chosen is None:
        raise NoArtifactFits(why_nothing(decision))
    folder = Path(decision.chosen.folder)
    manifest = manifests[decision.chosen.folder]
    config = read_config(folder)
    python = vllm_python(args.vllm_python)
    port = args.port or free_port()  # --port 0: a free one, chosen here so that the health check knows it
    command = build_command(folder, settings_from(decision, config), config, manifest, args.host, port,
                            args.served_model_name or manifest.source_model, api_key, python, native_bf16(decision),
                            args.vllm_args)
    if args.print_command:
        print("\n".join(filter(None, [command.note(), command.render()])))
        return 0
    check_vllm(python)
    verify_files(folder, manifest)  # vLLM would serve a corrupted artifact as it is
    server = VllmServer(command, folder, args.host, port,
                        start_timeout=args.vllm_timeout or DEFAULT_START_TIMEOUT)
    return run_foreground(server)
