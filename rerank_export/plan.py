"""The selection stage's inputs, gathered: the artifacts' manifests from disk, the device's facts from the
host, the registry's traits; then select.choose_artifact decides (select itself stays a pure function)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from .contract import DEFAULT_MAX_LENGTH
from .errors import ArtifactError, UsageError
from .formats import FORMATS, ORIGINAL, ORIGINAL_TRAITS
from .host import device_facts
from .manifest import Manifest, load_artifacts, verify_files
from .select import Decision, FormatTraits, choose_artifact

log = logging.getLogger(__name__)


def traits_from_formats() -> dict[str, FormatTraits]:
    """FormatTraits for every entry of the FORMATS table."""
    return {name: FormatTraits(s.fidelity, s.cpu_speed, tuple(s.devices), s.dtype, s.backend, s.needs_native_bf16,
                               s.gpu_speed) for name, s in FORMATS.items()}


def original_traits(dtype: str) -> dict[str, FormatTraits]:
    """FormatTraits for the original checkpoint (vLLM serves it; no FORMATS row exports it)."""
    return {ORIGINAL: FormatTraits(dtype=dtype, **ORIGINAL_TRAITS)}


def plan(artifacts_dir: str | Path, device: str = "auto", memory_budget: int | str | None = None,
         max_length: int = DEFAULT_MAX_LENGTH, allow_unverified: bool = False,
         backends: Sequence[str] | None = None, verify: bool = False,
         check: Callable[[str, Manifest], None] | None = None,
         broken: dict[str, str] | None = None) -> tuple[Decision, dict[str, Manifest]]:
    """The selector's decision over every artifact under `artifacts_dir` (nothing loaded).

    A folder with a broken manifest is skipped with a warning naming it. With `verify`, the chosen
    artifact is checked (`check`: default its files against their sha256; load() and pick pass
    preflight.preflight, every check loading makes); one that fails is passed over for the next, as are the
    folders in `broken` ({folder: why}, e.g. failed to load), which is updated in place.
    """
    if max_length < 1:
        raise UsageError(f"max length must be positive, got {max_length}")
    manifests = {str(f): m for f, m in load_artifacts(artifacts_dir)}
    facts = device_facts(device, memory_budget)
    broken = {} if broken is None else broken
    check = check or verify_files
    while True:
        decision = choose_artifact(list(manifests.items()), facts, max_length, traits_from_formats(),
                                   allow_unverified, backends, broken)
        if not verify or decision.chosen is None:
            return decision, manifests
        try:
            check(decision.chosen.folder, manifests[decision.chosen.folder])
            return decision, manifests
        except ArtifactError as exc:
            log.warning("passing over %s: %s", decision.chosen.folder, exc)
            broken[decision.chosen.folder] = f"unusable ({exc})"
