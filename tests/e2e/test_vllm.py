"""vLLM as a real engine, on CPU: the tiny baseline and AWQ artifacts served by `rerank-export serve --engine
vllm` (vLLM's CPU build, a real server on 127.0.0.1), checked over HTTP against independent scorers, and
`parity --engine vllm` gating an artifact through vLLM.

Needs a vLLM interpreter in $RERANK_EXPORT_VLLM_PYTHON (bash scripts/vllm-venv.sh; .ci/run sets it up).
Each server start takes 1-3 minutes on 2 cores (imports, torch.compile warm-up; cached between runs).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from rerank_export.errors import ArtifactError
from rerank_export.evalsets import EvalGroup, EvalSet, builtin_eval_set
from rerank_export.manifest import read_manifest, sha256_file
from rerank_export.parity import check_artifacts, score_set
from rerank_export.reference import ReferenceBackend
from rerank_export.vllm.command import API_KEY_ENV, VLLM_PYTHON_ENV
from rerank_export.vllm.engine import free_port, post

VLLM_PY = os.environ.get(VLLM_PYTHON_ENV)
pytestmark = [pytest.mark.vllm, pytest.mark.needs_fixtures,
              pytest.mark.skipif(not VLLM_PY, reason=f"${VLLM_PYTHON_ENV} names no vLLM interpreter")]

SECRET = "s3cr3t-e2e-key"
START_TIMEOUT = 900  # seconds
FP32_ATOL = 1e-4  # vLLM's fp32 forward against the reference causal LM (measured ~4e-7)
AWQ_RUNTIME_ATOL = 5e-3  # vLLM's AWQ kernel (bf16/fp16 activations) against rerank_export's AWQ runtime
AWQ_OPTIONS = {"calib_samples": 16, "search_tokens": 512}
QUERY = "What is the capital of China?"
DOCS = ["Beijing is the capital of China.", "Pandas eat bamboo.", "def read(path): return open(path).read()"]
INSTRUCTION = "Given a code question, find the snippet that answers it"


@pytest.fixture(scope="module")
def vllm_root(tmp_path_factory, source) -> Path:
    """baseline-fp32 and awq-int4 of the tiny model, each gated by the built-in runtime's parity check."""
    from rerank_export.export import export_formats

    root = tmp_path_factory.mktemp("vllm") / "artifacts"
    export_formats(source.model_id, None, root, ["baseline-fp32"], source=source)
    export_formats(source.model_id, None, root, ["awq-int4"], source=source, options={"awq-int4": AWQ_OPTIONS})
    reports = check_artifacts(root, source, [builtin_eval_set(False).limit(3)])
    assert all(r.passed for r in reports), [r.breaches for r in reports]
    return root


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rerank_export", *args]


class Served:
    """`rerank-export serve --engine vllm` running as a user would run it, with the key in its environment."""

    def __init__(self, folder: Path, out: Path) -> None:
        self.folder, self.port, self.out = folder, free_port(), out
        self.args = ["serve", str(folder), "--engine", "vllm", "--device", "cpu", "--memory", "8GiB",
                     "--max-length", "2048", "--port", str(self.port), "--vllm-python", str(VLLM_PY),
                     "--vllm-timeout", str(START_TIMEOUT)]
        self.env = {**os.environ, "RERANK_EXPORT_API_KEY": SECRET, "HF_HUB_OFFLINE": "1"}
        self.url = f"http://127.0.0.1:{self.port}"

    def printed_command(self) -> list[str]:
        out = subprocess.run(cli(*self.args, "--print-command"), env=self.env, capture_output=True, text=True,
                             check=True, timeout=300).stdout
        return shlex.split(out.strip().splitlines()[-1])

    def start(self) -> None:
        self.log = open(self.out, "w")  # noqa: SIM115 (held for the server's life, closed in stop())
        self.process = subprocess.Popen(cli(*self.args), env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT + 60
        while time.monotonic() < deadline:
            text = self.out.read_text()
            if match := re.search(r"vLLM \(pid (\d+)\) serving .*\(.*log: (\S+)\)", text):
                self.vllm_pid, self.vllm_log = int(match.group(1)), Path(match.group(2))
                return
            assert self.process.poll() is None, f"serve exited {self.process.returncode}: {text[-3000:]}"
            time.sleep(2)
        raise AssertionError(f"vLLM did not come up: {self.out.read_text()[-3000:]}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)  # serve forwards it to vLLM and exits with vLLM's status
        code = self.process.wait(timeout=120)
        self.log.close()
        return code


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))


