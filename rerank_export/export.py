"""The export stage: load the source once; per format, write the artifact into a temp folder (its
exporter), measure it (memory.measure_artifact), and only then rename it into place."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .errors import UsageError
from .formats import get_format, parse_format_options
from .formats.options import as_table
from .formats.spec import FormatSpec
from .manifest import Manifest, atomic_dir, check_target, make_marked_dir
from .memory import measure_artifact
from .reference import SourceModel

log = logging.getLogger(__name__)

OPTIONS_KEY = "options"  # manifest.details[OPTIONS_KEY]: the exporter's options as a table


def export_formats(model: str, revision: str | None, out_root: Path, names: Sequence[str],
                   options: dict[str, Any] | None = None,
                   source: SourceModel | None = None, replace: bool = True,
                   where: dict[str, str] | None = None) -> list[Manifest]:
    """Export every format in `names` under `out_root`; returns their (measured) manifests in order.

    `options` maps a format to its options (a table or the format's options dataclass); `where` names
    where each table came from, for errors. An existing `<out_root>/<format>` is replaced only when it is
    an earlier artifact of ours and `replace` is set; anything else there fails before the model is loaded.
    """
    specs = [get_format(n) for n in names]  # fail on an unknown name or option before loading anything
    opts = {s.name: parse_format_options(s, (options or {}).get(s.name), (where or {}).get(s.name)) for s in specs}
    created = not os.path.lexists(out_root)
    out_root = prepare_out_root(out_root)
    try:
        for spec in specs:
            check_target(out_root / spec.name, replace=replace)
        source = source or SourceModel(model, revision)
        return _export_groups(source, out_root, specs, opts, model, replace)
    except BaseException:
        if created and not any(out_root.iterdir()):
            out_root.rmdir()  # a failed first export leaves no empty root behind
        raise


def _export_groups(source: SourceModel, out_root: Path, specs: list[FormatSpec], opts: dict[str, Any],
                   model: str, replace: bool) -> list[Manifest]:
    done: dict[str, Manifest] = {}
    for group in _groups(specs):
        log.info("exporting %s from %s", ", ".join(s.name for s in group), model)
        with ExitStack() as stack:  # every folder of the group is renamed into place together, at the end
            folders = {s.name: stack.enter_context(atomic_dir(out_root / s.name, replace)) for s in group}
            manifests = _write(source, group, folders, opts)
            for manifest in manifests:
                record_options(manifest, opts[manifest.format])
                log.info("measuring the activation memory of %s", manifest.format)
                done[manifest.format] = measure_artifact(folders[manifest.format], manifest)
    return [done[s.name] for s in specs]


def _write(source: SourceModel, group: list[FormatSpec], folders: dict[str, Path],
           opts: dict[str, Any]) -> list[Manifest]:
    if group[0].exporter_many is not None:
        return group[0].exporter_many(source, folders, group, {s.name: opts[s.name] for s in group})
    return [s.exporter(source, folders[s.name], s, opts[s.name]) for s in group]


def record_options(manifest: Manifest, options: Any) -> None:
    """The options the artifact was built with, every default spelled out, in `details["options"]`
    (written with the measurement next). Manifests from before lack the key: nothing reads it to load."""
    manifest.details[OPTIONS_KEY] = as_table(options)


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
