"""The code's shape as the pipeline's: formats below measurement, the registry as the one source of
format knowledge, typed options, and the AWQ search cache shared by awq-int4 and onnx-int4."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

from rerank_export.errors import UsageError
from rerank_export.formats import FORMATS, family_formats, parse_format_options

PACKAGE = Path(__file__).resolve().parents[2] / "rerank_export"


def _imports(path: Path) -> set[str]:
    """Modules a file imports, relative ones resolved against the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = list(parts[:-1])  # what `.` means in this file (a package's __init__ included)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.add(".".join([*base, *([node.module] if node.module else [])]))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_formats_sit_below_measurement_parity_and_selection():
    above = ("rerank_export.memory", "rerank_export.parity", "rerank_export.build", "rerank_export.runtime",
             "rerank_export.export", "rerank_export.tiny")
    for path in (PACKAGE / "formats").rglob("*.py"):
        wrong = sorted(m for m in _imports(path) if m.startswith(above))
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong}"


def test_command_choices_come_from_the_registry():
    from rerank_export.commands import baseline, onnx

    assert {FORMATS[n].dtype for n in FORMATS if n.startswith("baseline-")} == set(baseline.FORMATS)
    assert sorted(onnx.FLOAT + onnx.QUANTIZED) == sorted(family_formats("onnx"))
    assert onnx.format_names(["fp16"], ["int4"]) == ["onnx-fp16", "onnx-int4"]


def test_unknown_options_name_where_they_came_from_and_the_known_keys():
    with pytest.raises(UsageError) as exc:
        parse_format_options(FORMATS["onnx-int8"], {"per_chanel": False}, "recipe 'r.toml': options for onnx-int8")
    message = str(exc.value)
    assert message.startswith("recipe 'r.toml': options for onnx-int8: unknown option 'per_chanel'")
    assert "per_channel" in message and "reduce_range" in message


def test_options_are_typed_and_shared_where_the_work_is():
    int4 = parse_format_options(FORMATS["onnx-int4"], {"calib_samples": 8, "clip": False})
    awq = parse_format_options(FORMATS["awq-int4"], {"calib_samples": 8, "clip": False})
    assert int4.settings() == awq.settings() and int4.calibration is not None  # same search, same cache key
    with pytest.raises(UsageError, match="'clip' must be true or false, not 1"):
        parse_format_options(FORMATS["awq-int4"], {"clip": 1})


def test_the_search_cache_key_follows_weights_settings_and_calibration(source):
    import torch

    from rerank_export.awq.cache import search_key
    from rerank_export.awq.settings import SearchSettings
    from rerank_export.calibration import CalibrationSet

    calib = CalibrationSet("builtin", ((1, 2, 3), (4, 5)), 2)
    key = search_key(source, SearchSettings(), calib)
    assert key == search_key(source, SearchSettings(), CalibrationSet("renamed", ((1, 2, 3), (4, 5)), 9))
    assert key != search_key(source, SearchSettings(clip=False), calib)
    assert key != search_key(source, SearchSettings(), CalibrationSet("builtin", ((1, 2, 3), (4, 6)), 2))
    other = copy.copy(source)
    other.lm = copy.deepcopy(source.lm)
    with torch.no_grad():
        other.lm.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3
    assert key != search_key(other, SearchSettings(), calib)


def test_an_unreadable_cached_search_is_run_again(source, tmp_path, monkeypatch):
    from rerank_export.awq.cache import RESULT_FILE, cached_search, search_key
    from rerank_export.awq.search import AWQResult

    monkeypatch.setenv("RERANK_EXPORT_CACHE", str(tmp_path))
    options = parse_format_options(FORMATS["awq-int4"], {"calib_samples": 4, "search_tokens": 128, "clip": False})
    calib = options.calibration(source.tokenizer)
    path = tmp_path / "awq-search" / search_key(source, options.settings(), calib) / RESULT_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    result, provenance = cached_search(source, options.settings(), calib, progress=False)
    assert provenance["search_from"] == "this export" and AWQResult.load(path).settings == result.settings
    again, provenance = cached_search(source, options.settings(), calib, progress=False)
    assert provenance["search_from"] == "cache"
    assert all((a.scales == b.scales).all() for a, b in zip(again.scales, result.scales))
