"""Which cores vLLM's CPU build binds its OpenMP threads to, chosen from the host.

vLLM's own default (VLLM_CPU_OMP_THREADS_BIND=auto, vllm/utils/ompmultiprocessing.py in vLLM 0.32; the
"CPU" installation page of docs.vllm.ai describes the same variables) binds rank N's threads to one logical
CPU per physical core of the N-th NUMA node and reserves one core per rank for its scheduler process. On a
big host one core of many is a fair price. On a small one it halves the compute: on a 2-core EPYC,
baseline-bf16 on the 0.6B shape scored 0.733 pairs/s with the default and 1.347 with both cores bound and
none reserved (issue 29's measurement). The scheduler process mostly waits while a step runs.

So: on hosts with at most SMALL_HOST_CORES usable cores, bind every usable core and reserve none; on larger
ones follow vLLM's rule (the first NUMA node's cores, one logical CPU per physical core, one reserved), but
within what this process may use: its CPU affinity and its cgroup's CPU quota, which vLLM's auto mode does
not read (in a container limited to 4 CPUs of a 64-core host it would start 31 threads on them).
A user's own VLLM_CPU_OMP_THREADS_BIND or VLLM_CPU_NUM_OF_RESERVED_CPU in the environment wins.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

BIND_ENV, RESERVED_ENV = "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU"
SMALL_HOST_CORES = 4


@dataclass(frozen=True)
class HostCpus:
    """What this process may run on: allowed logical CPUs, the cgroup quota in cores, NUMA nodes, SMT siblings."""

    allowed: tuple[int, ...]
    quota_cores: float | None = None  # cgroup cpu.max quota / period; None: no quota
    numa_nodes: tuple[tuple[int, ...], ...] = ()  # each node's CPUs; empty: one node
    siblings: dict[int, int] = field(default_factory=dict)  # logical CPU -> its physical core's first CPU

    @property
    def usable_cores(self) -> int:
        cores = len({self.siblings.get(c, c) for c in self.allowed})
        return max(1, min(cores, math.floor(self.quota_cores))) if self.quota_cores else cores


def binding(host: HostCpus, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment vLLM's CPU build gets: {} where the user set either variable (theirs pass through)."""
    environ = os.environ if environ is None else environ
    if BIND_ENV in environ or RESERVED_ENV in environ:
        return {}
    if host.usable_cores <= SMALL_HOST_CORES:
        return {BIND_ENV: id_list(_one_per_core(host, host.allowed)[: host.usable_cores]), RESERVED_ENV: "0"}
    node = next((n for n in host.numa_nodes if set(n) & set(host.allowed)), host.allowed)
    cores = _one_per_core(host, [c for c in node if c in host.allowed])[: host.usable_cores]
    return {BIND_ENV: id_list(cores[:-1]), RESERVED_ENV: "1"}  # the last core stays the scheduler's


def _one_per_core(host: HostCpus, cpus: list[int] | tuple[int, ...]) -> list[int]:
    """One logical CPU per physical core (SMT siblings share a core's units), in CPU order."""
    seen: set[int] = set()
    chosen = []
    for cpu in sorted(cpus):
        core = host.siblings.get(cpu, cpu)
        if core not in seen:
            seen.add(core)
            chosen.append(cpu)
    return chosen


def id_list(cpus: list[int]) -> str:
    """'0-3,8' for [0, 1, 2, 3, 8] (the form VLLM_CPU_OMP_THREADS_BIND reads)."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def parse_id_list(text: str) -> list[int]:
    """[0, 1, 2, 3, 8] for '0-3,8' (sysfs cpulist files)."""
    cpus: list[int] = []
    for part in filter(None, text.strip().split(",")):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def read_host(sys_root: Path = Path("/sys")) -> HostCpus:
    """This process's HostCpus from its affinity, cgroup v2 cpu.max and sysfs (Linux; elsewhere: all CPUs)."""
    allowed = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") \
        else tuple(range(os.cpu_count() or 1))
    nodes = [tuple(parse_id_list(_read(p / "cpulist") or "")) for p in sorted(
        (sys_root / "devices/system/node").glob("node[0-9]*"), key=lambda p: int(p.name[4:]))]
    siblings = {}
    for cpu in allowed:
        first = parse_id_list(_read(sys_root / f"devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") or str(cpu))
        siblings[cpu] = min(first or [cpu])
    return HostCpus(allowed, _quota(sys_root / "fs/cgroup/cpu.max"), tuple(n for n in nodes if n), siblings)


def _quota(path: Path) -> float | None:
    """Cores of a cgroup v2 cpu.max ('max 100000' is no quota)."""
    quota, _, period = (_read(path) or "max").partition(" ")
    try:
        return int(quota) / int(period or 100000) if quota != "max" else None
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
