"""The real CLI on a tiny model: tiny -> baseline -> parity, broken artifacts, and every user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from rerank_export.cli import main
from rerank_export.manifest import describe_files, read_manifest

from ..conftest import QWEN_TOKENIZER

pytestmark = pytest.mark.needs_fixtures


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rerank_export", "--quiet", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def test_tiny_baseline_parity_pass_end_to_end(tmp_path):
    model, out = tmp_path / "tiny", tmp_path / "artifacts"
    assert cli("tiny", "--out", str(model), "--tokenizer", str(QWEN_TOKENIZER)).returncode == 0
    done = cli("baseline", "--model", str(model), "--out", str(out), "--dtype", "bf16", "--dtype", "fp32")
    assert done.returncode == 0, done.stderr
    done = cli("parity", str(out), "--model", str(model))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| baseline-bf16 | PASS |" in done.stdout and "| baseline-fp32 | PASS |" in done.stdout
    for name in ("baseline-bf16", "baseline-fp32"):
        manifest = read_manifest(out / name)
        assert manifest.verified and manifest.parity["eval_sets"] == ["builtin"]
        assert {"parity.json", "parity.md", "parity.png"} <= {p.name for p in (out / name).iterdir()}


def _swap_yes_no(folder: Path) -> None:
    """Negate the head row (= W[no] - W[yes]) and re-hash, so only parity can tell."""
    weights = load_file(folder / "model.safetensors")
    weights["score.weight"] = -weights["score.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    manifest = read_manifest(folder)
    manifest.files = describe_files(folder)
    manifest.write(folder)


def test_swapped_head_fails_parity_naming_every_metric(tiny_model, baseline_artifacts, copy_tree, capsys):
    root = copy_tree(baseline_artifacts, "artifacts")
    _swap_yes_no(root / "baseline-bf16")
    code = main(["--quiet", "parity", str(root), "--model", str(tiny_model)])
    out, err = capsys.readouterr()
    assert code == 1 and "parity FAILED for baseline-bf16" in err
    assert "| baseline-fp32 | PASS |" in out and "| baseline-bf16 | **FAIL** |" in out
    for metric in ("max_abs_dp", "spearman_mean", "kendall_mean", "top1_mean", "ndcg10_vs_reference_mean"):
        assert f"baseline-bf16: breached {metric}" in out
    parity = json.loads((root / "baseline-bf16" / "parity.json").read_text())
    assert parity["verdict"] == "fail" and read_manifest(root / "baseline-bf16").parity["verdict"] == "fail"


def _one_line_error(capsys, code: int, expected_code: int, fragment: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == expected_code, err
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert "Traceback" not in err


def test_missing_model_folder(tmp_path, capsys):
    code = main(["baseline", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "a")])
    _one_line_error(capsys, code, 1, "does not exist")
    assert not (tmp_path / "a").exists()


def test_folder_that_is_not_a_qwen3_reranker(tmp_path, capsys):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code = main(["baseline", "--model", str(tmp_path / "bert"), "--out", str(tmp_path / "a")])
    _one_line_error(capsys, code, 1, "not a Qwen3 reranker")


def test_hub_id_offline_says_how_to_pass_a_folder(tmp_path):
    # A fresh process: huggingface_hub reads HF_HUB_OFFLINE when it is imported, so setting it in this one
    # after an earlier test imported the hub would not take (the export would retry the network instead).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "rerank_export", "baseline", "--model", "Qwen/Qwen3-Reranker-0.6B",
                           "--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env=env, check=False)
    err = done.stderr.strip()
    assert done.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "pass a local folder with --model" in err and not (tmp_path / "a").exists()


def test_parity_rejects_bad_eval_files(tiny_model, baseline_artifacts, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    code = main(["parity", str(baseline_artifacts), "--model", str(tiny_model), "--eval", str(bad)])
    _one_line_error(capsys, code, 1, "bad.jsonl:1 is not valid JSON")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code = main(["parity", str(baseline_artifacts), "--model", str(tiny_model), "--eval", str(empty)])
    _one_line_error(capsys, code, 1, "has no (query, document) pairs")


def test_unwritable_out_and_usage_errors(tiny_model, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["baseline", "--model", str(tiny_model), "--out", str(blocker / "sub")])
    _one_line_error(capsys, code, 2, "cannot write to")
    code = main(["baseline", "--model", str(tiny_model), "--out", str(tmp_path), "--dtype", "int3"])
    _one_line_error(capsys, code, 2, "invalid choice: 'int3'")
    code = main(["parity", str(tmp_path), "--thresholds", str(tmp_path / "missing.json")])
    _one_line_error(capsys, code, 2, "thresholds file")
