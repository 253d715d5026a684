from __future__ import annotations

import hashlib
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
    describe_files,
    find_artifacts,
    load_artifacts,
    loader_reads,
    read_manifest,
    scratch_dir,
    verify_files,
)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "art") as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
        raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == []


WEIGHTS = b"weights"


def _artifact(folder: Path, fmt: str | None = None, **changes) -> Path:
    """A folder with a well-formed manifest of format `fmt` (default: the folder's name) listing its one
    file, model.safetensors (written beside it), as exporters list every file they write."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    files = {"model.safetensors": {"bytes": len(WEIGHTS), "sha256": hashlib.sha256(WEIGHTS).hexdigest()}}
    data = {"format": fmt or folder.name, "dtype": "bf16", "source_model": "m", "source_revision": None,
            "yes_id": 1, "no_id": 2, "max_length": 8192, "files": files,
            "memory": {"weight_bytes": 10, "overhead_bytes": 0, "activation_bytes_per_token": 1}, **changes}
    (folder / MANIFEST).write_text(json.dumps(data))
    return folder


def test_atomic_dir_replaces_an_old_artifact(tmp_path):
    old = _artifact(tmp_path / "art")
    for name in ("parity.json", "parity.md", "parity.png", "parity-vllm.json", "README.md"):  # the tool's outputs
        (old / name).write_text("old")
    with atomic_dir(tmp_path / "art") as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "art").iterdir()] == ["new"]  # no marker left inside
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


@pytest.mark.parametrize("stray", ["notes.txt", "sub/thesis.tex", ".hidden", "link"])
def test_force_never_deletes_a_file_the_manifest_does_not_list(tmp_path, stray):
    """Issue 26: --force replaced the whole folder, a user's file in it included."""
    target = _artifact(tmp_path / "art")
    path = target / stray
    path.parent.mkdir(parents=True, exist_ok=True)
    if stray == "link":
        (tmp_path / "elsewhere").write_text("precious")
        path.symlink_to(tmp_path / "elsewhere")
    else:
        path.write_text("precious")
    before = _tree(tmp_path)
    with pytest.raises(UsageError) as exc, atomic_dir(target, replace=True) as tmp:
        raise AssertionError(f"work started in {tmp}")
    assert f"holds '{stray}', not written by rerank-export" in str(exc.value)
    assert "\n" not in str(exc.value) and _tree(tmp_path) == before


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
    files = sorted([MANIFEST, "model.safetensors"])
    assert (folder / MANIFEST).read_bytes() == before and sorted(os.listdir(folder)) == files
    monkeypatch.undo()
    manifest.write(folder)
    assert read_manifest(folder).verified and sorted(os.listdir(folder)) == files
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


# --- issue 26: every file that can change a score is hashed; out-of-range fields refused ---------------

@pytest.mark.parametrize("changes, problem", [
    ({"files": {}}, "'files' is missing or empty"),
    ({"dtype": "fp64"}, "dtype 'fp64' is not what format baseline-bf16 stores (bf16)"),
    ({"format": "baseline-fp32", "dtype": "int8"}, "dtype 'int8' is not what format baseline-fp32 stores"),
    ({"max_length": 0}, "max_length 0 is out of range (1 to 1048576)"),
    ({"max_length": -1}, "max_length -1 is out of range"),
    ({"max_length": 2**40}, "max_length 1099511627776 is out of range"),
    ({"yes_id": -1}, "yes_id -1 is out of range"),
    ({"no_id": -5}, "no_id -5 is out of range"),
    ({"yes_id": 7, "no_id": 7}, "yes_id and no_id are both 7"),
])
def test_out_of_range_fields_are_refused_naming_the_field(tmp_path, changes, problem):
    _artifact(tmp_path / "baseline-bf16", **changes)
    with pytest.raises(ArtifactError, match="is not a valid manifest") as exc:
        read_manifest(tmp_path / "baseline-bf16")
    assert problem in str(exc.value) and "\n" not in str(exc.value)


def test_a_manifest_without_files_is_refused(tmp_path):
    folder = _artifact(tmp_path / "art")
    data = json.loads((folder / MANIFEST).read_text())
    del data["files"]
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="'files' is missing or empty"):
        read_manifest(folder)


