from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_export.errors import ArtifactError, UsageError
from rerank_export.manifest import (
    MANIFEST,
    PARTIAL_MARKER,
    atomic_dir,
    clean_leftovers,
    find_artifacts,
    load_artifacts,
    read_manifest,
    scratch_dir,
    verify_files,
)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "art") as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
        raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == []


def _artifact(folder: Path, fmt: str | None = None, **changes) -> Path:
    """A folder with a well-formed manifest (no files) of format `fmt` (default: the folder's name)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format": fmt or folder.name, "dtype": "bf16", "source_model": "m", "source_revision": None,
            "yes_id": 1, "no_id": 2, "max_length": 8192, "files": {},
            "memory": {"weight_bytes": 10, "overhead_bytes": 0, "activation_bytes_per_token": 1}, **changes}
    (folder / MANIFEST).write_text(json.dumps(data))
    return folder


def test_atomic_dir_replaces_an_old_artifact(tmp_path):
    (_artifact(tmp_path / "art") / "old").write_text("old")
    with atomic_dir(tmp_path / "art") as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "art").iterdir()] == ["new"]  # no marker left inside
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


@pytest.mark.parametrize("make", ["folder", "file", "other-format", "broken-manifest"])
def test_atomic_dir_never_replaces_what_is_not_ours(tmp_path, make):
    target = tmp_path / "art"
    if make == "file":
        target.write_text("precious")
    elif make == "folder":
        target.mkdir()
        (target / "thesis.tex").write_text("precious")
    else:
        _artifact(target, "onnx-int8" if make == "other-format" else None)
        if make == "broken-manifest":
            (target / MANIFEST).write_text('"a string"')
    before = _tree(tmp_path)
    with pytest.raises(UsageError, match="nothing was written"), atomic_dir(target) as tmp:
        raise AssertionError(f"work started in {tmp}")  # refused before any work
    assert _tree(tmp_path) == before


def test_atomic_dir_asks_for_force_and_fills_an_empty_folder(tmp_path):
    _artifact(tmp_path / "art")
    with pytest.raises(UsageError, match="pass --force"), atomic_dir(tmp_path / "art", replace=False):
        pass
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty", replace=False) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["new"]


def test_atomic_dir_rechecks_the_target_before_the_swap(tmp_path):
    target = tmp_path / "art"
    with pytest.raises(UsageError, match="nothing was written"), atomic_dir(target) as tmp:
        (tmp / "new").write_text("new")
        target.mkdir()
        (target / "appeared-meanwhile").write_text("x")
    assert [p.name for p in target.iterdir()] == ["appeared-meanwhile"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_unwritable_parent_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot write to"), atomic_dir(blocker / "art"):
        pass


@pytest.mark.needs_fixtures
def test_a_flipped_byte_is_caught_naming_the_file(baseline_artifacts, copy_tree):
    folder = copy_tree(baseline_artifacts / "baseline-bf16")
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.safetensors does not match its sha256"):
        verify_files(folder, manifest)


def test_missing_manifest_and_root(tmp_path):
    with pytest.raises(ArtifactError, match="not a rerank-export artifact"):
        read_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        find_artifacts(tmp_path / "nope")


GOOD_FILE = {"bytes": 3, "sha256": "0" * 64}


@pytest.mark.parametrize("content, problem", [
    (b'{"format": "\xff"}', "not UTF-8"),
    (b'"just a string"', "expected a JSON object, got str"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b"{" * 5000, "not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    (b'{"format": NaN', "not valid JSON"),
])
def test_unreadable_manifests_are_one_line_errors_naming_the_file(tmp_path, content, problem):
    (tmp_path / MANIFEST).write_bytes(content)
    with pytest.raises(ArtifactError) as exc:
        read_manifest(tmp_path)
    message = str(exc.value)
    assert str(tmp_path / MANIFEST) in message and problem in message and "\n" not in message


@pytest.mark.parametrize("changes, problem", [
    ({"files": {"model.safetensors": {"sha256": "0" * 64}}}, "files['model.safetensors'].bytes must be"),
    ({"files": ["model.safetensors"]}, "'files' must be an object, not ['model.safetensors']"),
    ({"files": {"model.safetensors": 3}}, "files['model.safetensors'] must be an object"),
    ({"files": {"m": {"bytes": True, "sha256": "0" * 64}}}, "files['m'].bytes must be a non-negative integer"),
    ({"files": {"m": {"bytes": 3, "sha256": "xyz"}}}, "files['m'].sha256 must be 64 hex digits"),
    ({"files": {"../../etc/passwd": GOOD_FILE}}, "is not a path inside the artifact"),
    ({"files": {"/etc/passwd": GOOD_FILE}}, "is not a path inside the artifact"),
    ({"format": 3}, "'format' must be a string, not 3"),
    ({"yes_id": "1"}, "'yes_id' must be an integer"),
    ({"parity": "pass"}, "'parity' must be an object or null"),
    ({"memory": {"weight_bytes": "big", "overhead_bytes": 0, "activation_bytes_per_token": 1}}, "weight_bytes"),
    ({"memory": {"weight_bytes": 1}}, "activation_bytes_per_token"),
    # What this version cannot score correctly: a newer schema, another prompt template or head layout.
    ({"schema_version": 2}, "schema_version 2 is not one this rerank-export reads (1 to 1)"),
    ({"schema_version": "1"}, "schema_version '1' is not one this rerank-export reads"),
    ({"template": "qwen3-reranker-v2"}, "template 'qwen3-reranker-v2' is not one this version knows"),
    ({"template": ""}, "template '' is not one this version knows"),
    ({"head_row_order": "no-minus-yes"}, "head_row_order 'no-minus-yes' is not one this version knows"),
])
def test_malformed_fields_are_named(tmp_path, changes, problem):
    _artifact(tmp_path / "art", **changes)
    with pytest.raises(ArtifactError, match="is not a valid manifest") as exc:
        read_manifest(tmp_path / "art")
    assert problem in str(exc.value)


def test_a_missing_field_is_named(tmp_path):
    folder = _artifact(tmp_path / "art")
    data = json.loads((folder / MANIFEST).read_text())
    del data["yes_id"]
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="'yes_id' is missing"):
        read_manifest(folder)


def test_one_broken_artifact_is_skipped_with_a_warning_naming_it(tmp_path, caplog):
    _artifact(tmp_path / "baseline-bf16")
    (_artifact(tmp_path / "onnx-int8") / MANIFEST).write_bytes(b"\xff\xfe")
    with caplog.at_level(logging.WARNING, logger="rerank_export.manifest"):
        found = load_artifacts(tmp_path)
    assert [f.name for f, _ in found] == ["baseline-bf16"]
    assert any("skipping" in r.message and "onnx-int8" in r.message for r in caplog.records)
    (tmp_path / "baseline-bf16" / MANIFEST).write_text("{}")
    with pytest.raises(ArtifactError, match=r"no artifact folders .* \(skipped, broken: baseline-bf16, onnx-int8\)"):
        load_artifacts(tmp_path)
    with pytest.raises(ArtifactError, match="is not a valid manifest"):  # the root itself: nothing else to use
        load_artifacts(tmp_path / "onnx-int8")


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    folder = _artifact(tmp_path / "art")
    manifest = read_manifest(folder)
    before = (folder / MANIFEST).read_bytes()
    manifest.parity = {"verdict": "pass"}

    def interrupted(src, dst):
        raise KeyboardInterrupt  # killed between writing the temp file and the rename

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        manifest.write(folder)
    assert (folder / MANIFEST).read_bytes() == before and os.listdir(folder) == [MANIFEST]
    monkeypatch.undo()
    manifest.write(folder)
    assert read_manifest(folder).verified and os.listdir(folder) == [MANIFEST]
    assert oct((folder / MANIFEST).stat().st_mode & 0o777) == "0o644"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(parent: Path, name: str, pid: int | None, host: str | None = None) -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "model.onnx.data").write_bytes(b"x" * 100)
    if pid is not None:
        (folder / PARTIAL_MARKER).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))
    return folder


def test_leftovers_of_a_dead_export_are_removed_and_only_those(tmp_path):
    dead = _dead_pid()
    gone = [_leftover(tmp_path, ".onnx-export-abc123", dead), _leftover(tmp_path, ".onnx-int8.partial-x_y", dead)]
    kept = [_leftover(tmp_path, ".onnx-export-running", os.getppid()),  # its process is alive
            _leftover(tmp_path, ".onnx-export-nomarker", None),  # not recognisably ours
            _leftover(tmp_path, ".onnx-export-elsewhere", dead, host="another-host"),
            _leftover(tmp_path, "onnx-export-abc", dead),  # not our name
            _leftover(tmp_path, ".mine.partial", dead)]
    with scratch_dir(tmp_path, ".onnx-export-") as scratch:  # the next export to the same place
        assert (scratch / PARTIAL_MARKER).is_file()
    assert not any(p.exists() for p in gone) and not scratch.exists()
    assert all(p.is_dir() for p in kept)


def test_a_previous_artifact_orphaned_mid_swap_is_restored(tmp_path):
    old = _leftover(tmp_path, ".baseline-bf16.old-123", _dead_pid())
    _leftover(tmp_path, ".onnx-int8.old-124", _dead_pid())
    _artifact(tmp_path / "onnx-int8")
    clean_leftovers(tmp_path)
    assert not old.exists() and (tmp_path / "baseline-bf16" / "model.onnx.data").is_file()
    assert not (tmp_path / "baseline-bf16" / PARTIAL_MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline-bf16", "onnx-int8"]


def test_a_path_from_undecodable_bytes_round_trips(tmp_path):
    manifest = read_manifest(_artifact(tmp_path / "art"))
    manifest.source_model = "/models/caf\udce9"  # what Python makes of b"caf\xe9" in argv
    manifest.write(tmp_path / "art")
    assert read_manifest(tmp_path / "art").source_model == "/models/caf\udce9"
