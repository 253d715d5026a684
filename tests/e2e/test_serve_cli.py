"""`rerank-export serve` on the command line: bad values are usage errors before the model loads, a port in
use is one line before any "serving", and the real process answers only the Host names it was given."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.needs_fixtures

STARTUP_TIMEOUT_S = 120


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from rerank_export.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flag,value,message", [
    ("--port", "80000", "port from 0 to 65535"),
    ("--port", "-1", "port from 0 to 65535"),
    ("--port", "http", "expected an integer port"),
    ("--max-body", "9" * 400, "too large"),
    ("--max-body", "lots", "lots"),
    ("--allowed-hosts", "evil host!", "host names"),
])
def test_bad_serve_values_are_one_line_usage_errors(tmp_path, capsys, flag, value, message):
    # tmp_path holds no artifact: an error about artifacts would mean the value was not checked first
    code, out, err = run_cli(["serve", str(tmp_path), flag, value], capsys)
    assert code == 2 and "serving" not in out
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


def test_a_port_in_use_is_one_line_before_any_serving(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli(["serve", str(tmp_path), "--port", str(port)], capsys)
    assert code == 1 and "serving" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], err


def test_allowed_hosts_only_with_the_builtin_engine(tmp_path, capsys):
    code, _, err = run_cli(["serve", str(tmp_path), "--engine", "vllm", "--allowed-hosts", "a.lan"], capsys)
    assert code == 2 and "--allowed-hosts" in err


def start(root, *extra: str) -> tuple[subprocess.Popen, str]:
    """`serve --port 0` in a real process; the URL is the one it prints (the port the OS gave it)."""
    proc = subprocess.Popen([sys.executable, "-m", "rerank_export", "-q", "serve", str(root), "--device", "cpu",
                             "--max-length", "256", "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving "), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split(" on ", 1)[1].split("/ ", 1)[0]


def test_the_real_server_answers_only_its_hosts(verified_artifacts):
    proc, url = start(verified_artifacts, "--allowed-hosts", "127.0.0.1,rerank.lan")
    try:
        port = url.rsplit(":", 1)[1]
        assert httpx.get(f"{url}/health", timeout=STARTUP_TIMEOUT_S).status_code == 200
        assert httpx.get(f"{url}/health", headers={"Host": f"rerank.lan:{port}"}).status_code == 200
        refused = httpx.get(f"{url}/health", headers={"Host": f"localhost:{port}"})  # not in the list given
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "Host"
    finally:
        proc.terminate()
        proc.wait(10)