def test_an_unknown_format_keeps_its_dtype_for_the_selector_to_name(tmp_path):
    assert read_manifest(_artifact(tmp_path / "onnx-fp8", dtype="fp8")).dtype == "fp8"


@pytest.mark.parametrize("name, read", [
    ("added_tokens.json", True), ("special_tokens_map.json", True), ("tokenizer.json", True),
    ("tokenizer.model", True), ("vocab.txt", True), ("merges.txt", True), ("chat_template.jinja", True),
    ("generation_config.json", True), ("model-00001-of-00002.safetensors", True), ("pytorch_model.bin", True),
    ("model.onnx", True), ("model.onnx.data", True), ("spiece.model", True), ("qwen.tiktoken", True),
    ("sub/added_tokens.json", True), ("Tokenizer_Config.JSON", True),
    ("notes.txt", False), ("SUMMARY.md", False), ("run.sh", False), ("README.md", False),
    ("manifest.json", False), ("parity.json", False), ("parity-vllm.json", False), ("parity.png", False),
    (".cache/huggingface/download/model.safetensors.metadata", False), (".gitattributes", False),
])
def test_what_a_loader_reads(name, read):
    assert loader_reads(name) is read


def _verified_folder(folder: Path, vocab: int = 10) -> tuple[Path, object]:
    """An artifact with a tokenizer.json of `vocab` tokens, hashed into its manifest."""
    folder.mkdir(parents=True)
    tokenizer = {"model": {"vocab": {f"t{i}": i for i in range(vocab - 1)}},
                 "added_tokens": [{"id": vocab - 1, "content": "<|im_end|>"}]}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    data = {"format": "baseline-bf16", "dtype": "bf16", "source_model": "m", "source_revision": None,
            "yes_id": 1, "no_id": 2, "max_length": 8192, "files": describe_files(folder),
            "memory": {"weight_bytes": 10, "overhead_bytes": 0, "activation_bytes_per_token": 1}}
    (folder / MANIFEST).write_text(json.dumps(data))
    return folder, read_manifest(folder)


@pytest.mark.parametrize("name", ["added_tokens.json", "special_tokens_map.json", "tokenizer.model",
                                  "model-extra.safetensors", "sub/config.json"])
def test_an_unlisted_file_a_loader_reads_is_refused_naming_it(tmp_path, name):
    folder, manifest = _verified_folder(tmp_path / "art")
    verify_files(folder, manifest)
    (folder / name).parent.mkdir(exist_ok=True)
    (folder / name).write_text('{"<|x|>": 9}')
    with pytest.raises(ArtifactError, match=f"holds '{name}', which its manifest does not list"):
        verify_files(folder, manifest)


def test_files_the_tool_writes_later_and_unread_files_are_accepted(tmp_path):
    folder, manifest = _verified_folder(tmp_path / "art")
    for name in ("parity.json", "parity.md", "parity.png", "parity-vllm.json", "README.md", "notes.txt",
                 ".cache/huggingface/download/tokenizer.json.metadata"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    verify_files(folder, manifest)


def test_a_listed_file_linked_from_outside_the_folder_is_refused(tmp_path):
    folder, manifest = _verified_folder(tmp_path / "art")
    (tmp_path / "elsewhere.safetensors").write_bytes(WEIGHTS)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ArtifactError, match="model.safetensors points outside"):
        verify_files(folder, manifest)


@pytest.mark.parametrize("key, value", [("yes_id", 10), ("no_id", 10**6)])
def test_yes_no_ids_beyond_the_tokenizer_are_refused(tmp_path, key, value):
    folder, manifest = _verified_folder(tmp_path / "art", vocab=10)
    setattr(manifest, key, value)
    with pytest.raises(ArtifactError, match=f"{key} {value} is beyond its tokenizer's vocabulary \\(10 tokens\\)"):
        verify_files(folder, manifest)


def test_verify_refuses_a_manifest_object_without_files(tmp_path):
    folder, manifest = _verified_folder(tmp_path / "art")
    manifest.files = {}
    with pytest.raises(ArtifactError, match="lists no files"):
        verify_files(folder, manifest)
