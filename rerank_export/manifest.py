"""manifest.json: what an artifact is, where it came from, what it weighs and whether it passed parity.

Also the one way artifacts are written: into a temporary folder beside the target, renamed into place
only when complete, so an interrupted export never leaves a folder that looks finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import TEMPLATE_ID
from .errors import ArtifactError, UsageError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
HEAD_ROW_ORDER = "yes-minus-no"
TOOLKIT_VERSION = "0.1.0"
# Inside every temp folder we make: with the name pattern, how the next run knows the folder is ours.
PARTIAL_MARKER = ".rerank-export-partial"

log = logging.getLogger(__name__)


@dataclass
class MemoryModel:
    """Peak memory ~= weights + overhead + batch tokens x (per-token bytes + per-position growth x length).

    The growth term is attention that keeps a length x length score matrix per sequence (ONNX graphs with
    matmul attention do, and fp16 GroupQueryAttention on onnxruntime's CPU provider): their per-token cost
    rises with the sequence length. 0 where attention runs blockwise, and in manifests written before it.
    """

    weight_bytes: int
    overhead_bytes: int
    activation_bytes_per_token: int
    measured_on: str = "cpu"
    measured_at_tokens: int = 0
    activation_bytes_per_token_per_position: float = 0.0

    def __post_init__(self) -> None:
        # A hand-edited or corrupted manifest fails here, where read_manifest names the file, not in pick.
        for name in ("weight_bytes", "overhead_bytes", "activation_bytes_per_token", "measured_at_tokens",
                     "activation_bytes_per_token_per_position"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise TypeError(f"memory.{name} must be a non-negative number, not {value!r}")

    def bytes_per_token(self, length: int) -> float:
        """Activation bytes per padded token in batches of sequences up to `length` tokens."""
        return self.activation_bytes_per_token + self.activation_bytes_per_token_per_position * length

    def peak_bytes(self, length: int) -> int:
        """Peak while scoring one sequence of `length` tokens."""
        return int(self.weight_bytes + self.overhead_bytes + self.bytes_per_token(length) * length)


@dataclass
class Manifest:
    format: str
    dtype: str
    source_model: str
    source_revision: str | None
    yes_id: int
    no_id: int
    max_length: int
    memory: MemoryModel
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    template: str = TEMPLATE_ID
    # The single-logit head is W[yes] - W[no]: sigmoid(logit) = p(yes). Recorded because tools differ.
    head_row_order: str = HEAD_ROW_ORDER
    toolkit_version: str = TOOLKIT_VERSION
    schema_version: int = SCHEMA_VERSION
    created: float = field(default_factory=time.time)
    recipe: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return bool(self.parity) and self.parity.get("verdict") == "pass"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["memory"] = MemoryModel(**data["memory"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, folder: Path) -> None:
        """Replace manifest.json atomically: a reader (or a kill -9) sees the old one or the new one."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a path from undecodable argv bytes: escape it, reading gives it back
            text = json.dumps(self.to_dict(), indent=2)
        write_atomic(Path(folder) / MANIFEST, text)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, flush it to disk, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a manifest is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of an artifact folder; anything malformed is an ArtifactError naming the file."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} not found: '{folder}' is not a rerank-export artifact folder")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        problem = manifest_problem(data)
        if problem is None:
            return Manifest.from_dict(data)
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 ({exc.reason} at byte {exc.start})"
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, digit limits, absurd nesting
        problem = f"not valid JSON ({_short(exc)})"
    except (KeyError, TypeError) as exc:
        problem = _short(exc)
    except OSError as exc:
        problem = f"unreadable ({exc.strerror or exc})"
    raise ArtifactError(f"{path} is not a valid manifest: {problem}; re-export the artifact")


def _short(value: Any, limit: int = 120) -> str:
    text = str(value).splitlines()[0] if str(value) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# Required fields and what each must be; checked before any field is used (pick, serve, load, parity).
_REQUIRED: dict[str, tuple[type | tuple[type, ...], str]] = {
    "format": (str, "a string"), "dtype": (str, "a string"), "source_model": (str, "a string"),
    "yes_id": (int, "an integer"), "no_id": (int, "an integer"), "max_length": (int, "an integer"),
    "memory": (dict, "an object"),
}
_OPTIONAL: dict[str, tuple[type | tuple[type, ...], str]] = {
    "source_revision": ((str, type(None)), "a string or null"), "files": (dict, "an object"),
    "template": (str, "a string"), "recipe": (dict, "an object"), "details": (dict, "an object"),
    "parity": ((dict, type(None)), "an object or null"), "created": ((int, float), "a number"),
}
_SHA256 = re.compile(r"[0-9a-f]{64}")
# What this version knows how to score. An artifact from a newer toolkit, another prompt template or another
# head layout would load and score silently wrong, so it is refused with what was found.
_KNOWN_VALUES: dict[str, tuple[Any, ...]] = {"template": (TEMPLATE_ID,), "head_row_order": (HEAD_ROW_ORDER,)}


