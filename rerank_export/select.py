"""Choosing the artifact to serve: a pure function over manifests and device facts (no torch here).

Peak memory of an artifact = weights + overhead + batch tokens x activation bytes per token at the
maximum length (manifest.memory). An artifact fits when that peak at one full-length sequence stays
within the usable part of the device's memory. Among the verified artifacts that fit:

- a CPU gets the fastest format there (cpu_speed; bf16 last where the CPU emulates it);
- a GPU gets the highest gpu_speed weighed by headroom: a format's speed counts in full only when a batch
  of GPU_FULL_BATCH_TOKENS fits beside its weights, and in proportion below that, since a GPU starved of
  batch runs its kernels half empty. Fidelity breaks ties, then fewer bytes.

The same arithmetic serves GPUs and CPUs; the memory model was measured on CPUs only so far
(benchmarks/gpu_check.py holds it against a real card).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import UsageError
from .manifest import Manifest

log = logging.getLogger(__name__)

# Part of the free memory the model may use. The rest absorbs allocator fragmentation, the tokenizer
# and Python objects, and the error of the per-token estimate (benchmarks/RESULTS.md).
USABLE_FRACTION = 0.9
# Padded tokens per forward pass never exceed this: bigger batches stop paying off on CPUs and most GPUs
# and only add latency to the first result.
MAX_TOKEN_BUDGET = 32768
# A GPU runs a 0.6B-class model's GEMMs near full speed from about this many tokens per batch (the
# selector's headroom rule); below it a format's speed is scaled down in proportion.
GPU_FULL_BATCH_TOKENS = 16384

# Larger sizes are typos; the cap keeps every byte count finite (a float of 400 nines is inf).
MAX_MEMORY_BYTES = 2**60

UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
         "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str) -> int:
    """'4GiB', '512MiB', '6GB', '1.5g' or a plain byte count -> bytes (1 byte to 1 EiB)."""
    text = str(text)
    shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in UNITS or float(match.group(1)) * UNITS[unit] < 1:
        raise UsageError(f"memory '{shown}' is not a size: write e.g. 4GiB, 512MiB or 6GB")
    value = float(match.group(1)) * UNITS[unit]  # 400 nines parse as inf
    if not math.isfinite(value) or value > MAX_MEMORY_BYTES:
        raise UsageError(f"memory '{shown}' is too large: at most 1 EiB; write e.g. 4GiB, 512MiB or 6GB")
    return int(value)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def cpu_supports_bf16(cpuinfo: str) -> bool:
    """Native bf16 matmuls on x86 (AVX512-BF16 or AMX) or Arm (bf16 in Features), from /proc/cpuinfo text."""
    flags = set(re.findall(r"[a-z0-9_]+", "\n".join(
        line.split(":", 1)[1] for line in cpuinfo.splitlines()
        if line.lower().startswith(("flags", "features")) and ":" in line)))
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@dataclass(frozen=True)
class DeviceFacts:
    """What the selector knows about the target device; plain numbers, gathered elsewhere."""

    kind: str  # "cpu" | "cuda"
    free_bytes: int
    total_bytes: int
    source: str  # where the numbers came from: "psutil", "cuda driver", "--memory"
    cpu_bf16: bool = False

    @property
    def usable_bytes(self) -> int:
        return int(self.free_bytes * USABLE_FRACTION)


@dataclass(frozen=True)
class FormatTraits:
    """The FORMATS-table facts the selector ranks by (copied out so this module stays import-light)."""

    fidelity: int
    cpu_speed: int
    devices: tuple[str, ...]
    dtype: str
    backend: str
    needs_native_bf16: bool = False  # slower than fp32 where the CPU emulates bf16
    gpu_speed: int = 0


@dataclass(frozen=True)
class Candidate:
    """One artifact as the selector saw it."""

    folder: str
    format: str
    weight_bytes: int
    peak_bytes: int  # with one full-length sequence
    fits: bool
    verdict: str  # pass | fail | unchecked
    eligible: bool
    reason: str  # why it fits or not / why it is not eligible
    rank: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Decision:
    device: DeviceFacts
    max_length: int
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    token_budget: int
    allow_unverified: bool
    note: str = ""
    preference: str = field(default="")

    @property
    def unverified(self) -> bool:
        return self.chosen is not None and self.chosen.verdict != "pass"


def verdict_of(manifest: Manifest) -> str:
    if not manifest.parity:
        return "unchecked"
    return "pass" if manifest.verified else "fail"


def token_budget(manifest: Manifest, usable_bytes: int, max_length: int) -> int:
    """Padded tokens per batch that fit beside the weights, at least one full sequence, capped."""
    mem = manifest.memory
    room = usable_bytes - mem.weight_bytes - mem.overhead_bytes
    tokens = int(room // max(1.0, mem.bytes_per_token(max_length)))
    return int(max(max_length, min(MAX_TOKEN_BUDGET, tokens)))


def gpu_score(traits: FormatTraits, budget: int) -> float:
    """gpu_speed, scaled down where fewer than GPU_FULL_BATCH_TOKENS fit in a batch beside the weights."""
    return round(traits.gpu_speed * min(1.0, budget / GPU_FULL_BATCH_TOKENS), 3)


def _rank(traits: FormatTraits, device: DeviceFacts, budget: int) -> tuple[Any, ...]:
    if device.kind == "cpu":
        # Without native bf16 the CPU emulates it and a bf16 PyTorch model runs slower than fp32.
        native = device.cpu_bf16 or not traits.needs_native_bf16
        return (native, traits.cpu_speed, traits.fidelity)
    return (gpu_score(traits, budget), traits.fidelity)


def assess(folder: str, manifest: Manifest, traits: FormatTraits | None, device: DeviceFacts,
           max_length: int, allow_unverified: bool, backends: Iterable[str] | None = None) -> Candidate:
    """One artifact's fit, verdict and eligibility, each with its reason."""
    verdict = verdict_of(manifest)
    peak = manifest.memory.peak_bytes(max_length)
    usable = device.usable_bytes
    fits = peak <= usable
    if fits:
        why = f"fits: {format_bytes(peak)} of {format_bytes(usable)} usable"
    elif manifest.memory.weight_bytes + manifest.memory.overhead_bytes >= usable:
        why = f"weights alone ({format_bytes(manifest.memory.weight_bytes)}) leave no room in " \
              f"{format_bytes(usable)} usable"
    else:
        why = f"one {max_length}-token sequence needs {format_bytes(peak)} > {format_bytes(usable)} usable"
    blocker = _blocker(manifest, traits, device, max_length, verdict, allow_unverified, backends)
    rank = _rank(traits, device, token_budget(manifest, usable, max_length)) if traits else ()
    return Candidate(folder, manifest.format, manifest.memory.weight_bytes, peak, fits, verdict,
                     fits and blocker is None, blocker or why, rank)


