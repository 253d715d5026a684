"""The measure stage: activation memory of a written artifact, measured in a fresh process, and the RSS
helpers it (and the benchmarks) read.

In the exporting process, memory freed by earlier steps stays with the allocator and the next forward
pass reuses it, so an in-process measurement reads low. A child process that loads only the artifact and
runs one B x L batch gives the honest number: peak RSS above the RSS once the model is loaded.

    python -m rerank_export.memory ARTIFACT_DIR BATCH LENGTH   -> prints {"peak_above_loaded": bytes, ...}
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArtifactError

if TYPE_CHECKING:
    from .manifest import Manifest

MEASURE_BATCH, MEASURE_LENGTH = 4, 512
# Attention can make the per-token cost grow with sequence length. On the real 0.6B shape PyTorch's (CPU)
# per-token peak is flat past 2048 tokens (105 KiB at 1 x 2048, 71 KiB at 1 x 4096, 56 KiB at 1 x 8192),
# onnxruntime's matmul-attention graphs kept length x length scores (927 KiB at 1 x 2048, 1,313 KiB at
# 1 x 4096, 2,487 KiB at 1 x 8192), and its fused-attention graphs still rise slowly (41.8, 48.9, 53.3 KiB).
# Two single-sequence lengths show the growth; a short batch guards the constant.
MEASURE_SHAPES = ((MEASURE_BATCH, MEASURE_LENGTH), (1, 2048), (1, 4096))
GROWTH = 1.25  # per-token cost ratio, longer rows against shorter, that counts as attention's growth


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kb("VmHWM") * 1024


def _status_kb(key: str) -> int:
    """A field of /proc/self/status in KiB (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak_above(fn: Callable[[], Any]) -> int:
    """Peak RSS during fn() above the RSS just before it, in bytes."""
    reset_peak_rss()
    before = rss_bytes()
    fn()
    return max(0, peak_rss_bytes() - before)


def measure_artifact(folder: str | Path, manifest: Manifest) -> Manifest:
    """The measure stage: record the written artifact's activation memory in its manifest (and rewrite it).

    The export stage runs it on the temp folder, so an artifact is published only once it is measured.
    """
    memory = manifest.memory
    memory.activation_bytes_per_token, memory.activation_bytes_per_token_per_position = activation_model(folder)
    memory.measured_on, memory.measured_at_tokens = "cpu", MEASURE_BATCH * MEASURE_LENGTH
    manifest.write(Path(folder))
    return manifest


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


def activation_model(folder: str | Path) -> tuple[int, float]:
    """(bytes per token, growth per token per position) for the manifest, from MEASURE_SHAPES."""
    per_token = {(b, length): measure_peak(folder, b, length)["peak_above_loaded"] / (b * length)
                 for b, length in MEASURE_SHAPES}
    return fit_activation(per_token)


def fit_activation(per_token: dict[tuple[int, int], float]) -> tuple[int, float]:
    """(constant, slope) of the per-token cost over length, at or above every measured shape.

    Attention that keeps length x length scores makes a token cost more in a longer row, so a single
    sequence costs clearly more per token (GROWTH) than a batch of shorter rows with as many tokens, and
    the longest single more than the next. Then the slope assumes the cost grows in proportion to length
    beyond the longest: on the 0.6B matmul-attention ONNX graph that estimated 1 x 8192 at 1.16x the
    measured peak, where the line through the two measured lengths would read 0.84x. Otherwise a rise
    follows that line (onnxruntime's fused attention: 41.8 KiB per token at 4 x 512 and at 1 x 2048, 48.9
    at 1 x 4096 and 53.3 at 1 x 8192, which a flat rule would read 8% low), and a fall stays flat at the
    largest measured cost.
    """
    singles = sorted((length, cost) for (b, length), cost in per_token.items() if b == 1)
    (short, short_cost), (long, long_cost) = singles[-2], singles[-1]
    same_tokens = [cost for (b, length), cost in per_token.items() if b > 1 and b * length == short]
    quadratic = long_cost > GROWTH * short_cost and all(short_cost > GROWTH * c for c in same_tokens)
    slope = long_cost / long if quadratic else max(0.0, (long_cost - short_cost) / (long - short))
    constant = max(cost - slope * length for (_, length), cost in per_token.items())
    return max(1, math.ceil(constant)), slope


def _child(folder: Path, batch: int, length: int) -> dict[str, int]:
    import numpy as np

    from .formats import get_format
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
