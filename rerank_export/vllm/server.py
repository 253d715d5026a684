"""Run a vLLM server as a child process: start it, wait for /health, report, forward signals, stop it.

vLLM's own output goes to a log file (it is long: banners, routes, warnings); when vLLM cannot serve an
artifact, the error is one line naming the artifact and vLLM's reason, with the log's path for the rest.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from ..errors import ArtifactError
from .command import VllmCommand

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 900.0  # seconds; a cold CPU start (imports, torch.compile warm-up) takes minutes
STOP_TIMEOUT = 60.0
POLL_SECONDS = 1.0
# vLLM's root cause, e.g. "ValueError: There is no module or parameter named 'clip' in ...": the first
# exception line, bare or logged at ERROR (later ones are wrappers: "Engine core initialization failed").
LOG_PREFIX = re.compile(r"^(?:\(\w+ pid=\d+\)\s*)?(?:(?:ERROR|CRITICAL) \S+ \S+ \[[^\]]*\]\s*)?")
REASON = re.compile(r"^([A-Z]\w*(?:Error|Exception)): (.+)$")
MAX_REASON = 300


def failure_reason(log_text: str) -> str:
    """vLLM's first `SomethingError: message` line (cut to MAX_REASON), else its last non-empty line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in lines:
        match = REASON.match(LOG_PREFIX.sub("", line))
        if match:
            text = f"{match.group(1)}: {match.group(2)}"
            return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."
    return lines[-1] if lines else "no output"


def exit_status(returncode: int) -> int:
    """A shell's view of a child's status: 128 + N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


class VllmServer:
    """One vLLM server for one artifact. Use as a context manager, or start()/wait_ready()/stop()."""

    def __init__(self, command: VllmCommand, folder: str | Path, host: str, port: int,
                 log_path: str | Path | None = None, start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.command, self.folder, self.host, self.port = command, Path(folder), host, port
        self.start_timeout = start_timeout
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen[bytes] | None = None
        self.signalled = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="rerank-export-vllm-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        log.info("starting vLLM for %s (log: %s): %s", self.folder, self.log_path, self.command.render())
        with open(self.log_path, "ab") as out:
            # Its own session: a terminal's Ctrl-C reaches only us, and we forward it once.
            self.process = subprocess.Popen(self.command.argv, env=self.command.child_env(), stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once /health answers 200; a vLLM that exits or stays silent is a one-line ArtifactError."""
        assert self.process is not None, "start() first"
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self.signalled:
                    return
                raise ArtifactError(f"vLLM could not serve {self.folder}: {self.reason()} (log: {self.log_path})")
            if self._healthy():
                return
            time.sleep(POLL_SECONDS)
        self.stop()
        raise ArtifactError(f"vLLM did not answer on {self.url}/health within {timeout:.0f} s for "
                            f"{self.folder} (log: {self.log_path})")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def reason(self) -> str:
        try:
            return failure_reason(Path(self.log_path or "").read_text(errors="replace")[-200_000:])
        except OSError:
            return "no log"

    def forward(self, signum: int, frame: FrameType | None = None) -> None:
        """Signal handler: pass SIGINT/SIGTERM on to vLLM, which shuts down its engine and exits. vLLM does
        not stop while its engine warms up, so a second signal kills its process group."""
        if self.process is not None and self.process.poll() is None:
            if self.signalled:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.send_signal(signum)
        self.signalled = True

    def wait(self) -> int:
        """Block until vLLM exits (signals forwarded meanwhile); its exit status."""
        assert self.process is not None, "start() first"
        return exit_status(self.process.wait())

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL to vLLM's whole process group (its engine core and workers) if it lingers."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return exit_status(self.process.returncode)

    def __enter__(self) -> VllmServer:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_foreground(server: VllmServer) -> int:
    """`serve --engine vllm`: start, wait for health, say where it serves, then wait with signals forwarded."""
    previous = {s: signal.signal(s, server.forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(f"starting vLLM for {server.folder} (log: {server.log_path}) ...", flush=True)
        server.wait_ready()
        if server.process is not None and server.process.poll() is None:
            print(f"vLLM (pid {server.process.pid}) serving {server.folder} on {server.url}/ "
                  f"(POST /v1/rerank, /v2/rerank, /score; log: {server.log_path})", flush=True)
        return server.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