def manifest_problem(data: Any) -> str | None:
    """What is wrong with a parsed manifest.json (one phrase), or None when it is well-formed."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    for key, (kind, what) in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in data:
            if key in _REQUIRED:
                return f"'{key}' is missing"
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"'{key}' must be {what}, not {_short(repr(value), 40)}"
    return (_contract_problem(data) or _memory_problem(data["memory"]) or _range_problem(data)
            or _files_problem(data.get("files")))


def _contract_problem(data: dict[str, Any]) -> str | None:
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        return (f"schema_version {_short(repr(version), 20)} is not one this rerank-export reads "
                f"(1 to {SCHEMA_VERSION}); upgrade rerank-export or re-export")
    for key, known in _KNOWN_VALUES.items():
        if key in data and data[key] not in known:
            return f"{key} {_short(repr(data[key]), 40)} is not one this version knows ({', '.join(known)})"
    return None


def _memory_problem(memory: dict[str, Any]) -> str | None:
    try:
        MemoryModel(**memory)
    except TypeError as exc:  # a missing, unknown or negative field
        return _short(exc)
    return None


def _range_problem(data: dict[str, Any]) -> str | None:
    """Values of the right type that no artifact of ours can have: each would fail (or score wrong) later."""
    from .contract import MAX_LENGTH_LIMIT

    if not 1 <= data["max_length"] <= MAX_LENGTH_LIMIT:
        return f"max_length {data['max_length']} is out of range (1 to {MAX_LENGTH_LIMIT})"
    for key in ("yes_id", "no_id"):
        if data[key] < 0:
            return f"{key} {data[key]} is out of range (token ids start at 0)"
    if data["yes_id"] == data["no_id"]:
        return f"yes_id and no_id are both {data['yes_id']} (the head would score every pair 0.5)"
    return _dtype_problem(data["format"], data["dtype"])


def _dtype_problem(name: str, dtype: str) -> str | None:
    """A known format stores one dtype; a manifest saying another contradicts itself (its loader would
    fail on it). An unknown format is left to the selector, which passes it over naming it."""
    from .formats import FORMATS  # the formats import this module

    spec = FORMATS.get(name)
    if spec is not None and dtype != spec.dtype:
        return f"dtype {_short(repr(dtype), 40)} is not what format {name} stores ({spec.dtype})"
    return None


def _files_problem(files: dict[str, Any] | None) -> str | None:
    if not files:  # nothing to check the weights against: a flipped byte would load
        return "'files' is missing or empty (it lists every file of the artifact with its sha256)"
    for name, info in files.items():
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts:
            return f"files entry {name!r} is not a path inside the artifact"
        if not isinstance(info, dict):
            return f"files[{name!r}] must be an object with bytes and sha256"
        size, digest = info.get("bytes"), info.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return f"files[{name!r}].bytes must be a non-negative integer, not {_short(repr(size), 40)}"
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            return f"files[{name!r}].sha256 must be 64 hex digits, not {_short(repr(digest), 40)}"
    return None


def find_artifacts(root: str | Path) -> list[Path]:
    """Artifact folders directly under `root` (or `root` itself when it is one), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ArtifactError(f"artifacts folder '{root}' {what}")
    if (root / MANIFEST).is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))


def load_artifacts(root: str | Path) -> list[tuple[Path, Manifest]]:
    """(folder, manifest) of every readable artifact under `root`; a broken one is skipped with a warning.

    `root` itself being an artifact with a broken manifest is an error: there is nothing else to use.
    """
    folders = find_artifacts(root)
    found, skipped = [], []
    for folder in folders:
        try:
            found.append((folder, read_manifest(folder)))
        except ArtifactError as exc:
            if folders == [Path(root)]:
                raise
            log.warning("skipping %s: %s", folder, exc)
            skipped.append(folder.name)
    if not found:
        extra = f" (skipped, broken: {', '.join(skipped)})" if skipped else ""
        raise ArtifactError(f"no artifact folders (with manifest.json) under '{root}'{extra}")
    return found


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# What the tool writes into an artifact after hashing it (manifest, parity reports, card) and the marker of
# an unfinished swap: never hashed, read by no loader, always the tool's to replace.
_TOOL_OUTPUT = re.compile(r"manifest\.json|README\.md|parity(?:-[A-Za-z0-9_]+)?\.(?:json|md|png)|"
                          + re.escape(PARTIAL_MARKER))
