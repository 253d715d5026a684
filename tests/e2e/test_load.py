"""Load and faults against the real `rerank-export serve` process on 127.0.0.1 (tiny model)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.needs_fixtures

CLIENTS, REQUESTS_PER_CLIENT = 16, 50
# The server's RSS while serving may grow by at most this much over its RSS once loaded: activations for
# one token budget of the tiny model are a few MiB, so anything near this means a leak or unbounded batch.
RSS_GROWTH_LIMIT = 256 * 2**20
STARTUP_TIMEOUT_S = 120
LOAD_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rerank_export", *args]


@pytest.fixture(scope="module")
def verified_root(verified_artifacts):
    return verified_artifacts


def wait_healthy(proc: subprocess.Popen, url: str) -> None:
    deadline = time.time() + STARTUP_TIMEOUT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)


def client(url: str, n: int) -> list[tuple[int, int]]:
    out = []
    with httpx.Client(timeout=60) as http:
        for i in range(REQUESTS_PER_CLIENT):
            docs = [f"client {n} request {i} document {j} about Paris" for j in range(1 + (i % 4))]
            r = http.post(f"{url}/v1/rerank", json={"query": f"question {n}-{i}?", "documents": docs})
            out.append((r.status_code, len(r.json().get("results", [])) - len(docs)))
    return out


@pytest.mark.slow
def test_16_clients_x_50_requests(verified_root):
    import psutil

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(cli("-q", "serve", str(verified_root), "--device", "cpu", "--port", str(port),
                                "--max-length", "512"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(proc, url)
        loaded = psutil.Process(proc.pid).memory_info().rss
        sampler = RssSampler(proc.pid)
        sampler.start()
        start = time.time()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(lambda n: client(url, n), range(CLIENTS)) for r in rs]
        elapsed = time.time() - start
        sampler.stop.set()
        sampler.join()
        assert proc.poll() is None, "server died under load"
    finally:
        proc.terminate()
        proc.wait(10)
    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    assert all(status == 200 and missing == 0 for status, missing in results)
    growth = sampler.peak - loaded
    print(f"\n{len(results)} requests in {elapsed:.1f}s; RSS loaded {loaded / 2**20:.0f} MiB, "
          f"peak {sampler.peak / 2**20:.0f} MiB (+{growth / 2**20:.0f} MiB)")
    assert growth < RSS_GROWTH_LIMIT and elapsed < LOAD_TIMEOUT_S


def test_corrupted_artifact_is_refused_by_the_cli(baseline_artifacts, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(baseline_artifacts, root)
    weights = root / "baseline-fp32" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x80
    weights.write_bytes(bytes(data))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # The folder itself: given the root, a CPU with native bf16 would pick the intact baseline-bf16.
    done = subprocess.run(cli("-q", "serve", str(root / "baseline-fp32"), "--device", "cpu", "--port",
                              str(free_port()), "--allow-unverified"),  # sha256 is checked unverified too
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("rerank-export: error:")]
    assert len(errors) == 1 and "model.safetensors" in errors[0] and "sha256" in errors[0]
    assert "Traceback" not in done.stderr
