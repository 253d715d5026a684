"""`rerank-export serve` on the command line: bad values are usage errors before the model loads, a port in
use is one line before any "serving", and the real process answers only the Host names it was given."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

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


def start(root, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`serve --port 0` in a real process; the URL is the one it prints (the port the OS gave it)."""
    proc = subprocess.Popen([sys.executable, "-m", "rerank_export", "-q", "serve", str(root), "--device", "cpu",
                             "--max-length", "256", "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
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


SECRET = "k3y-issue-26-never-shown"


def env_with_key(key: str | None) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "RERANK_EXPORT_API_KEY"}
    return env if key is None else {**env, "RERANK_EXPORT_API_KEY": key}


def subprocess_cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rerank_export", *argv], capture_output=True, text=True,
                          env=env_with_key(None), timeout=STARTUP_TIMEOUT_S, check=False)


def test_api_key_on_the_command_line_warns_that_ps_shows_it(tmp_path):
    # tmp_path holds no artifact: the run stops there (exit 1), after the key was read and warned about
    done = subprocess_cli(["serve", str(tmp_path), "--api-key", SECRET])
    assert done.returncode == 1
    assert "`ps` shows to every user" in done.stderr and "--api-key-file" in done.stderr, done.stderr
    assert SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize("content,message", [
    (None, "cannot read --api-key-file"),
    ("", "holds no key"),
    ("\n  \n", "holds no key"),
    ("two\nlines", "one line of printable ASCII"),
    ("k\u00e9y", "one line of printable ASCII"),
    ("x" * 5000, "over 4096 bytes"),
])
def test_bad_api_key_files_are_usage_errors(tmp_path, capsys, content, message):
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content, encoding="utf-8")
        path.chmod(0o600)
    code, out, err = run_cli(["serve", str(tmp_path), "--api-key-file", str(path)], capsys)
    assert code == 2 and "serving" not in out
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert content is None or content.strip() == "" or content.strip() not in err


def test_api_key_and_its_file_exclude_each_other(tmp_path, capsys):
    code, _, err = run_cli(["serve", str(tmp_path), "--api-key", "a", "--api-key-file", "b"], capsys)
    assert code == 2 and "not allowed with argument" in err


def test_an_api_key_file_others_can_read_is_warned_about(tmp_path):
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    path.chmod(0o644)
    done = subprocess_cli(["serve", str(tmp_path), "--api-key-file", str(path)])
    assert "can be read by other users (mode 644): chmod 600 it" in done.stderr, done.stderr
    assert SECRET not in done.stderr + done.stdout


def assert_keyed(url: str) -> None:
    body = {"query": "q", "documents": ["a"]}
    assert httpx.post(f"{url}/v1/rerank", json=body, timeout=STARTUP_TIMEOUT_S).status_code == 401
    ok = httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {SECRET}"})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("how", ["file", "environment"])
def test_the_key_from_a_file_or_the_environment_never_reaches_argv_or_the_log(verified_artifacts, tmp_path, how):
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    flags = ["--api-key-file", str(path)] if how == "file" else []
    proc, url = start(verified_artifacts, *flags, env=env_with_key(SECRET if how == "environment" else None))
    try:
        assert SECRET not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()  # what `ps` shows
        assert_keyed(url)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert SECRET not in err