@pytest.fixture(scope="module", params=["baseline-fp32", "awq-int4"])
def served(request, vllm_root, tmp_path_factory):
    if request.param == "awq-int4" and "avx512f" not in _cpu_flags():
        # vLLM's CPU build has its AWQ kernel (cpu_gemm_wna16) in its AVX512 library only: on an AVX2 host
        # it fails with "'_C' object has no attribute 'cpu_gemm_wna16'" (seen on an AVX2-only EPYC).
        pytest.skip("vLLM's CPU build serves AWQ only on AVX512 CPUs; this CPU has no avx512f")
    server = Served(vllm_root / request.param, tmp_path_factory.mktemp("serve") / "serve.out")
    server.start()
    yield server
    code = server.stop()
    assert not psutil.pid_exists(server.vllm_pid) or psutil.Process(server.vllm_pid).status() == "zombie"
    assert code in (0, 128 + signal.SIGTERM), server.out.read_text()[-2000:]


def reference_scores(source, query: str, docs: list[str], instruction: str | None = None) -> np.ndarray:
    evalset = EvalSet("e2e", (EvalGroup("q", query, tuple(docs), instruction=instruction),))
    return np.asarray(score_set(ReferenceBackend(source), source, evalset))


def runtime_scores(folder: Path, query: str, docs: list[str], instruction: str | None = None) -> np.ndarray:
    import rerank_export

    reranker = rerank_export.load(folder, device="cpu", memory_budget="8GiB", max_length=2048)
    return np.asarray(reranker.score([(query, d) for d in docs], instruction))


def expected(served: Served, source, instruction: str | None = None) -> tuple[np.ndarray, float]:
    """Independent scores to hold vLLM's against: the reference for fp32, our own AWQ runtime for AWQ."""
    if served.folder.name == "baseline-fp32":
        return reference_scores(source, QUERY, DOCS, instruction), FP32_ATOL
    return runtime_scores(served.folder, QUERY, DOCS, instruction), AWQ_RUNTIME_ATOL


def by_index(results: list[dict], key: str = "relevance_score") -> np.ndarray:
    return np.asarray([r[key] for r in sorted(results, key=lambda r: r["index"])])


def test_the_printed_command_is_the_one_that_runs(served):
    printed = served.printed_command()
    env = [p for p in printed if re.match(r"^[A-Z_]+=", p)]
    child = psutil.Process(served.vllm_pid)
    assert child.cmdline() == printed[len(env):]
    child_env = child.environ()
    assert all(child_env.get(k) == v for k, v in (p.split("=", 1) for p in env))
    assert any(p.startswith("VLLM_CPU_KVCACHE_SPACE=") for p in env)
    assert "--chat-template" in printed and printed[printed.index("--chat-template") + 1] == \
        str(served.folder / "chat_template.jinja")


def test_the_api_key_reaches_vllm_through_its_environment_only(served):
    vllm = psutil.Process(served.vllm_pid)
    assert vllm.environ().get(API_KEY_ENV) == SECRET
    for proc in [vllm, *vllm.children(recursive=True), psutil.Process(served.process.pid)]:
        assert not any(SECRET in part for part in proc.cmdline()), proc.cmdline()
    assert SECRET not in served.out.read_text() and SECRET not in served.vllm_log.read_text(errors="replace")
    with pytest.raises(ArtifactError, match="answered 401"):
        post(f"{served.url}/v1/rerank", {"query": QUERY, "documents": DOCS})


