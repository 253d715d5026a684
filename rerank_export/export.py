"""Export stage: load the source once, run each requested format's exporter."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .formats import get_format
from .formats.spec import FormatSpec
from .manifest import Manifest, check_target, make_marked_dir
from .reference import SourceModel

log = logging.getLogger(__name__)


def export_formats(model: str, revision: str | None, out_root: Path, names: Sequence[str],
                   options: dict[str, dict[str, Any]] | None = None,
                   source: SourceModel | None = None, replace: bool = True) -> list[Manifest]:
    """Export every format in `names` under `out_root`; returns their manifests in order.

    An existing `<out_root>/<format>` is replaced only when it is an earlier artifact of ours and
    `replace` is set; anything else there fails before the model is loaded.
    """
    specs = [get_format(n) for n in names]  # fail on an unknown name before loading anything
    created = not os.path.lexists(out_root)
    out_root = prepare_out_root(out_root)
    try:
        for spec in specs:
            check_target(out_root / spec.name, replace=replace)
        source = source or SourceModel(model, revision)
        opts = {s.name: {**(s.options or {}), **((options or {}).get(s.name, {}))} for s in specs}
        return _export_groups(source, out_root, specs, opts, model)
    except BaseException:
        if created and not any(out_root.iterdir()):
            out_root.rmdir()  # a failed first export leaves no empty root behind
        raise


def _export_groups(source: SourceModel, out_root: Path, specs: list[FormatSpec],
                   opts: dict[str, dict[str, Any]], model: str) -> list[Manifest]:
    done: dict[str, Manifest] = {}
    for group in _groups(specs):
        log.info("exporting %s from %s", ", ".join(s.name for s in group), model)
        if group[0].exporter_many is not None:
            manifests = group[0].exporter_many(source, out_root, group, {s.name: opts[s.name] for s in group})
        else:
            manifests = [s.exporter(source, out_root, s, opts[s.name]) for s in group]
        done.update({s.name: m for s, m in zip(group, manifests)})
    return [done[s.name] for s in specs]


def prepare_out_root(out_root: str | Path) -> Path:
    """Create the artifacts root, prove it takes a folder, and clear what interrupted exports left there."""
    out_root = Path(os.path.abspath(out_root))
    if os.path.lexists(out_root) and not out_root.is_dir():
        raise UsageError(f"--out '{out_root}' is a file, not a folder: give a folder for the artifacts")
    probe = make_marked_dir(out_root, ".write-check.partial-")  # cleans leftovers; one-line error if not writable
    shutil.rmtree(probe, ignore_errors=True)
    return out_root


def _groups(specs: Sequence[FormatSpec]) -> list[list[FormatSpec]]:
    """Formats sharing an exporter_many go together (in first-seen order); the rest one by one."""
    groups: dict[Any, list[FormatSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.exporter_many or spec.name, []).append(spec)
    return list(groups.values())
