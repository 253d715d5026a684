"""Every FORMATS entry is exported and gated: the demo recipe builds them all and each passes parity."""

from __future__ import annotations

from pathlib import Path

from rerank_export.build import build
from rerank_export.formats import FORMATS
from rerank_export.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "recipes" / "tiny-demo.toml"


def test_the_demo_recipe_covers_every_format():
    """A new format must join the demo recipe, and so this suite's export + parity test below."""
    assert sorted(load_recipe(DEMO).artifact_names()) == sorted(FORMATS)


def test_every_format_exports_and_passes_parity(tmp_path):
    demo = load_recipe(DEMO)
    recipe = parse_recipe({
        "name": "every-format",
        "source": {"model": str(tmp_path / "tiny"), "tiny_seed": 0},
        "artifacts": [{"format": a.format, "options": a.options} for a in demo.artifacts],
        "parity": {"eval": ["builtin"]},
        "targets": [{"name": "cpu", "device": "cpu", "memory": "8GiB"}],
    })
    result = build(recipe, tmp_path / "artifacts", progress=False)
    verdicts = {name: (m.parity or {}).get("verdict") for name, m in result.manifests.items()}
    assert verdicts == {name: "pass" for name in FORMATS}, result.summary
    assert result.targets[0][1].chosen is not None