def _blocker(manifest: Manifest, traits: FormatTraits | None, device: DeviceFacts, max_length: int,
             verdict: str, allow_unverified: bool, backends: Iterable[str] | None) -> str | None:
    if traits is None:
        return f"unknown format '{manifest.format}' (this rerank-export does not know it)"
    if device.kind not in traits.devices:
        return f"runs on {'/'.join(traits.devices)} only, not {device.kind}"
    if backends is not None and traits.backend not in set(backends):
        return f"{traits.backend} backend is not servable by this engine"
    if max_length > manifest.max_length:
        return f"supports at most {manifest.max_length} tokens, {max_length} requested"
    if verdict != "pass" and not allow_unverified:
        return "parity failed" if verdict == "fail" else "parity never checked (run rerank-export parity)"
    return None


def choose_artifact(artifacts: Sequence[tuple[str | Path, Manifest]], device: DeviceFacts, max_length: int,
                    traits: Mapping[str, FormatTraits], allow_unverified: bool = False,
                    backends: Iterable[str] | None = None, broken: Mapping[str, str] | None = None) -> Decision:
    """The artifact to serve on `device` at `max_length`, with every candidate and why; pure.

    `broken` maps folders found unusable elsewhere (files not matching their sha256) to the reason.
    """
    backends = None if backends is None else tuple(backends)
    cands = tuple(assess(str(folder), m, traits.get(m.format), device, max_length, allow_unverified, backends)
                  for folder, m in artifacts)
    cands = tuple(replace(c, eligible=False, reason=broken[c.folder]) if c.folder in (broken or {}) else c
                  for c in cands)
    eligible = [c for c in cands if c.eligible]
    # Verified first even when unverified ones are allowed; then the device's preference.
    chosen = max(eligible, key=lambda c: (c.verdict == "pass", c.rank, -c.weight_bytes), default=None)
    budget = 0
    if chosen is not None:
        manifest = {str(f): m for f, m in artifacts}[chosen.folder]
        budget = token_budget(manifest, device.usable_bytes, max_length)
    note = "" if chosen is None or chosen.verdict == "pass" else \
        f"UNVERIFIED: {chosen.format} parity {chosen.verdict}; chosen only because --allow-unverified was given"
    preference = "fastest on this CPU" if device.kind == "cpu" else "fastest on this GPU with room for its batches"
    return Decision(device, max_length, cands, chosen, budget, allow_unverified, note, preference)


def why_nothing(decision: Decision) -> str:
    """One line saying why no artifact was chosen, and what to do."""
    if not decision.candidates:
        return "no artifacts to choose from"
    reasons = "; ".join(f"{Path(c.folder).name}: {c.reason}" for c in decision.candidates)
    return (f"no artifact fits {format_bytes(decision.device.usable_bytes)} usable on {decision.device.kind} "
            f"at max length {decision.max_length} ({reasons}); lower --max-length, give --memory, or export a "
            "smaller format and run parity on it")


def render_decision(decision: Decision) -> str:
    """The table `rerank-export pick` prints: every candidate, its numbers, verdict, and the choice."""
    d = decision.device
    bf16 = f"; native bf16: {'yes' if d.cpu_bf16 else 'no'}" if d.kind == "cpu" else ""
    lines = [(f"device: {d.kind}, {format_bytes(d.free_bytes)} free ({d.source}), "
              f"{format_bytes(d.usable_bytes)} usable; max length {decision.max_length}{bf16}"),
             (f"{'artifact':<22} {'format':<16} {'weights':>11} {'est. peak':>11}  {'fits':<4}  "
              f"{'parity':<9}  reason")]
    for c in decision.candidates:
        lines.append(f"{Path(c.folder).name:<22} {c.format:<16} {format_bytes(c.weight_bytes):>11} "
                     f"{format_bytes(c.peak_bytes):>11}  {'yes' if c.fits else 'no':<4}  {c.verdict:<9}  "
                     f"{c.reason}")
    if decision.chosen is None:
        lines.append(f"choice: none. {why_nothing(decision)}")
    else:
        lines.append(f"choice: {Path(decision.chosen.folder).name} ({decision.preference}; batches of up to "
                     f"{decision.token_budget} tokens)")
        if decision.note:
            lines.append(decision.note)
    return "\n".join(lines)
