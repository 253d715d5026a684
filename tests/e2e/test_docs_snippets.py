"""Every snippet in README.md and docs/*.md is a claim that it works as written.

Python blocks run as written (exec) in a folder holding `artifacts/`, the tiny model's gated baselines;
`rerank-export` lines in shell blocks name a real command, every `--flag` on them is in that command's
`--help`, and the command's own parser takes the line; JSON blocks parse. A block that needs the Hugging
Face hub is marked with `<!-- snippet: needs-hub -->` on the line before it and skipped by name: the marked
blocks must be exactly those in NEEDS_HUB. The pages themselves: the README stays a short read with every
docs page linked from it, relative links and their #anchors resolve, and no issue number shows.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from rerank_export.cli import build_parser, main
from rerank_export.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
NEEDS_HUB_MARK = "<!-- snippet: needs-hub -->"
# (page, first line of the block) of every block marked as needing the hub; kept short on purpose.
NEEDS_HUB: set[tuple[str, str]] = set()
README_MAX_LINES = 200
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence
    lang: str
    code: str
    needs_hub: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            opening = FENCE.match(lines[i])
            if not opening:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            found.append(Block(str(path.relative_to(ROOT)), i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n",
                               before == NEEDS_HUB_MARK))
            i = end + 1
    return found


BLOCKS = blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in ("bash", "sh", "shell", "console")]
JSON = [b for b in BLOCKS if b.lang == "json"]


def test_the_pages_have_snippets_and_every_block_says_its_language():
    assert PYTHON and SHELL, "README.md and docs/ show Python and shell snippets"
    assert not [b.id for b in BLOCKS if not b.lang], "a fenced block without a language is checked by nothing"


def test_blocks_marked_as_needing_the_hub_are_the_listed_ones():
    marked = {(b.page, b.code.splitlines()[0]) for b in BLOCKS if b.needs_hub}
    assert marked == NEEDS_HUB, "mark a block needs-hub only if it cannot run on a local folder, and list it here"
    assert len(NEEDS_HUB) <= 3


# --- Python: run as written -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_workdir(tmp_path_factory, verified_artifacts) -> Path:
    """The folder the snippets run in: `artifacts/` holds the tiny model's baselines, baseline-fp32 gated
    (what `bash scripts/demo.sh` leaves there, cut to what the snippets load)."""
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(verified_artifacts, work / "artifacts")
    return work


@pytest.mark.needs_fixtures
@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_snippet_runs_as_written(block, docs_workdir, monkeypatch, capsys):
    if block.needs_hub:
        pytest.skip(f"{block.id} loads from the Hugging Face hub (listed in NEEDS_HUB)")
    monkeypatch.chdir(docs_workdir)
    exec(compile(block.code, block.id, "exec"), {"__name__": "__main__"})  # noqa: S102 (the docs' own code)


# --- Shell: every rerank-export line parses -----------------------------------------------------------------------

SHELL_ENDS = {"|", "||", "&&", ";", ">", ">>", "2>", "&"}


def rerank_export_lines(block: Block) -> list[tuple[str, list[str]]]:
    """('page:line command', arguments after `rerank-export`) for each line of the block that runs it."""
    found, pending, first = [], "", 0
    for number, line in enumerate(block.code.splitlines(), start=block.line + 1):
        first = first or number
        if line.endswith("\\"):  # continued on the next line
            pending += line[:-1] + " "
            continue
        command, pending = pending + line, ""
        words = shlex.split(command, comments=True)
        starts = [i for i, w in enumerate(words) if w == "rerank-export" or w.endswith("/bin/rerank-export")]
        if starts:
            args = words[starts[0] + 1:]
            cut = next((i for i, w in enumerate(args) if w in SHELL_ENDS), len(args))
            found.append((f"{block.page}:{first} {command.strip()}", args[:cut]))
        first = 0
    return found


COMMAND_LINES = [line for b in SHELL for line in rerank_export_lines(b)]
NAMES = {m.NAME for m in COMMANDS}


def split_passthrough(args: list[str]) -> tuple[list[str], list[str]]:
    """rerank-export's own arguments, and those after `--` (which pass through to vLLM)."""
    return (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])


def command_of(args: list[str]) -> str | None:
    return next((a for a in split_passthrough(args)[0] if not a.startswith("-")), None)
_HELP: dict[str, str] = {}


def command_help(command: str) -> str:
    """`rerank-export COMMAND --help`, through the console script's own main()."""
    if command not in _HELP:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main([command, "--help"]) == 0
        _HELP[command] = out.getvalue()
    return _HELP[command]


def test_the_docs_show_every_command():
    assert {command_of(args) for _, args in COMMAND_LINES} == NAMES, "each command has an example in the docs"


@pytest.mark.parametrize("where, args", COMMAND_LINES, ids=[w for w, _ in COMMAND_LINES])
def test_rerank_export_line_names_a_command_and_flags_it_takes(where, args):
    ours, passthrough = split_passthrough(args)
    command = command_of(args)
    assert command in NAMES, f"{where}: no command named {command!r}"
    text = command_help(command)
    missing = [f for f in (a.split("=", 1)[0] for a in ours if a.startswith("--"))
               if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"{where}: not in `rerank-export {command} --help`: {missing}"
    try:
        build_parser().parse_args(ours)
    except SystemExit as exc:
        pytest.fail(f"{where}: rerank-export's parser refuses it (exit {exc.code})")
    assert not passthrough or command == "serve", f"{where}: arguments after -- pass through to serve only"


def test_scripts_named_in_shell_snippets_exist():
    named = {w for b in SHELL for w in re.findall(r"\bbash (scripts/[\w.-]+\.sh)", b.code)}
    assert named and not [s for s in named if not (ROOT / s).is_file()]


@pytest.mark.parametrize("block", JSON, ids=[b.id for b in JSON])
def test_json_snippet_parses(block):
    try:
        json.loads(block.code)
    except json.JSONDecodeError:  # JSON Lines: one document a line
        for line in filter(str.strip, block.code.splitlines()):
            json.loads(line)


# --- The pages ------------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.DOTALL | re.MULTILINE)
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_readme_is_a_short_read_linking_every_docs_page():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    linked = {(README.parent / t.split("#")[0]).resolve() for t in LINK.findall(text)}
    assert not [p.name for p in DOCS[1:] if p.resolve() not in linked], "every docs page is linked from the README"
    assert (ROOT / "benchmarks" / "RESULTS.md").resolve() in linked


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_relative_links_resolve(path):
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{path.name}: {broken}"


def test_no_issue_numbers_in_user_facing_text():
    pages = [*DOCS, ROOT / "benchmarks" / "RESULTS.md", ROOT / "artifacts" / "README.md"]
    found = [(p.name, m.group(0)) for p in pages if p.is_file()
             for m in re.finditer(r"(?i)\bissue ?#?\d+|\btask \d+|\(#\d+\)", p.read_text())]
    assert not found
