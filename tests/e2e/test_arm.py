"""onnx-int8 and onnx-int4 pass the gate's default limits on aarch64, scored by onnxruntime's aarch64 build.

The artifacts are exported here (x86-64) and scored under qemu-aarch64 by the arm64 python of
scripts/arm-env.sh (Debian's python3.11, PyPI's aarch64 numpy and onnxruntime at the x86 version) through a
plain InferenceSession (tests/e2e/_arm_score.py). Tokenization happens here; each pair runs alone (the
parity metrics), then the whole set runs as one mixed-length batch padded left and right, whose scores must
equal the pairs' alone within the format's max_batch_dp on ARM too. onnxruntime picks its kernels from AT_HWCAP, which qemu sets
from its CPU model: neoverse-n1 is Graviton2 / Ampere Altra (NEON + dotprod: MLAS's udot int8 kernels);
max,sme=off adds i8mm, SVE2 and bf16 as on Graviton3/4 (MLAS's smmla/ummla kernels). Not qemu's default
(max, with SME): under Debian 12's qemu 7.2 onnx-int8 then scores near-random (max |dp| 0.50; SME off: the
same logits as neoverse-n1), while qemu 10 with SME2 scores it within the limits, so the fault is most
likely 7.2's early SME emulation. The same worker also scores each artifact natively; the largest |dp|
between x86 and ARM is printed and written to arm-vs-x86.json in the test's temp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rerank_export.contract import Contract, load_tokenizer
from rerank_export.evalsets import builtin_eval_set
from rerank_export.export import export_formats
from rerank_export.formats import get_format
from rerank_export.parity import compare, score_set
from rerank_export.reference import ReferenceBackend
from rerank_export.scoring import sigmoid

pytestmark = [pytest.mark.slow, pytest.mark.needs_fixtures]

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_arm_score.py")
SEARCH = {"calib_samples": 16, "search_tokens": 512}
NAMES = ("onnx-int8", "onnx-int4")
SIDES = ("left", "right")
# qemu CPU model -> (features it must show, features it must not): proof of the kernels' ISA.
CPUS = {"neoverse-n1": ({"asimd", "asimddp"}, {"i8mm", "sve", "sme"}),
        "max,sme=off": ({"asimddp", "i8mm", "sve2"}, {"sme"})}


@pytest.fixture(scope="module")
def arm_python() -> str:
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (Debian: apt-get install qemu-user; .ci/run installs it)")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "arm-env.sh")], capture_output=True, text=True,
                          timeout=1800, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.skip(f"scripts/arm-env.sh could not build the aarch64 environment: "
                    f"{(done.stderr.strip().splitlines() or ['(no message)'])[-1]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def quantized_root(tmp_path_factory, source) -> Path:
    root = tmp_path_factory.mktemp("arm")
    export_formats(source.model_id, None, root, ["onnx-int8", "awq-int4", "onnx-int4"],
                   {"awq-int4": SEARCH, "onnx-int4": SEARCH}, source=source)
    return root


@pytest.fixture(scope="module")
def reference(source) -> list[float]:
    return score_set(ReferenceBackend(source), source, builtin_eval_set(False))


@pytest.fixture(scope="module")
def batches(quantized_root, source, tmp_path_factory) -> Path:
    """Every pair of the set as its own batch (one row, no padding), tokenized by the artifact's contract."""
    evalset = builtin_eval_set(False)
    contract = Contract(load_tokenizer(quantized_root / "onnx-int8"))
    seqs = [contract.encode(g.query, d, g.instruction).input_ids for g in evalset.groups for d in g.documents]
    assert seqs == [source.contract.encode(g.query, d, g.instruction).input_ids
                    for g in evalset.groups for d in g.documents]
    arrays = {}
    for i, seq in enumerate(seqs):
        arrays[f"input_ids_{i}"] = np.asarray([seq], dtype=np.int64)
        arrays[f"attention_mask_{i}"] = np.ones((1, len(seq)), dtype=np.int64)
    # Then the whole set as one mixed-length batch, padded left, then right: the graph reads either.
    width = max(len(s) for s in seqs)
    for i, side in enumerate(SIDES, start=len(seqs)):
        ids = np.full((len(seqs), width), source.contract.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, seq in enumerate(seqs):
            cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
            ids[row, cols], mask[row, cols] = seq, 1
        arrays[f"input_ids_{i}"], arrays[f"attention_mask_{i}"] = ids, mask
    path = tmp_path_factory.mktemp("arm-batches") / "pairs.npz"
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[dict, Path]:
    return {}, tmp_path_factory.mktemp("arm-results") / "arm-vs-x86.json"


def _score(command: list[str], batches: Path, model: Path, env: dict | None = None) -> dict:
    done = subprocess.run([*command, str(WORKER), str(batches), str(model)], capture_output=True, text=True,
                          timeout=1800, check=False, stdin=subprocess.DEVNULL, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def x86_scores(quantized_root, batches) -> dict[str, dict]:
    """Each artifact scored natively by the same worker (cached across the CPU models)."""
    return {name: _score([sys.executable], batches, quantized_root / name / "model.onnx") for name in NAMES}


@pytest.mark.parametrize("cpu", list(CPUS))
@pytest.mark.parametrize("name", NAMES)
def test_passes_the_default_limits_on_aarch64(arm_python, quantized_root, reference, batches, x86_scores,
                                              results, name, cpu):
    env = {**os.environ, "QEMU_CPU": cpu}
    arm = _score([arm_python], batches, quantized_root / name / "model.onnx", env)
    x86 = x86_scores[name]
    has, lacks = CPUS[cpu]
    assert arm["machine"] == "aarch64" and has <= set(arm["hwcap"]) and not lacks & set(arm["hwcap"]), arm
    assert arm["onnxruntime"] == x86["onnxruntime"], (arm["onnxruntime"], x86["onnxruntime"])

    evalset = builtin_eval_set(False)
    thresholds = get_format(name).thresholds
    pairs = evalset.num_pairs
    arm_all, x86_all = sigmoid(np.asarray(arm["logits"])), sigmoid(np.asarray(x86["logits"]))
    assert len(arm_all) == len(x86_all) == (1 + len(SIDES)) * pairs
    arm_p, x86_p = arm_all[:pairs], x86_all[:pairs]  # each pair alone
    batch_dp = max(float(np.max(np.abs(arm_all[k * pairs:(k + 1) * pairs] - arm_p))) for k in (1, 2))
    report = compare(reference, arm_p.tolist(), evalset, thresholds, name, batch_dp)
    native = compare(reference, x86_p.tolist(), evalset, thresholds, name)
    dp = float(np.max(np.abs(arm_p - x86_p)))
    keys = ("max_abs_dp", "mean_abs_dp", "spearman_mean", "spearman_worst", "kendall_mean", "top1_mean",
            "ndcg10_vs_reference_mean")
    record, path = results
    record[f"{name} {cpu}"] = {
        "onnxruntime": arm["onnxruntime"], "qemu_cpu": cpu, "hwcap": arm["hwcap"], "pairs": len(arm_p),
        "max_abs_dp_x86_vs_arm": dp, "arm_batch_vs_alone_max_dp": batch_dp, "arm_vs_reference": {k: report.metrics[k] for k in keys},
        "x86_vs_reference": {k: native.metrics[k] for k in keys}, "passed": report.passed,
        "breaches": report.breaches}
    path.write_text(json.dumps(record, indent=2))
    print(f"\n{name} on aarch64 (qemu -cpu {cpu}: {' '.join(arm['hwcap'])}), onnxruntime {arm['onnxruntime']}: "
          f"max |dp| x86 vs ARM {dp:.3g}; ARM vs reference",
          {k: round(report.metrics[k], 4) for k in keys}, "; x86 vs reference",
          {k: round(native.metrics[k], 4) for k in keys}, f"({path})")
    assert report.passed, report.breaches
    assert dp <= thresholds.max_abs_dp, (dp, thresholds.max_abs_dp)
