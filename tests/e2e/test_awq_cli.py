"""`rerank-export awq` end to end through the real CLI: export, parity gate, one-line errors."""

from __future__ import annotations

import json

import pytest

from rerank_export.cli import main
from rerank_export.manifest import read_manifest

pytestmark = pytest.mark.needs_fixtures


def test_awq_export_then_parity(tiny_model, tmp_path, capsys):
    out = tmp_path / "artifacts"
    code = main(["-q", "awq", "--model", str(tiny_model), "--out", str(out), "--calib-samples", "16",
                 "--calib-max-length", "256", "--no-clip"])
    assert code == 0
    assert str(out / "awq-int4") in capsys.readouterr().out
    manifest = read_manifest(out / "awq-int4")
    assert manifest.details["search"]["clip"] is False
    assert manifest.details["calibration"]["samples"] == 16
    cfg = json.loads((out / "awq-int4" / "config.json").read_text())
    assert cfg["quantization_config"]["version"] == "gemm"
    assert main(["-q", "parity", str(out), "--model", str(tiny_model)]) == 0
    assert read_manifest(out / "awq-int4").verified


def test_missing_calibration_file_is_one_line(tiny_model, tmp_path, capsys):
    code = main(["-q", "awq", "--model", str(tiny_model), "--out", str(tmp_path), "--calib", "nope.jsonl"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "nope.jsonl" in err
    assert not (tmp_path / "awq-int4").exists()


def test_group_size_that_does_not_divide_is_a_usage_error(tiny_model, tmp_path, capsys):
    code = main(["-q", "awq", "--model", str(tiny_model), "--out", str(tmp_path), "--group-size", "96"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--group-size 96" in err and err.count("\n") == 0


def test_bad_w_bit_is_a_usage_error(tiny_model, tmp_path, capsys):
    code = main(["awq", "--model", str(tiny_model), "--out", str(tmp_path), "--w-bit", "3"])
    assert code == 2 and "--w-bit" in capsys.readouterr().err
