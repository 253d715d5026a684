"""Export stage: load the source once, run each requested format's exporter."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .formats import get_format
from .manifest import Manifest
from .reference import SourceModel

log = logging.getLogger(__name__)


def export_formats(model: str, revision: str | None, out_root: Path, names: Sequence[str],
                   options: dict[str, dict[str, Any]] | None = None,
                   source: SourceModel | None = None) -> list[Manifest]:
    """Export every format in `names` under `out_root`; returns their manifests in order."""
    specs = [get_format(n) for n in names]  # fail on an unknown name before loading anything
    source = source or SourceModel(model, revision)
    manifests = []
    for spec in specs:
        opts = {**(spec.options or {}), **((options or {}).get(spec.name, {}))}
        log.info("exporting %s from %s", spec.name, model)
        manifests.append(spec.exporter(source, Path(out_root), spec, opts))
    return manifests
