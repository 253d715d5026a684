"""Issue 26 through the real CLI and load(): a file that can change a score is hashed, a manifest that lies
is refused, a smaller eval set never replaces a recorded verdict, and --force deletes only what we wrote."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from rerank_export import load
from rerank_export.build import SUMMARY_MARKER, check_summary
from rerank_export.cli import main
from rerank_export.errors import NoArtifactFits, UsageError
from rerank_export.evalsets import load_eval_set
from rerank_export.manifest import MANIFEST, read_manifest
from rerank_export.tiny import TINY_MARKER

from ..conftest import QWEN_TOKENIZER
from .test_cli_hardening import _one_line_error, _tree

pytestmark = pytest.mark.needs_fixtures

PICK = ["--device", "cpu", "--memory", "8GiB"]


@pytest.fixture
def root(verified_artifacts, tmp_path) -> Path:
    """baseline-fp32 (parity passed on 2 queries) and baseline-bf16 (unchecked), a private copy."""
    return shutil.copytree(verified_artifacts, tmp_path / "artifacts")


def _edit_manifest(folder: Path, **changes) -> None:
    data = json.loads((folder / MANIFEST).read_text())
    data.update(changes)
    (folder / MANIFEST).write_text(json.dumps(data))


# --- item 1: what can change a score is hashed ---------------------------------------------------------

def test_an_added_tokens_json_is_refused_by_pick_load_and_parity(root, tiny_model, capsys, caplog):
    fp32 = root / "baseline-fp32"
    (fp32 / "added_tokens.json").write_text(json.dumps({"<|extra|>": 151700}))
    with caplog.at_level(logging.WARNING):
        assert main(["pick", str(root), *PICK]) == 1
    out = capsys.readouterr().out
    assert "choice: none" in out and "added_tokens.json" in out
    with pytest.raises(NoArtifactFits, match="added_tokens.json"):
        load(root, device="cpu", memory_budget="8GiB")
    code = main(["-q", "parity", str(root), "--only", "baseline-fp32", "--model", str(tiny_model),
                 "--max-queries", "1", "--replace-verdict"])
    out = capsys.readouterr().out
    assert code == 1 and "cannot score" in out and "added_tokens.json" in out
    assert read_manifest(fp32).parity["verdict"] == "fail"


def test_a_manifest_without_files_is_passed_over_even_with_a_flipped_byte(root, capsys, caplog):
    fp32 = root / "baseline-fp32"
    data = json.loads((fp32 / MANIFEST).read_text())
    del data["files"]
    (fp32 / MANIFEST).write_text(json.dumps(data))
    weights = bytearray((fp32 / "model.safetensors").read_bytes())
    weights[len(weights) // 2] ^= 1
    (fp32 / "model.safetensors").write_bytes(bytes(weights))
    with caplog.at_level(logging.WARNING):
        assert main(["pick", str(root), *PICK, "--allow-unverified"]) == 0
    assert "choice: baseline-bf16" in capsys.readouterr().out
    assert any("baseline-fp32" in r.message and "'files' is missing" in r.message for r in caplog.records)
    code = main(["pick", str(fp32), *PICK])
    _one_line_error(capsys, code, 1, "'files' is missing or empty")


@pytest.mark.parametrize("changes, fragment", [
    ({"dtype": "fp64"}, "dtype 'fp64' is not what format baseline-fp32 stores (fp32)"),
    ({"dtype": "int8"}, "dtype 'int8' is not what format baseline-fp32 stores"),  # was KeyError: 'int8'
    ({"max_length": 0}, "max_length 0 is out of range"),
    ({"max_length": -1}, "max_length -1 is out of range"),
    ({"yes_id": -1}, "yes_id -1 is out of range"),
])
def test_out_of_range_manifest_fields_are_one_line_errors(root, capsys, changes, fragment):
    _edit_manifest(root / "baseline-fp32", **changes)
    _one_line_error(capsys, main(["pick", str(root / "baseline-fp32"), *PICK]), 1, fragment)
    with pytest.raises(NoArtifactFits):  # bf16 beside it is unverified: nothing else to serve
        load(root, device="cpu", memory_budget="8GiB")


def test_a_yes_id_beyond_the_vocabulary_is_refused_before_loading(root, capsys):
    _edit_manifest(root / "baseline-fp32", yes_id=10**6)
    assert main(["pick", str(root), *PICK]) == 1
    out = capsys.readouterr().out
    assert "yes_id 1000000 is beyond its tokenizer's vocabulary" in out


def test_a_smaller_eval_set_never_replaces_the_recorded_verdict(root, tiny_model, tmp_path, capsys, caplog):
    fp32 = root / "baseline-fp32"
    before = read_manifest(fp32).parity
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"query": "What is the capital of France?", "document": "Paris."}) + "\n")
    args = ["parity", str(root), "--only", "baseline-fp32", "--model", str(tiny_model), "--eval", str(one)]
    reports = (fp32 / "parity.json").read_bytes()
    with caplog.at_level(logging.WARNING):
        assert main(["-q", *args]) == 0
    assert read_manifest(fp32).parity == before and (fp32 / "parity.json").read_bytes() == reports
    assert any("kept its recorded verdict" in r.message and "--replace-verdict" in r.message for r in caplog.records)
    assert main(["-q", *args, "--replace-verdict"]) == 0
    recorded = read_manifest(fp32).parity
    assert recorded["verdict"] == "pass" and recorded["checked_at"] >= before["checked_at"]
    assert recorded["eval"] == {"pairs": 1, "queries": 1, "sha256": load_eval_set(one).digest()}
    capsys.readouterr()


def test_the_verdict_records_the_eval_sets_size_and_digest(verified_artifacts):
    from rerank_export.evalsets import builtin_eval_set

    recorded = read_manifest(verified_artifacts / "baseline-fp32").parity["eval"]
    assert recorded == builtin_eval_set(False).limit(2).describe()
    assert recorded["pairs"] > 1 and len(recorded["sha256"]) == 64


# --- item 2: nothing the tool did not write is deleted or overwritten ----------------------------------

def test_tiny_force_refuses_a_folder_holding_a_users_file(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["-q", "tiny", "--out", str(out), "--tokenizer", str(QWEN_TOKENIZER)]) == 0
    assert "config.json" in json.loads((out / TINY_MARKER).read_text())["files"]
    (out / "notes.txt").write_text("my notes")
    before = _tree(tmp_path)
    code = main(["tiny", "--out", str(out), "--tokenizer", str(QWEN_TOKENIZER), "--seed", "1", "--force"])
    _one_line_error(capsys, code, 2, "'notes.txt'", "not written by rerank-export")
    assert _tree(tmp_path) == before


def test_tiny_force_replaces_a_model_whose_marker_predates_the_file_list(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["-q", "tiny", "--out", str(out), "--tokenizer", str(QWEN_TOKENIZER)]) == 0
    marker = json.loads((out / TINY_MARKER).read_text())
    del marker["files"]
    (out / TINY_MARKER).write_text(json.dumps(marker))
    assert main(["-q", "tiny", "--out", str(out), "--tokenizer", str(QWEN_TOKENIZER), "--force"]) == 0
    assert "files" in json.loads((out / TINY_MARKER).read_text())


def test_onnx_force_refuses_an_artifact_folder_holding_a_users_file(tiny_model, root, capsys):
    folder = root / "onnx-fp32"
    shutil.copytree(root / "baseline-fp32", folder)
    _edit_manifest(folder, format="onnx-fp32")
    (folder / "my-benchmark.csv").write_text("precious")
    before = _tree(root)
    code = main(["onnx", "--model", str(tiny_model), "--out", str(root), "--force"])
    _one_line_error(capsys, code, 2, "'my-benchmark.csv'", "not written by rerank-export")
    assert _tree(root) == before


def test_build_never_overwrites_a_summary_it_did_not_write(tiny_model, tmp_path, capsys):
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "SUMMARY.md").write_text("# my own summary\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "r"\n[source]\nmodel = "{tiny_model}"\n[[artifacts]]\nformat = "baseline-fp32"\n')
    code = main(["build", str(recipe), "--out", str(out)])
    _one_line_error(capsys, code, 2, "SUMMARY.md", "was not written by rerank-export build")
    assert [p.name for p in out.iterdir()] == ["SUMMARY.md"]
    assert (out / "SUMMARY.md").read_text() == "# my own summary\n"


def test_build_replaces_its_own_summary_old_or_new(tmp_path):
    path = tmp_path / "SUMMARY.md"
    path.write_text(f"{SUMMARY_MARKER}\n# r: build summary\n")
    check_summary(path)
    path.write_text("# r: build summary\n\nSource: `m`\n\n| artifact | bytes | vs baseline | parity |\n")
    check_summary(path)  # written before the marker
    path.write_text("# r: build summary\n\nmy notes about it\n")
    with pytest.raises(UsageError, match="was not written by rerank-export build"):
        check_summary(path)
