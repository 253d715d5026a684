"""benchmarks/lockstep.py: lanes in their own processes take turns on the same chunks, in order, and a lane
that dies is reported while the others go on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from lockstep import Lane, pairs_per_s, round_ratios, run_lockstep

# A worker speaking _procstat's protocol: it answers with when it ran, and sleeps `delay` s per document.
WORKER = """
import sys, time
sys.path.insert(0, {benchmarks!r})
from _procstat import serve_lockstep
print("a library's own chatter on stdout", flush=True)

def measure(start, end):
    began = time.time()
    time.sleep({delay} * (end - start))
    return {{"began": began, "ended": time.time()}}

serve_lockstep(measure)
"""


def lane(name: str, delay: float) -> Lane:
    return Lane(name, [sys.executable, "-c", WORKER.format(benchmarks=str(BENCHMARKS), delay=delay)])


def test_lanes_take_turns_on_the_same_chunks_in_order() -> None:
    lanes = run_lockstep([lane("fast", 0.01), lane("slow", 0.03)], docs=5, chunk=2, timeout=60)
    fast, slow = lanes["fast"]["rounds"], lanes["slow"]["rounds"]
    assert [(r["start"], r["end"]) for r in fast] == [(0, 2), (2, 4), (4, 5)]
    assert [(r["start"], r["end"]) for r in slow] == [(0, 2), (2, 4), (4, 5)]
    for k in range(3):  # round k: fast, then slow, then round k + 1's fast
        assert fast[k]["ended"] <= slow[k]["began"]
        if k + 1 < 3:
            assert slow[k]["ended"] <= fast[k + 1]["began"]
    assert all(r["seconds"] >= 0.01 * (r["end"] - r["start"]) for r in fast)
    assert pairs_per_s(fast) > pairs_per_s(slow)
    assert all(ratio > 1.5 for ratio in round_ratios(fast, slow))  # ~3x, sleeps are not exact


def test_a_lane_that_dies_is_reported_and_the_others_go_on() -> None:
    dead = Lane("dead", [sys.executable, "-c", "import sys; sys.exit(3)"])
    lanes = run_lockstep([dead, lane("alive", 0.0)], docs=3, chunk=1, timeout=60)
    assert lanes["dead"]["rounds"] == [] and "exit 3" in lanes["dead"]["error"]
    assert len(lanes["alive"]["rounds"]) == 3 and "error" not in lanes["alive"]


def test_a_worker_that_hangs_times_out() -> None:
    hung = Lane("hung", [sys.executable, "-c", "import time; time.sleep(60)"])
    lanes = run_lockstep([hung], docs=1, chunk=1, timeout=1)
    assert "did not answer in 1 s" in lanes["hung"]["error"]


def test_round_ratios_compare_the_same_turns() -> None:
    a = [{"start": 0, "end": 10, "seconds": 2.0}, {"start": 10, "end": 20, "seconds": 4.0}]
    b = [{"start": 0, "end": 10, "seconds": 4.0}, {"start": 10, "end": 20, "seconds": 4.0}]
    assert round_ratios(a, b) == [2.0, 1.0]
    assert pairs_per_s(a) == pytest.approx(20 / 6)
