"""A Node user without Python scores the ONNX artifacts: tokenizer.json read by @huggingface/tokenizers,
model.onnx run by onnxruntime-node (tests/e2e/node/score.mjs), on a mixed-length batch padded either side.

The npm packages (pinned in tests/e2e/node/package-lock.json) are installed once per lock file into
$RERANK_EXPORT_CACHE/node-consumer/<lock hash>/ (default ~/.cache/rerank-export), never into the repository,
with --ignore-scripts: onnxruntime-node's install script only fetches GPU extras from outside the npm
registry, and its CPU binaries ship in the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from rerank_export.contract import PREFIX, SUFFIX, Contract, format_body, load_tokenizer
from rerank_export.evalsets import builtin_eval_set
from rerank_export.formats import get_format
from rerank_export.parity import compare, score_set
from rerank_export.reference import ReferenceBackend
from rerank_export.scoring import sigmoid

NODE, NPM = shutil.which("node"), shutil.which("npm")
pytestmark = [pytest.mark.slow, pytest.mark.needs_fixtures,
              pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are needed (apt-get install nodejs npm)")]

CONSUMER = Path(__file__).with_name("node")
SCRIPT = CONSUMER / "score.mjs"
# Read at import: tests/conftest.py points RERANK_EXPORT_CACHE at a per-session folder while tests run
# (for the AWQ search), and the npm packages are meant to be reused across sessions.
CACHE = Path(os.environ.get("RERANK_EXPORT_CACHE") or Path.home() / ".cache" / "rerank-export") / "node-consumer"
NAMES = ("onnx-fp32", "onnx-int8")
SIDES = ("left", "right")
NPM_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def node_packages() -> Path:
    """The folder where `npm ci` installed the locked packages (installed on first use, then reused)."""
    lock = (CONSUMER / "package-lock.json").read_bytes()
    folder = CACHE / hashlib.sha256(lock).hexdigest()[:16]
    done = folder / ".installed"
    if not done.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        work = CACHE / f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copy2(CONSUMER / name, work / name)
            _run([NPM, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], work, NPM_TIMEOUT_S)
            # onnxruntime-node's native binding loads without its install script, and runs on the CPU.
            probe = "const o = require('onnxruntime-node'); console.log(o.env.versions.node)"
            _run([NODE, "-e", probe], work, 60)
            (work / ".installed").write_text(hashlib.sha256(lock).hexdigest() + "\n")
            try:
                work.rename(folder)
            except OSError:  # another session installed it meanwhile
                if not done.is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder


def _run(cmd: list[str], cwd: Path, timeout: int, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def onnx_artifacts(onnx_root) -> Path:
    return onnx_root


@pytest.fixture(scope="module")
def evalset():
    return builtin_eval_set(False)


@pytest.fixture(scope="module")
def reference(source, evalset) -> np.ndarray:
    return np.asarray(score_set(ReferenceBackend(source), source, evalset))


@pytest.fixture(scope="module")
def prompts(evalset, tmp_path_factory) -> Path:
    """Every pair of the set, rendered as the contract renders it (its ids are prefix + body + suffix)."""
    texts = [PREFIX + format_body(g.query, d, g.instruction) + SUFFIX for g in evalset.groups for d in g.documents]
    path = tmp_path_factory.mktemp("node-prompts") / "prompts.json"
    path.write_text(json.dumps(texts, ensure_ascii=False))
    return path


@pytest.fixture(scope="module")
def node_scores(node_packages, onnx_artifacts, prompts):
    """(format, side) -> score.mjs's output for the whole set in one batch, and each pair alone."""
    runs: dict[tuple[str, str], dict] = {}
    env = {**os.environ, "RERANK_EXPORT_NODE_DIR": str(node_packages)}

    def scores(name: str, side: str) -> dict:
        if (name, side) not in runs:
            out = _run([NODE, str(SCRIPT), str(onnx_artifacts / name), str(prompts), side, "--alone"],
                       CONSUMER, 600, env)
            runs[name, side] = json.loads(out)
        return runs[name, side]

    return scores


CASES = [pytest.param(name, side, id=f"{name}-{side}") for name in NAMES for side in SIDES]


@pytest.mark.parametrize(("name", "side"), CASES)
def test_js_tokenizer_gives_the_contract_ids(node_scores, onnx_artifacts, evalset, name, side):
    contract = Contract(load_tokenizer(onnx_artifacts / name))
    expected = [contract.encode(g.query, d, g.instruction).input_ids for g in evalset.groups for d in g.documents]
    got = node_scores(name, side)["ids"]
    assert len(got) == len(expected)
    wrong = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not wrong, f"{len(wrong)} pairs tokenized differently, first #{wrong[0]}: {got[wrong[0]]} != {expected[wrong[0]]}"


@pytest.mark.parametrize(("name", "side"), CASES)
def test_batched_scores_pass_the_parity_gate(node_scores, reference, evalset, name, side):
    scores = sigmoid(np.asarray(node_scores(name, side)["logits"], dtype=np.float64))
    report = compare(reference, scores, evalset, get_format(name).thresholds, name)
    if not report.passed:
        pytest.fail(f"{name}, {side} padding: {report.breaches}")


@pytest.mark.parametrize(("name", "side"), CASES)
def test_a_pair_scores_the_same_in_the_batch_and_alone(node_scores, name, side):
    out = node_scores(name, side)
    batched = sigmoid(np.asarray(out["logits"], dtype=np.float64))
    alone = sigmoid(np.asarray(out["alone"], dtype=np.float64))
    dp = np.abs(batched - alone)
    limit = get_format(name).thresholds.max_batch_dp
    assert dp.max() <= limit, f"{name}, {side} padding: max |dp| {dp.max():.3g} (pair #{dp.argmax()}) > {limit}"