def test_v1_rerank_matches_an_independent_scorer(served, source):
    want, atol = expected(served, source)
    got = by_index(post(f"{served.url}/v1/rerank", {"query": QUERY, "documents": DOCS}, SECRET)["results"])
    np.testing.assert_allclose(got, want, atol=atol)


def test_a_custom_instruction_reaches_the_template(served, source):
    want, atol = expected(served, source, INSTRUCTION)
    default, _ = expected(served, source)
    assert np.max(np.abs(want - default)) > 10 * atol  # the instruction changes the scores
    body = {"query": QUERY, "documents": DOCS, "instruction": INSTRUCTION}
    got = by_index(post(f"{served.url}/v1/rerank", body, SECRET)["results"])
    np.testing.assert_allclose(got, want, atol=atol)
    kwargs = {"query": QUERY, "documents": DOCS, "chat_template_kwargs": {"instruction": INSTRUCTION}}
    np.testing.assert_allclose(by_index(post(f"{served.url}/v1/rerank", kwargs, SECRET)["results"]), want,
                               atol=atol)


def test_v2_rerank_and_score_match_too(served, source):
    want, atol = expected(served, source)
    v2 = post(f"{served.url}/v2/rerank", {"query": QUERY, "documents": DOCS, "top_n": 2}, SECRET)["results"]
    assert [r["index"] for r in v2] == list(np.argsort(-want, kind="stable")[:2])
    np.testing.assert_allclose([r["relevance_score"] for r in v2], np.sort(want)[::-1][:2], atol=atol)
    score = post(f"{served.url}/score", {"text_1": QUERY, "text_2": DOCS}, SECRET)["data"]
    np.testing.assert_allclose(by_index(score, "score"), want, atol=atol)


def test_parity_through_vllm(vllm_root, source):
    """`parity --engine vllm` gates baseline-fp32 as served by vLLM, and says so in its report."""
    out = subprocess.run(cli("parity", str(vllm_root), "--model", source.model_id,
                             "--engine", "vllm", "--vllm-python", str(VLLM_PY), "--only", "baseline-fp32",
                             "--max-queries", "3"),
                         check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((vllm_root / "baseline-fp32" / "parity-vllm.json").read_text())
    assert report["verdict"] == "pass" and report["ran_on"]["engine"]["name"] == "vllm"
    assert report["metrics"]["max_abs_dp"] < FP32_ATOL
    assert "vllm" in out.stdout
    parity = read_manifest(vllm_root / "baseline-fp32").parity  # the runtime's verdict, the vLLM check beside it
    assert parity["ran_on"]["engine"]["name"] == "torch" and parity["engines"]["vllm"]["verdict"] == "pass"


def test_an_artifact_vllm_cannot_load_is_one_line(vllm_root, tmp_path, copy_tree):
    """A weight file vLLM refuses (a stray tensor beside the weights): one line naming the artifact and why."""
    import torch
    from safetensors.torch import save_file

    folder = copy_tree(vllm_root / "baseline-fp32", "broken")
    save_file({"clip.0": torch.zeros(2)}, str(folder / "extra.safetensors"))
    # Listed and hashed, as a faulty exporter would write it: our own checks refuse an unlisted weight file
    # (tests/e2e/test_integrity.py), so only this way does the folder reach vLLM.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["extra.safetensors"] = {"bytes": (folder / "extra.safetensors").stat().st_size,
                                             "sha256": sha256_file(folder / "extra.safetensors")}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out = subprocess.run(cli("serve", str(folder), "--engine", "vllm", "--device", "cpu", "--memory", "8GiB",
                             "--max-length", "2048", "--port", str(free_port()), "--vllm-python", str(VLLM_PY),
                             "--allow-unverified", "--vllm-timeout", str(START_TIMEOUT)),
                         check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                         timeout=1800)
    errors = [line for line in out.stderr.splitlines() if line.startswith("rerank-export: error")]
    assert out.returncode == 1 and len(errors) == 1, out.stderr[-2000:]
    assert str(folder) in errors[0] and "vLLM could not serve" in errors[0] and "clip" in errors[0]
