"""A root serves what is valid: an artifact that fails a check loading makes, or fails to load at all, is
passed over with a warning naming it, and the next valid one is chosen by `pick` and served by `load()`."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

import rerank_export
from rerank_export.cli import main
from rerank_export.manifest import read_manifest, sha256_file

pytestmark = pytest.mark.needs_fixtures


def _root_with(verified_artifacts, copy_tree, break_it) -> tuple:
    """The verified root plus `aa-broken`, a copy of baseline-fp32 broken by `break_it` and listed with
    fewer weight bytes, so the selector ranks it first."""
    root = copy_tree(verified_artifacts)
    shutil.rmtree(root / "baseline-bf16")  # one valid artifact left: the fallback must reach it
    broken = root / "aa-broken"
    shutil.copytree(root / "baseline-fp32", broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["memory"]["weight_bytes"] //= 2
    break_it(broken, manifest)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    return root, broken


def _wrong_yes_id(folder, manifest):
    manifest["yes_id"] = manifest["no_id"] + 1  # in the vocabulary, but not the tokenizer's "yes"


def _unloadable_config(folder, manifest):
    """A config that passes every file check (re-hashed, as a faulty exporter would) but cannot load."""
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"] = 3  # hidden size not divisible: transformers refuses at load
    (folder / "config.json").write_text(json.dumps(config))
    manifest["files"]["config.json"] = {"bytes": (folder / "config.json").stat().st_size,
                                        "sha256": sha256_file(folder / "config.json")}


@pytest.mark.parametrize("break_it,why", [(_wrong_yes_id, "yes/no ids"), (_unloadable_config, "failed to load")])
def test_a_broken_artifact_is_passed_over_for_the_next(verified_artifacts, copy_tree, caplog, capsys,
                                                       break_it, why):
    root, broken = _root_with(verified_artifacts, copy_tree, break_it)
    with caplog.at_level(logging.WARNING):
        reranker = rerank_export.load(root, device="cpu", memory_budget="8GiB")
    assert reranker.folder.name == "baseline-fp32"
    assert any("aa-broken" in r.getMessage() and "passing over" in r.getMessage() for r in caplog.records)
    assert reranker.score([("q", "d")])[0] == pytest.approx(
        rerank_export.load(root / "baseline-fp32", device="cpu").score([("q", "d")])[0])
    if why == "yes/no ids":  # pick runs the same checks: it never names what load() would refuse
        assert main(["pick", str(root), "--device", "cpu", "--memory", "8GiB"]) == 0
        out = capsys.readouterr().out
        assert "choice: baseline-fp32" in out and why in out
    assert read_manifest(broken).format == "baseline-fp32"  # nothing of the user's was touched


def test_a_root_of_one_broken_artifact_says_why(verified_artifacts, copy_tree, capsys):
    root, _ = _root_with(verified_artifacts, copy_tree, _wrong_yes_id)
    shutil.rmtree(root / "baseline-fp32")
    assert main(["pick", str(root), "--device", "cpu", "--memory", "8GiB"]) == 1
    out = capsys.readouterr().out
    assert "choice: none" in out and "yes/no ids" in out
