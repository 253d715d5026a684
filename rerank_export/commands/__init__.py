"""The subcommands, in the order `rerank-export --help` lists them. A new command is one module here."""

from . import baseline, parity, prompt, tiny

COMMANDS = [tiny, prompt, baseline, parity]
