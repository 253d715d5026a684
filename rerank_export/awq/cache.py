"""The AWQ search cache, shared by awq-int4 and onnx-int4: the search is most of either export's time.

A result is keyed by the source's weights (a digest of every decoder tensor, not its name: a local folder
can be rebuilt in place), the search settings and the calibration prompts' token ids, and lives in
$RERANK_EXPORT_CACHE/awq-search/<key>/ (default ~/.cache/rerank-export), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .search import AWQResult, SearchSettings, search

log = logging.getLogger(__name__)

CACHE_ENV = "RERANK_EXPORT_CACHE"
RESULT_FILE = "search.safetensors"


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rerank-export"
    return Path(base) / "awq-search"


def weights_digest(module: Any) -> str:
    """sha256 over every parameter's name, shape, dtype and bytes (about a second per GB)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(flat.cpu().numpy()))
    return digest.hexdigest()


def search_key(source: Any, settings: SearchSettings, calib: Any) -> str:
    """The cache key: the weights, the settings, and the calibration prompts' token ids themselves (an
    edited calibration file of the same size is another calibration set)."""
    prompts = hashlib.sha256(json.dumps(calib.input_ids).encode()).hexdigest()
    what = {"weights": weights_digest(source.lm.model), "settings": asdict(settings), "calibration": prompts}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def cached_search(source: Any, settings: SearchSettings, calib: Any, progress: bool,
                  device: str = "cpu") -> tuple[AWQResult, dict]:
    """The AWQ search of the source's decoder for these settings and calibration: from the cache when it
    holds one, else run (and stored). Returns the result and its provenance for the manifest."""
    key = search_key(source, settings, calib)
    path = cache_root() / key / RESULT_FILE
    provenance = {"search": asdict(settings), "calibration": calib.describe(), "cache_key": key}
    if path.is_file():
        try:
            result = AWQResult.load(path)
            log.info("AWQ: reusing the cached search %s", path.parent)
            return result, {**provenance, "search_from": "cache"}
        except Exception as exc:  # noqa: BLE001 (safetensors, json and key errors share no base) search again
            log.warning("AWQ: ignoring the unreadable cached search %s (%s)", path, exc)
    start = time.perf_counter()
    result = search(source.lm.model, calib.input_ids, source.contract.pad_id, settings, progress=progress,
                    device=device)
    seconds = time.perf_counter() - start
    _store(result, path)
    return result, {**provenance, "search_from": "this export", "search_device": device,
                    "search_seconds": round(seconds, 1),
                    "search_summary": result.summary()}


def _store(result: AWQResult, path: Path) -> None:
    """Write beside the final name, then rename: a reader never sees half a file. A cache that cannot be
    written (read-only home, full disk) only costs the next export its time."""
    tmp = path.with_name(f".{RESULT_FILE}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        result.save(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("AWQ: could not cache the search in %s (%s)", path.parent, exc)
        tmp.unlink(missing_ok=True)
