"""Activation memory of an artifact, measured in a fresh process.

In the exporting process, memory freed by earlier steps stays with the allocator and the next forward
pass reuses it, so an in-process measurement reads low. A child process that loads only the artifact and
runs one B x L batch gives the honest number: peak RSS above the RSS once the model is loaded.

    python -m rerank_export.memory ARTIFACT_DIR BATCH LENGTH   -> prints {"peak_above_loaded": bytes, ...}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .errors import ArtifactError

MEASURE_BATCH, MEASURE_LENGTH = 4, 512
# Attention makes the per-token cost grow with sequence length: measured on the real 0.6B shape (fp32),
# 1 x 2048 costs 1.4x per token what 4 x 512 does. The manifest keeps the larger of the two, so the
# estimate is not low up to 2048-token sequences (benchmarks/RESULTS.md checks it against measurement).
MEASURE_SHAPES = ((MEASURE_BATCH, MEASURE_LENGTH), (1, 2048))


def measure_peak(folder: str | Path, batch: int = MEASURE_BATCH, length: int = MEASURE_LENGTH,
                 threads: int | None = None, timeout: float = 1800) -> dict[str, int]:
    """{"loaded": RSS after loading, "peak_above_loaded": peak RSS during one batch x length pass}."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-m", "rerank_export.memory", str(folder), str(batch), str(length)],
                          capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ArtifactError(f"measuring the memory of {folder} failed: {tail}")
    return json.loads(lines[-1])


def activation_bytes_per_token(folder: str | Path) -> int:
    """The manifest's per-token activation figure: the largest per-token peak over MEASURE_SHAPES."""
    peaks = [measure_peak(folder, b, length)["peak_above_loaded"] // (b * length) for b, length in MEASURE_SHAPES]
    return max(1, *peaks)


def _child(folder: Path, batch: int, length: int) -> dict[str, int]:
    import numpy as np

    from .formats import get_format
    from .formats.common import measure_peak_above, rss_bytes
    from .manifest import read_manifest

    manifest = read_manifest(folder)
    backend = get_format(manifest.format).loader(folder, manifest, "cpu")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, size=(batch, length), dtype=np.int64)
    mask = np.ones_like(ids)
    backend.logits(ids[:1, :16], mask[:1, :16])  # lazy initialisation outside the measurement
    loaded = rss_bytes()
    peak = measure_peak_above(lambda: backend.logits(ids, mask))
    return {"loaded": loaded, "peak_above_loaded": peak, "batch": batch, "length": length}


if __name__ == "__main__":
    folder_arg, batch_arg, length_arg = sys.argv[1:4]
    print(json.dumps(_child(Path(folder_arg), int(batch_arg), int(length_arg))))
