"""`rerank-export` command line: parse, call the library, map known errors to one line and an exit code.

Each subcommand lives in `commands/<name>.py` with `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

from .commands import COMMANDS
from .errors import RerankExportError

log = logging.getLogger("rerank_export")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + exits 2; keep it to one line
        self.exit(2, f"rerank-export: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    # The flags work before or after the subcommand; SUPPRESS keeps a subparser from resetting them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging and tracebacks")
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or info logs")
    parser = _Parser(prog="rerank-export", description="Export, parity-check and serve Qwen3 rerankers.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, parents=[common])
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


class _OursOrErrors(logging.Filter):
    """Our lines at the chosen level; other libraries' (onnxruntime's "consider pre-processing before
    quantization" hint, for one) only from ERROR up. --verbose shows everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("rerank_export") or record.levelno >= logging.ERROR


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if not verbose:  # only on the handler we made: an embedding program's (or pytest's) stay as they are
        for handler in root.handlers:
            if handler not in before:
                handler.addFilter(_OursOrErrors())
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _quiet_torch() -> None:
    """torch logs through its own handlers (its onnx exporter warns that torchvision is missing, dynamo
    prints metrics at exit); TORCH_LOGS is read when torch is imported, set_logs once it has been."""
    if "torch" in sys.modules:
        import torch._logging

        torch._logging.set_logs(all=logging.ERROR)
    else:
        os.environ.setdefault("TORCH_LOGS", "-all")


@contextlib.contextmanager
def _quiet_libraries(verbose: bool) -> Iterator[None]:
    """Libraries' Python warnings speak to their developers, not to ours: hidden unless --verbose."""
    if verbose:
        yield
        return
    _quiet_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class Terminated(KeyboardInterrupt):
    """SIGTERM (a supervisor, `timeout`, `docker stop`) raised where the work is, as Ctrl-C is: the `finally`
    blocks run, so temp folders are removed and child processes killed (subprocess.run kills its child on
    any exception) instead of being left behind by the default handler's immediate exit."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first `--` passes through to an engine (`serve --engine vllm -- --flag`);
    # argparse alone would hand it to no positional once the artifacts one is filled.
    argv, passthrough = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): return the code, don't exit the caller
        return int(exc.code or 0)
    if passthrough and args.command != "serve":
        print("rerank-export: error: arguments after -- pass through to serve --engine vllm only", file=sys.stderr)
        return 2
    args.passthrough = passthrough
    args.verbose = getattr(args, "verbose", False)
    args.quiet = getattr(args, "quiet", False)
    _configure_logging(args.verbose, args.quiet)
    try:
        with _sigterm_raises(), _quiet_libraries(args.verbose):
            return int(args.run(args) or 0)
    except RerankExportError as exc:
        if args.verbose:
            log.exception("failed")
        print(f"rerank-export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("rerank-export: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("rerank-export: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
