"""`rerank-export onnx` end to end: export through the CLI, gate it with `rerank-export parity`, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rerank_export.cli import main
from rerank_export.manifest import read_manifest

pytestmark = pytest.mark.needs_fixtures


@pytest.fixture(scope="module")
def cli_root(tiny_model, tmp_path_factory) -> Path:
    """onnx-fp32 of the tiny model written by the CLI (read-only: copy to mutate)."""
    out = tmp_path_factory.mktemp("onnx-cli") / "artifacts"
    assert main(["--quiet", "onnx", "--model", str(tiny_model), "--out", str(out), "--dtype", "fp32"]) == 0
    return out


def _eval_file(tmp_path: Path) -> Path:
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"query": "What is the capital of France?",
                                "documents": ["Paris is the capital of France.", "Bananas are yellow.",
                                              "France borders Spain."], "labels": [2, 0, 1]}) + "\n")
    return path


def test_onnx_cli_writes_a_complete_artifact_and_the_parity_gate_passes_it(cli_root, tiny_model, tmp_path):
    assert sorted(p.name for p in cli_root.iterdir()) == ["onnx-fp32"]  # no scratch or partial folders left
    out = shutil.copytree(cli_root, tmp_path / "artifacts")
    folder = out / "onnx-fp32"
    expected = {"model.onnx", "model.onnx.data", "tokenizer.json", "manifest.json"}
    assert expected <= {p.name for p in folder.iterdir()}
    code = main(["--quiet", "parity", str(out), "--model", str(tiny_model),
                 "--eval", str(_eval_file(tmp_path))])
    assert code == 0
    assert read_manifest(folder).parity["verdict"] == "pass"


def test_parity_fails_an_artifact_without_its_external_data(cli_root, tiny_model, tmp_path, capsys):
    out = shutil.copytree(cli_root, tmp_path / "artifacts")
    (out / "onnx-fp32" / "model.onnx.data").unlink()
    code = main(["--quiet", "parity", str(out), "--model", str(tiny_model),
                 "--eval", str(_eval_file(tmp_path))])
    assert code == 1
    assert "model.onnx.data" in (out / "onnx-fp32" / "parity.md").read_text()
    assert read_manifest(out / "onnx-fp32").parity["verdict"] == "fail"


def test_missing_model_is_one_line_exit_1(tmp_path, capsys):
    code = main(["onnx", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 1 and "nowhere" in err and len(err.strip().splitlines()) == 1


def test_unsupported_opset_is_a_usage_error(tiny_model, tmp_path, capsys):
    code = main(["onnx", "--model", str(tiny_model), "--out", str(tmp_path), "--opset", "23"])
    assert code == 2 and "--opset" in capsys.readouterr().err


def test_format_names_from_flags():
    from rerank_export.commands.onnx import format_names

    assert format_names(None, None) == ["onnx-fp32"]
    assert format_names(None, ["int8"]) == ["onnx-int8"]
    assert format_names(["fp16", "fp32", "fp16"], ["int8"]) == ["onnx-fp16", "onnx-fp32", "onnx-int8"]
    assert format_names(None, ["int4", "int8"]) == ["onnx-int4", "onnx-int8"]


def test_int4_through_the_cli_can_keep_the_embedding_fp32(tiny_model, tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv("RERANK_EXPORT_CACHE", str(tmp_path / "cache"))  # an empty cache: the search runs here
    out = tmp_path / "artifacts"
    assert main(["--quiet", "onnx", "--model", str(tiny_model), "--out", str(out), "--quantize", "int4",
                 "--int4-fp32-embedding"]) == 0
    manifest = read_manifest(out / "onnx-int4")
    assert manifest.details["int4"]["embedding"] == "fp32" and manifest.details["awq"]["search_from"] == "this export"
    ops = {n.op_type for n in onnx.load(str(out / "onnx-int4" / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops and "GatherBlockQuantized" not in ops
