"""The subcommands, in the order `rerank-export --help` lists them. A new command is one module here."""

from . import awq, baseline, build, onnx, parity, pick, prompt, serve, tiny

COMMANDS = [tiny, prompt, baseline, onnx, awq, parity, build, pick, serve]