# What transformers, tokenizers, onnxruntime or vLLM read from a model folder, by fixed name or by pattern:
# configs and tokenizer tables (an added_tokens.json or special_tokens_map.json changes the token ids),
# chat templates, weights in every layout they accept, ONNX graphs and their external data, sentencepiece
# and tiktoken models, BPE vocabularies and merges. Matched on the lower-cased file name.
LOADER_READ_PATTERNS = ("*.json", "*.jinja", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5",
                        "*.msgpack", "*.gguf", "*.onnx*", "*.ort", "*.model", "*.spm", "*.tiktoken",
                        "tokenizer*", "vocab*", "merges*", "chat_template*", "spiece*", "sentencepiece*")


def is_tool_output(name: str) -> bool:
    """True for a file (relative path) the tool writes into an artifact after its files were hashed."""
    return _TOOL_OUTPUT.fullmatch(name) is not None


def loader_reads(name: str) -> bool:
    """Whether a model loader could read the file at `name` (relative path) and score differently for it.

    Hidden files and folders (.git, huggingface_hub's .cache of a download) are read by none of them.
    """
    parts = Path(name).parts
    if any(p.startswith(".") for p in parts) or is_tool_output(name):
        return False
    return any(fnmatch.fnmatchcase(parts[-1].lower(), p) for p in LOADER_READ_PATTERNS)


def folder_files(folder: Path) -> list[str]:
    """Every entry under `folder` that is not a folder (symlinks included, not followed), relative, sorted."""
    found = []
    for top, dirs, files in os.walk(folder):
        here = Path(top).relative_to(folder)
        found += [str(here / n) for n in files]
        found += [str(here / d) for d in dirs if os.path.islink(os.path.join(top, d))]
    return sorted(found)


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """bytes and sha256 of every file in the artifact except the manifest, parity outputs and card."""
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
            for name in folder_files(folder) if not is_tool_output(name) and (folder / name).is_file()}


def verify_files(folder: str | Path, manifest: Manifest) -> None:
    """Refuse an artifact that is not exactly what its manifest lists: a listed file missing, changed (a
    flipped byte) or outside the folder; an unlisted file a loader would read (an added_tokens.json changes
    every score); yes/no ids beyond its tokenizer's vocabulary."""
    folder = Path(folder)
    if not manifest.files:
        raise ArtifactError(f"{folder / MANIFEST} lists no files, so nothing can be checked; re-export the artifact")
    for name, info in manifest.files.items():
        _verify_file(folder, name, info)
    unlisted = [n for n in folder_files(folder) if n not in manifest.files and loader_reads(n)]
    if unlisted:
        raise ArtifactError(f"{folder} holds {_names(unlisted)}, which its manifest does not list and a loader "
                            "would read (it can change every score); remove it or re-export the artifact")
    _check_token_ids(folder, manifest)


def _verify_file(folder: Path, name: str, info: dict[str, Any]) -> None:
    path = folder / name
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the artifact is incomplete; rebuild it")
    if not path.resolve().is_relative_to(folder.resolve()):  # onnxruntime refuses such external data
        raise ArtifactError(f"{path} points outside {folder}: an artifact's files must be inside it; copy the "
                            "file in or rebuild the artifact")
    if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
        raise ArtifactError(f"{path} does not match its sha256 in the manifest: corrupted; rebuild it")


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_token_ids(folder: Path, manifest: Manifest) -> None:
    """yes_id and no_id must be tokens of the (hashed) tokenizer: an id past its end fails only at load."""
    size = vocabulary_size(folder, manifest.files)
    for key in ("yes_id", "no_id"):
        value = getattr(manifest, key)
        if size is not None and not 0 <= value < size:
            raise ArtifactError(f"{folder / MANIFEST}: {key} {value} is beyond its tokenizer's vocabulary "
                                f"({size} tokens); re-export the artifact")


def vocabulary_size(folder: Path, files: dict[str, Any]) -> int | None:
    """1 + the largest token id of the artifact's tokenizer.json (vocabulary and added tokens); None without one."""
    if "tokenizer.json" not in files:
        return None
    path = folder / "tokenizer.json"
    try:
        data = json.loads(path.read_bytes())
        vocab = data["model"]["vocab"]
        ids = list(vocab.values()) if isinstance(vocab, dict) else [len(vocab) - 1]  # Unigram: a list
        ids += [token["id"] for token in data.get("added_tokens") or []]
        return int(max(ids)) + 1
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path} is not a readable tokenizer ({_short(exc)}); rebuild the artifact") from exc


# Given a folder, the files an earlier artifact of ours there consists of; None when it is not ours.
OwnedFiles = Callable[[Path], "set[str] | None"]


def artifact_files(folder: Path) -> set[str] | None:
    """The files of an earlier artifact of ours at `folder`: those its manifest lists and the tool's outputs
    (manifest, parity reports, card). None when its manifest is unreadable or names another format than the
    folder (what our exporters write is always named after its format)."""
    try:
        manifest = read_manifest(folder)
    except ArtifactError:
        return None
    if manifest.format != folder.name:
        return None
    return set(manifest.files) | {n for n in folder_files(folder) if is_tool_output(n)}


