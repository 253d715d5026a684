import pytest

from rerank_export.errors import ArtifactError, UsageError
from rerank_export.manifest import atomic_dir, find_artifacts, read_manifest, verify_files


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "art") as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
        raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_an_old_artifact(tmp_path):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "old").write_text("old")
    with atomic_dir(tmp_path / "art") as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "art").iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


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
