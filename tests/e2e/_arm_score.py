"""Run an ONNX scorer over pre-tokenized batches with a plain onnxruntime session; print JSON logits.

    python tests/e2e/_arm_score.py BATCHES.npz MODEL.onnx

BATCHES.npz holds input_ids_<i> and attention_mask_<i> (int64, [batch, length]) for i = 0, 1, ...; the
last stdout line is {"logits": [...one per row, batches in order...], "onnxruntime", "machine", "hwcap"}.
Only the standard library, numpy and onnxruntime: test_arm.py runs it under qemu-aarch64 with the arm64
python of scripts/arm-env.sh (no transformers there: tokenization happens on the x86 side), and natively.
"""

from __future__ import annotations

import json
import platform
import struct
import sys

import numpy as np
import onnxruntime as ort

# Linux aarch64 AT_HWCAP (16) / AT_HWCAP2 (26) bits behind onnxruntime's int8 and 4-bit kernel choice.
HWCAP = {"asimd": 1, "asimddp": 20, "sve": 22}
HWCAP2 = {"sve2": 1, "svei8mm": 9, "i8mm": 13, "bf16": 14, "sme": 23}


def hwcap() -> list[str]:
    """The aarch64 features the process was started with (qemu-user sets them from its -cpu model)."""
    if platform.machine() != "aarch64":
        return []
    with open("/proc/self/auxv", "rb") as f:
        aux = dict(struct.iter_unpack("<QQ", f.read()))
    caps, caps2 = aux.get(16, 0), aux.get(26, 0)
    return [n for n, b in HWCAP.items() if caps >> b & 1] + [n for n, b in HWCAP2.items() if caps2 >> b & 1]


def main(batches: str, model: str) -> None:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    data = np.load(batches)
    logits: list[float] = []
    i = 0
    while f"input_ids_{i}" in data:
        feed = {"input_ids": data[f"input_ids_{i}"].astype(np.int64),
                "attention_mask": data[f"attention_mask_{i}"].astype(np.int64)}
        logits += np.asarray(session.run([output], feed)[0], dtype=np.float64).reshape(-1).tolist()
        i += 1
    print(json.dumps({"logits": logits, "onnxruntime": ort.__version__, "machine": platform.machine(),
                      "hwcap": hwcap()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