def check_target(target: Path, owned: OwnedFiles = artifact_files, replace: bool = True,
                 kind: str = "rerank-export artifact") -> None:
    """Refuse a target that holds anything but an earlier `kind` of ours (that one only with `replace`).

    What `owned(target)` lists is replaced; any other file there is named and refused, --force or not:
    replacing the folder would delete it.
    """
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise UsageError(f"'{target}' exists and is not a folder: nothing was written; choose another "
                         "--out or move it away")
    try:
        if not any(target.iterdir()):
            return  # nothing in it to lose
    except OSError as exc:
        raise UsageError(f"cannot read '{target}': {exc.strerror or exc}") from exc
    ours = owned(target)
    if ours is None:
        raise UsageError(f"'{target}' exists and is not a {kind}{_why_not_ours(target)}: nothing was written; "
                         "choose another --out or move it away")
    strays = [n for n in folder_files(target) if n not in ours and n != PARTIAL_MARKER]  # marker: a killed swap
    if strays:
        raise UsageError(f"'{target}' holds {_names(strays)}, not written by rerank-export: nothing was written; "
                         "move it away (--force replaces only what rerank-export wrote there)")
    if not replace:
        raise UsageError(f"'{target}' already holds a {kind}; pass --force to replace it")


def _why_not_ours(target: Path) -> str:
    """The reason a folder with a manifest.json is still not ours to replace, for the error message."""
    if not (target / MANIFEST).is_file():
        return ""
    try:
        manifest = read_manifest(target)
    except ArtifactError as exc:
        return f" ({exc})"
    return f" (its manifest is for {manifest.format})"


@contextlib.contextmanager
def atomic_dir(target: str | Path, replace: bool = True, owned: OwnedFiles = artifact_files,
               kind: str = "rerank-export artifact") -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success put it at `target`, else delete it.

    An existing `target` is replaced only when it is an earlier `kind` of ours holding nothing but the
    files it lists (`owned(target)`) and `replace` is set; anything else there is an error, checked before
    the work and again before the swap.
    """
    target = Path(os.path.abspath(target))  # "." and ".." have no name to put a temp folder beside
    check_target(target, owned, replace, kind)
    tmp = make_marked_dir(target.parent, f".{target.name}.partial-")
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; an artifact is meant to be shared
        (tmp / PARTIAL_MARKER).unlink(missing_ok=True)
        check_target(target, owned, replace, kind)
        _swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, target: Path) -> None:
    if not target.exists() or not any(target.iterdir()):
        tmp.rename(target)  # rename(2) replaces an empty folder
        return
    _write_marker(target)  # so a kill between the two renames leaves a folder the next run recognises
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(parent: str | Path, prefix: str) -> Iterator[Path]:
    """A marked temp folder in `parent` for intermediate files, deleted on exit (or by the next run)."""
    tmp = make_marked_dir(Path(parent), prefix)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_marked_dir(parent: Path, prefix: str) -> Path:
    """mkdtemp in `parent` with our marker in it, after clearing what interrupted runs left there."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(parent)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        _write_marker(tmp)
    except OSError as exc:
        raise UsageError(f"cannot write to '{parent}': {exc.strerror or exc}") from exc
    return tmp


def _write_marker(folder: Path) -> None:
    (folder / PARTIAL_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


# Temp folders our writers make: "<.name>.partial-XXXX" (atomic_dir), ".onnx-export-XXXX" (scratch_dir)
# and "<.name>.old-PID" (the previous artifact during the swap). Only these names, with our marker inside
# and the process that wrote it gone, are ever touched.
_LEFTOVER = re.compile(r"\.(?:.+\.partial-|onnx-export-)[A-Za-z0-9_]+")
_OLD = re.compile(r"\.(?P<name>.+)\.old-[0-9]+")


def clean_leftovers(parent: Path) -> list[Path]:
    """Remove what interrupted exports of ours left in `parent`; an orphaned previous artifact is put back."""
    removed = []
    for path in sorted(parent.iterdir()):
        old = _OLD.fullmatch(path.name)
        if not (_LEFTOVER.fullmatch(path.name) or old) or not _abandoned(path / PARTIAL_MARKER):
            continue
        target = parent / old.group("name") if old else None
        if target is not None and not os.path.lexists(target):
            (path / PARTIAL_MARKER).unlink()
            path.rename(target)
            log.warning("restored %s from %s (an interrupted export was replacing it)", target, path.name)
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left by an interrupted export", path)
        removed.append(path)
    return removed


def _abandoned(marker: Path) -> bool:
    """True when `marker` is ours and the process that wrote it, on this host, is gone."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid() or info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False
