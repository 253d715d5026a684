"""Export stage: load the source once, run each requested format's exporter."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .formats import get_format
from .formats.spec import FormatSpec
from .manifest import Manifest
from .reference import SourceModel

log = logging.getLogger(__name__)


def export_formats(model: str, revision: str | None, out_root: Path, names: Sequence[str],
                   options: dict[str, dict[str, Any]] | None = None,
                   source: SourceModel | None = None) -> list[Manifest]:
    """Export every format in `names` under `out_root`; returns their manifests in order."""
    specs = [get_format(n) for n in names]  # fail on an unknown name before loading anything
    source = source or SourceModel(model, revision)
    opts = {s.name: {**(s.options or {}), **((options or {}).get(s.name, {}))} for s in specs}
    done: dict[str, Manifest] = {}
    for group in _groups(specs):
        log.info("exporting %s from %s", ", ".join(s.name for s in group), model)
        if group[0].exporter_many is not None:
            manifests = group[0].exporter_many(source, Path(out_root), group, {s.name: opts[s.name] for s in group})
        else:
            manifests = [s.exporter(source, Path(out_root), s, opts[s.name]) for s in group]
        done.update({s.name: m for s, m in zip(group, manifests)})
    return [done[s.name] for s in specs]


def _groups(specs: Sequence[FormatSpec]) -> list[list[FormatSpec]]:
    """Formats sharing an exporter_many go together (in first-seen order); the rest one by one."""
    groups: dict[Any, list[FormatSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.exporter_many or spec.name, []).append(spec)
    return list(groups.values())
