"""Issue 12 through the real CLI: no data loss, bad values refused in one line before any work, broken
manifests and corrupted files handled, and what interrupted exports leave cleaned by the next one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rerank_export.cli import main
from rerank_export.manifest import MANIFEST, PARTIAL_MARKER, find_artifacts, read_manifest
from rerank_export.tiny import TINY_MARKER

from ..conftest import QWEN_TOKENIZER

pytestmark = pytest.mark.needs_fixtures


def _one_line_error(capsys, code: int, expected_code: int, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == expected_code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(f in err for f in fragments), err
    return err


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# --- tiny: never deletes or moves what it did not write -------------------------------------------------

def test_tiny_refuses_an_existing_folder_a_file_and_the_current_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("three years of work")
    (tmp_path / "plain.txt").write_text("a file")
    before = _tree(tmp_path)
    for out, extra in [("notes", []), ("notes", ["--force"]), ("plain.txt", []), (".", []), (".", ["--force"])]:
        monkeypatch.chdir(tmp_path)
        code = main(["tiny", "--out", out, *extra])
        _one_line_error(capsys, code, 2, "nothing was written")
    assert _tree(tmp_path) == before


def test_tiny_replaces_only_its_own_model_and_only_with_force(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["-q", "tiny", "--out", str(out), "--tokenizer", str(QWEN_TOKENIZER)]) == 0
    first = (out / "model.safetensors").read_bytes()
    assert json.loads((out / TINY_MARKER).read_text())["seed"] == 0
    capsys.readouterr()
    code = main(["tiny", "--out", str(out), "--tokenizer", str(QWEN_TOKENIZER), "--seed", "1"])
    _one_line_error(capsys, code, 2, "already holds a tiny model", "--force")
    assert (out / "model.safetensors").read_bytes() == first
    code = main(["-q", "tiny", "--out", str(out), "--tokenizer", str(QWEN_TOKENIZER), "--seed", "1", "--force"])
    assert code == 0 and (out / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no partial or old folder left


def test_build_does_not_build_the_tiny_source_over_a_foreign_folder(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_text("someone else's")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "r"\n[source]\nmodel = "{model}"\ntiny_seed = 0\n[[artifacts]]\n'
                      'format = "baseline-bf16"\n')
    code = main(["build", str(recipe), "--out", str(tmp_path / "a")])
    _one_line_error(capsys, code, 2, str(model), "nothing was written")
    assert [p.name for p in model.iterdir()] == ["weights.bin"]


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--seed", "9" * 30]])
def test_tiny_bad_seed(tmp_path, capsys, args):
    _one_line_error(capsys, main(["tiny", "--out", str(tmp_path / "t"), *args]), 2, "--seed")


# --- exporters: --out checked before the model loads; an artifact is replaced only with --force -------

@pytest.mark.parametrize("command", [["baseline"], ["onnx", "--dtype", "fp32"], ["awq"]])
def test_out_at_a_file_under_a_file_and_under_proc(tiny_model, tmp_path, capsys, command):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for out, fragment in [(blocker, "is a file, not a folder"), (blocker / "sub", "cannot write to"),
                          (Path("/proc/rerank-export-test"), "cannot write to")]:
        code = main([command[0], "--model", str(tiny_model), "--out", str(out), *command[1:]])
        _one_line_error(capsys, code, 2, fragment)
    assert blocker.read_text() == "keep me"


def test_an_artifact_is_replaced_only_with_force_and_a_foreign_folder_never(tiny_model, baseline_artifacts,
                                                                            tmp_path, capsys):
    root = shutil.copytree(baseline_artifacts, tmp_path / "artifacts")
    before = _tree(root)
    code = main(["baseline", "--model", str(tiny_model), "--out", str(root), "--dtype", "bf16"])
    _one_line_error(capsys, code, 2, "already holds a rerank-export artifact", "--force")
    (root / "baseline-fp16").mkdir()
    (root / "baseline-fp16" / "mine.txt").write_text("not an artifact")
    code = main(["baseline", "--model", str(tiny_model), "--out", str(root), "--dtype", "fp16", "--force"])
    _one_line_error(capsys, code, 2, "is not a rerank-export artifact", "nothing was written")
    assert _tree(root) == {**before, "baseline-fp16": None, "baseline-fp16/mine.txt": b"not an artifact"}
    first = read_manifest(root / "baseline-bf16").created
    code = main(["-q", "baseline", "--model", str(tiny_model), "--out", str(root), "--dtype", "bf16", "--force"])
    assert code == 0 and read_manifest(root / "baseline-bf16").created > first
    assert sorted(p.name for p in root.iterdir()) == ["baseline-bf16", "baseline-fp16", "baseline-fp32"]


# --- interrupted exports: what they leave is gone after the next export to the same place ------------

def test_a_killed_export_leaves_nothing_the_next_export_keeps(tiny_model, tmp_path):
    out = tmp_path / "artifacts"
    script = (
        "import sys, time\n"
        "import rerank_export.formats.baseline as b\n"
        "b.write_manifest = lambda *a, **k: time.sleep(600)\n"
        "from rerank_export.cli import main\n"
        f"sys.exit(main(['baseline', '--model', {str(tiny_model)!r}, '--out', {str(out)!r}]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(out.glob(".baseline-bf16.partial-*/model.safetensors")):
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    (leftover,) = out.glob(".baseline-bf16.partial-*")
    assert (leftover / PARTIAL_MARKER).is_file()
    assert not (out / "baseline-bf16").exists() and find_artifacts(out) == []  # nothing looks finished
    foreign = out / ".baseline-bf16.partial-notours"  # same name pattern, no marker: not ours to delete
    foreign.mkdir()
    assert main(["-q", "baseline", "--model", str(tiny_model), "--out", str(out), "--dtype", "bf16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".baseline-bf16.partial-notours", "baseline-bf16"]
    assert not (out / "baseline-bf16" / PARTIAL_MARKER).exists()
    assert PARTIAL_MARKER not in read_manifest(out / "baseline-bf16").files


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_sigterm_mid_export_kills_the_measuring_child_and_leaves_nothing(tiny_model, tmp_path):
    out = tmp_path / "artifacts"
    proc = subprocess.Popen([sys.executable, "-m", "rerank_export", "baseline", "--model", str(tiny_model),
                             "--out", str(out), "--dtype", "bf16"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child, deadline = None, time.time() + 120
        while child is None and proc.poll() is None and time.time() < deadline:
            child = next((c for c in _children(proc.pid) if b"rerank_export.memory" in _cmdline(c)), None)
            time.sleep(0.02)
        assert child, "the export never started measuring its memory"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == "rerank-export: terminated" and "Traceback" not in err, err[-2000:]
    assert b"rerank_export.memory" not in _cmdline(child)  # killed and reaped, not left running
    assert not out.exists()  # the partial folder removed, and the root this export made


def test_onnx_scratch_leftovers_are_cleaned_when_the_next_export_starts(tmp_path, capsys):
    out = tmp_path / "artifacts"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    scratch = out / ".onnx-export-k1ll3d"
    scratch.mkdir(parents=True)
    (scratch / "model.onnx.data").write_bytes(b"\0" * 1000)
    (scratch / PARTIAL_MARKER).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    code = main(["onnx", "--model", str(tmp_path / "nowhere"), "--out", str(out)])
    assert code == 1 and not scratch.exists() and list(out.iterdir()) == []


# --- pick: broken manifests skipped, hashes verified (or said not to be) -------------------------------

@pytest.fixture
def pick_root(verified_artifacts, tmp_path) -> Path:
    """baseline-fp32 (parity passed) and baseline-bf16 (unchecked), a private copy."""
    return shutil.copytree(verified_artifacts, tmp_path / "artifacts")


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_pick_verifies_hashes_and_passes_over_a_corrupted_artifact(pick_root, capsys, caplog):
    args = ["pick", str(pick_root), "--device", "cpu", "--memory", "8GiB"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "choice: baseline-fp32" in out and "files: every file of baseline-fp32 matches its sha256" in out
    _flip_a_byte(pick_root / "baseline-fp32" / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        assert main(args) == 1
    out = capsys.readouterr().out
    assert "choice: none" in out and "unusable" in out and "model.safetensors" in out
    assert any("passing over" in r.message and "baseline-fp32" in r.message for r in caplog.records)
    assert main([*args, "--allow-unverified"]) == 0
    assert "choice: baseline-bf16" in capsys.readouterr().out
    assert main([*args, "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "choice: baseline-fp32" in out and "NOT checked against their sha256 (--no-verify)" in out


@pytest.mark.parametrize("content", [b"\xff\xfe{", b'"a string"', b'{"format": "baseline-bf16"}'])
def test_pick_skips_a_broken_manifest_and_keeps_the_others_usable(pick_root, capsys, caplog, content):
    (pick_root / "baseline-bf16" / MANIFEST).write_bytes(content)
    with caplog.at_level(logging.WARNING):
        code = main(["pick", str(pick_root), "--device", "cpu", "--memory", "8GiB"])
    assert code == 0 and "choice: baseline-fp32" in capsys.readouterr().out
    assert any("skipping" in r.message and "baseline-bf16" in r.message for r in caplog.records)
    code = main(["pick", str(pick_root / "baseline-bf16"), "--device", "cpu", "--memory", "8GiB"])
    _one_line_error(capsys, code, 1, "baseline-bf16/manifest.json is not a valid manifest")


def test_load_skips_a_broken_manifest_and_falls_back_from_a_corrupted_artifact(pick_root, caplog):
    from rerank_export import load

    (pick_root / "broken").mkdir()
    (pick_root / "broken" / MANIFEST).write_text('{"files": []}')
    _flip_a_byte(pick_root / "baseline-fp32" / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        reranker = load(pick_root, device="cpu", memory_budget="8GiB", allow_unverified=True)
    assert reranker.format == "baseline-bf16" and 0 <= reranker.score([("q", "d")])[0] <= 1
    assert any("broken" in r.message for r in caplog.records)


@pytest.mark.parametrize("args, fragment", [
    (["--memory", "9" * 400], "is too large"),
    (["--memory", "0"], "is not a size"),
    (["--max-length", "9" * 400], "--max-length"),
    (["--max-length", "9" * 5000], "--max-length"),
])
def test_pick_absurd_numbers(pick_root, capsys, args, fragment):
    _one_line_error(capsys, main(["pick", str(pick_root), "--device", "cpu", *args]), 2, fragment)


def test_pick_on_a_file_or_nothing(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    _one_line_error(capsys, main(["pick", str(tmp_path / "f")]), 1, "is not a folder")
    _one_line_error(capsys, main(["pick", str(tmp_path)]), 1, "no artifact folders")


# --- parity: thresholds and --only checked before the model loads --------------------------------------

@pytest.mark.parametrize("name, text, fragment", [
    ("t.json", '{"awq-int4": {"max_abs_dp": NaN}}', "awq-int4: 'max_abs_dp' must be a finite number from 0 to 1"),
    ("t.toml", '[awq-int4]\nmax_abs_dp = nan\n', "'max_abs_dp' must be a finite number from 0 to 1, not nan"),
    ("t.json", '{"awq-int4": {"max_abs_dp": "abc"}}', "'max_abs_dp' must be a finite number from 0 to 1, not 'abc'"),
    ("t.json", '{"awq-int4": {"max_abs_dp": null}}', "'max_abs_dp' must be a finite number from 0 to 1, not None"),
    ("t.json", '{"awq-int4": {"max_abs_dp": 1e999}}', "not inf"),
    ("t.json", '{"awq-int4": {"min_top1": -0.5}}', "'min_top1' must be a finite number from 0 to 1"),
    ("t.json", '{"awq-int4": {"max_dp": 0.1}}', "awq-int4: unknown threshold 'max_dp' (known: max_abs_dp"),
    ("t.json", '{"gguf": {"max_abs_dp": 0.1}}', "'gguf' is not a known artifact format"),
    ("t.json", "[" * 50000, "is not valid json: maximum recursion"),
    ("t.json", b'{"awq-int4": {"max_abs_dp": 0.1}}\xff', "is not valid json"),
])
def test_bad_thresholds_fail_before_the_model_loads(pick_root, tmp_path, capsys, name, text, fragment):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    # --model names nothing: the thresholds error must come first, before any loading or scoring.
    code = main(["parity", str(pick_root), "--model", str(tmp_path / "nowhere"), "--thresholds", str(path)])
    _one_line_error(capsys, code, 2, f"thresholds file '{path}'", fragment)
    assert read_manifest(pick_root / "baseline-bf16").parity is None


def test_parity_only_names_an_artifact_that_exists(pick_root, tmp_path, capsys):
    code = main(["parity", str(pick_root), "--model", str(tmp_path / "nowhere"), "--only", "nope"])
    _one_line_error(capsys, code, 2, "--only nope: no artifact folder of that name",
                    "found: baseline-bf16, baseline-fp32")


def test_parity_skips_a_broken_manifest_and_checks_the_rest(pick_root, tiny_model, capsys, caplog):
    (pick_root / "baseline-bf16" / MANIFEST).write_text('{"format": "baseline-bf16", "files": ["x"]}')
    with caplog.at_level(logging.WARNING):
        code = main(["-q", "parity", str(pick_root), "--model", str(tiny_model), "--max-queries", "2"])
    assert code == 0 and "| baseline-fp32 | PASS |" in capsys.readouterr().out
    assert any("skipping" in r.message and "baseline-bf16" in r.message for r in caplog.records)


# --- build: every recipe value checked before any export ------------------------------------------------

BASE_RECIPE = 'name = "r"\n[source]\nmodel = "MODEL"\n[[artifacts]]\nformat = "baseline-bf16"\n'


@pytest.mark.parametrize("patch, fragment", [
    (("", '[parity]\nmax_queries = "abc"\n'), "[parity]: 'max_queries' must be a positive integer, not 'abc'"),
    (('model = "MODEL"', "model = 42"), "[source]: 'model' must be a non-empty string, not 42"),
    (("", 'options = { calib_samples = "abc" }\n'), "options for baseline-bf16: unknown option 'calib_samples'"),
    (('format = "baseline-bf16"', 'format = "awq-int4"\noptions = { calib_samples = "abc" }'),
     "options for awq-int4: 'calib_samples' must be a positive integer, not 'abc'"),
    (("", "[parity]\nthresholds = 5\n"), "[parity]: 'thresholds' must be a table, not 5"),
    (("", '[parity.thresholds.baseline-bf16]\nmax_abs_dp = "0.1"\n'), "'max_abs_dp' must be a finite number from 0 to 1, not '0.1'"),
    (("", '[[targets]]\nname = "t"\ndevice = "cpu"\nmemory = "4GiB"\nmax_length = "big"\n'),
     "targets[0]: 'max_length' must be an integer from 1 to"),
])
def test_bad_recipe_values_fail_before_any_export(tiny_model, tmp_path, capsys, patch, fragment):
    old, new = patch
    text = BASE_RECIPE.replace(old, new) if old else BASE_RECIPE + new
    recipe = tmp_path / "r.toml"
    recipe.write_text(text.replace("MODEL", str(tiny_model)))
    code = main(["build", str(recipe), "--out", str(tmp_path / "out")])
    _one_line_error(capsys, code, 1, f"{recipe}: ", fragment)
    assert not (tmp_path / "out").exists()


# --- prompt: text that is not UTF-8 -------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--query", "--document", "--instruction"])
def test_prompt_refuses_lone_surrogates(capsys, flag):
    args = {"--query": "q", "--document": "d", flag: "bad \ud800 text"}
    code = main(["prompt", "--tokenizer", str(QWEN_TOKENIZER), *[x for kv in args.items() for x in kv]])
    _one_line_error(capsys, code, 2, f"argument {flag}: text is not valid UTF-8")


def test_prompt_refuses_undecodable_argv_bytes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rerank_export", "prompt", "--tokenizer", str(QWEN_TOKENIZER),
                           "--query", b"caf\xe9".decode("utf-8", "surrogateescape"), "--document", "d"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "not valid UTF-8" in done.stderr and "Traceback" not in done.stderr


# --- issue 26: the last four CLI tracebacks ------------------------------------------------------------

@pytest.mark.parametrize("command", [["prompt", "--query", "q", "--document", "d"], ["tiny", "--out", "OUT"]])
def test_a_tokenizer_folder_without_a_tokenizer_is_one_line(tmp_path, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(tmp_path / "tiny") if a == "OUT" else a for a in command]
    code = main([*args, "--tokenizer", str(empty)])
    _one_line_error(capsys, code, 1, f"'{empty}' holds no tokenizer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # tiny started no work


@pytest.mark.parametrize("line, fragment", [
    ('{"query": "\\ud800", "document": "d"}', "'query' is not valid Unicode (a lone surrogate \\ud800"),
    ('{"query": "q", "documents": ["ok", "x\\udfff"]}', "a document is not valid Unicode"),
    ('{"query": "q", "document": "d", "instruction": "\\udc80"}', "'instruction' is not valid Unicode"),
    ('{"query": "q", "pos": [{"a": 1}], "neg": []}', "every document must be a string"),
    ("[" * 100_000 + "]" * 100_000, "is nested too deeply to read as JSON"),
    ('{"query": "q", "document": ' + "[" * 100_000 + "]" * 100_000 + "}", "is nested too deeply"),
    ('{"query": ' + "1" * 5000 + "}", "is not valid JSON: Exceeds the limit"),
])
def test_parity_eval_lines_that_broke_the_cli_are_one_line(tmp_path, capsys, line, fragment):
    evalset = tmp_path / "e.jsonl"
    evalset.write_text(line + "\n")
    code = main(["parity", str(tmp_path), "--eval", str(evalset)])  # the eval set is read before anything else
    _one_line_error(capsys, code, 1, f"{evalset}:1", fragment)
