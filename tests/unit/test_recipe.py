from pathlib import Path

import pytest

from rerank_export.errors import RecipeError
from rerank_export.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "r", "source": {"model": "m"}, "artifacts": [{"format": "baseline-bf16"}]}


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    recipe = load_recipe(path)
    assert recipe.artifacts and recipe.targets and recipe.parity.eval


def test_minimal_recipe_gets_defaults():
    recipe = parse_recipe(MINIMAL)
    assert recipe.parity.eval == ("builtin",) and recipe.targets == () and recipe.source.revision is None


@pytest.mark.parametrize("patch, message", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"source": {"model": "m", "revison": "x"}}, "unknown key 'revison'"),
    ({"artifacts": [{"format": "gguf-q4"}]}, "format 'gguf-q4' is unknown"),
    ({"artifacts": [{"format": "baseline-bf16", "dtype": "bf16"}]}, "unknown key 'dtype'"),
    ({"artifacts": []}, "is empty"),
    ({"parity": {"thresholds": {"baseline-bf16": {"max_dp": 1}}}}, "unknown key 'max_dp'"),
    ({"targets": [{"name": "t", "device": "tpu", "memory": "4GiB"}]}, "device 'tpu'"),
    ({"targets": [{"name": "t", "device": "cuda", "memory": "lots"}]}, "is not a size"),
])
def test_bad_recipes_name_the_key(patch, message):
    with pytest.raises(Exception) as exc:
        parse_recipe({**MINIMAL, **patch})
    assert message in str(exc.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
