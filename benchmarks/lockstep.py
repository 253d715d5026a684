"""Rows measured in lockstep: every row's worker is loaded at once, in its own process, and they take turns
on the same chunk of documents, so chunk k of every row runs within one round of the others.

Why: this machine's speed drifts. On the 2-core EPYC VM of 2026-12-07 the same onnx-int8 run went from
~330 to ~470 ms per pair and back, between processes and inside one (element-wise ops 3-4x slower, int8
GEMMs ~1.3x; no page faults; huge pages did not change it): something outside the VM, lasting seconds to
minutes. Rows run one after another can each land in a different state; rows in lockstep see about the same
mix over many turns. A state can still flip inside one turn of every lane, so per-turn ratios scatter: the
report gives every turn together and each row's best turn. The GEMM peaks take a turn each round too
(cpu_limits.py's lockstep worker), so a row's share of the peak is against the peaks of its rounds.

A lane is a command that runs a worker speaking _procstat.serve_lockstep's protocol.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from _procstat import LOCKSTEP


@dataclass
class Lane:
    """One row's worker: its command line, and what it answered."""
    name: str
    argv: list[str]
    answers: list[dict] = field(default_factory=list)
    process: subprocess.Popen | None = None
    lines: queue.Queue = field(default_factory=queue.Queue)

    def start(self, timeout: float) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=env)
        # a thread reads stdout, so a worker that hangs or dies is noticed at the timeout, not waited on forever
        threading.Thread(target=self._pump, daemon=True).start()
        self._read(timeout)  # {"ready": true}: loaded and warm

    def ask(self, start: int, end: int, timeout: float) -> dict:
        self.process.stdin.write(f"{start} {end}\n")
        self.process.stdin.flush()
        answer = self._read(timeout)
        self.answers.append({"start": start, "end": end, **answer})
        return answer

    def _pump(self) -> None:
        for line in self.process.stdout:
            if line.startswith(LOCKSTEP):
                self.lines.put(json.loads(line[len(LOCKSTEP):]))
        self.lines.put(None)  # the worker's stdout closed: it exited

    def _read(self, timeout: float) -> dict:
        try:
            answer = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"lane {self.name}: its worker did not answer in {timeout:.0f} s") from None
        if answer is None:  # its stdout closed: it is exiting, or has
            try:
                code = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            raise RuntimeError(f"lane {self.name}: its worker exited (exit {code})")
        return answer

    def stop(self, kill: bool = False) -> None:
        """End the worker: EOF on its stdin ends its loop; one that failed or will not end is killed."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self.process.wait()


def run_lockstep(lanes: Sequence[Lane], docs: int, chunk: int, timeout: float = 3600) -> dict[str, dict]:
    """Start every lane (one at a time, so loading does not overlap), then for each chunk of `docs` ask
    every lane in turn; {lane name: {"rounds": [answers], "error": ...}}. A lane that fails is dropped,
    with its error, and the others go on."""
    errors: dict[str, str] = {}
    live = []
    try:
        for lane in lanes:
            try:
                lane.start(timeout)
                live.append(lane)
            except (RuntimeError, OSError, ValueError) as exc:
                errors[lane.name] = str(exc)
                lane.stop(kill=True)
        for start in range(0, docs, chunk):
            for lane in list(live):
                try:
                    lane.ask(start, min(start + chunk, docs), timeout)
                except (RuntimeError, OSError, ValueError) as exc:
                    errors[lane.name] = str(exc)
                    live.remove(lane)
                    lane.stop(kill=True)
    finally:
        for lane in lanes:
            lane.stop()
    return {lane.name: {"rounds": lane.answers, **({"error": errors[lane.name]} if lane.name in errors else {})}
            for lane in lanes}


def pairs_per_s(rounds: list[dict]) -> float:
    """A lane's documents over its seconds, all rounds together."""
    return sum(r["end"] - r["start"] for r in rounds) / sum(r["seconds"] for r in rounds)


def round_ratios(numerator: list[dict], denominator: list[dict]) -> list[float]:
    """Per round: the first lane's pairs/s over the second's (the same documents, within one round)."""
    return [(a["end"] - a["start"]) / a["seconds"] / ((b["end"] - b["start"]) / b["seconds"])
            for a, b in zip(numerator, denominator)]
