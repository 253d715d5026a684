from pathlib import Path

import pytest
import tomllib

from rerank_export.errors import RecipeError
from rerank_export.formats import FORMATS, parse_format_options
from rerank_export.formats.awq import AwqOptions
from rerank_export.formats.spec import Thresholds
from rerank_export.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "r", "source": {"model": "m"}, "artifacts": [{"format": "baseline-bf16"}]}


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    recipe = load_recipe(path)
    assert recipe.artifacts and recipe.targets and recipe.parity.eval


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_override_only_what_differs_from_formats(path):
    # FORMATS holds the limits; a recipe that copies one would keep an old value when FORMATS changes.
    thresholds = tomllib.loads(path.read_text()).get("parity", {}).get("thresholds", {})
    for name, limits in thresholds.items():
        same = {k: v for k, v in limits.items() if getattr(FORMATS[name].thresholds, k) == v}
        assert not same, f"{path.name}: [parity.thresholds.{name}] repeats FORMATS' {same}"


def test_a_recipe_is_read_into_typed_objects():
    recipe = parse_recipe({**MINIMAL, "artifacts": [{"format": "awq-int4", "options": {"group_size": 64}}],
                           "parity": {"thresholds": {"awq-int4": {"max_abs_dp": 0.5, "min_top1": 0}}}})
    (artifact,) = recipe.artifacts
    assert artifact.options == {"group_size": 64}  # as written: the recipe stamp compares it
    assert artifact.parsed == AwqOptions(group_size=64)
    limits = recipe.parity.thresholds["awq-int4"]  # FORMATS' limits with the two overrides in place
    assert isinstance(limits, Thresholds) and limits.min_top1 == 0.0 and isinstance(limits.min_top1, float)
    assert limits == Thresholds(**{**FORMATS["awq-int4"].thresholds.__dict__, "max_abs_dp": 0.5, "min_top1": 0.0})


def test_minimal_recipe_gets_defaults():
    recipe = parse_recipe(MINIMAL)
    assert recipe.parity.eval == ("builtin",) and recipe.targets == () and recipe.source.revision is None


@pytest.mark.parametrize("patch, message", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"source": {"model": "m", "revison": "x"}}, "unknown key 'revison'"),
    ({"artifacts": [{"format": "gguf-q4"}]}, "artifacts[0]: 'gguf-q4' is not a known artifact format; known: awq-int4"),
    ({"artifacts": [{"format": "baseline-bf16", "dtype": "bf16"}]}, "unknown key 'dtype'"),
    ({"artifacts": []}, "is empty"),
    ({"parity": {"thresholds": {"baseline-bf16": {"max_dp": 1}}}}, "thresholds.baseline-bf16: unknown threshold 'max_dp' (known: max_abs_dp"),
    ({"targets": [{"name": "t", "device": "tpu", "memory": "4GiB"}]}, "'device' must be 'cuda' or 'cpu', not 'tpu'"),
    ({"targets": [{"name": "t", "device": "cuda", "memory": "lots"}]}, "is not a size"),
])
def test_bad_recipes_name_the_key(patch, message):
    with pytest.raises(Exception) as exc:
        parse_recipe({**MINIMAL, **patch})
    assert message in str(exc.value)


@pytest.mark.parametrize("patch, message", [
    ({"name": 7}, "'name' must be a non-empty string, not 7"),
    ({"source": {"model": 42}}, "[source]: 'model' must be a non-empty string, not 42"),
    ({"source": {"model": "m", "tiny_seed": -1}}, "'tiny_seed' must be an integer from 0"),
    ({"source": {"revision": "main"}}, "[source]: 'model' is missing"),
    ({"source": "m"}, "'source' must be a table, not 'm'"),
    ({"artifacts": [{"format": "awq-int4", "options": {"calib_samples": "abc"}}]},
     "artifacts[0]: options for awq-int4: 'calib_samples' must be a positive integer, not 'abc'"),
    ({"artifacts": [{"format": "awq-int4", "options": {"calib_sample": 3}}]},
     "options for awq-int4: unknown option 'calib_sample' (known: alpha_stride, batch_tokens, calib,"),
    ({"artifacts": [{"format": "awq-int4", "options": {"progress": False}}]},  # output settings are not options
     "unknown option 'progress'"),
    # 4-bit is the format, not an option (the flag `rerank-export awq --w-bit 4` stays, a no-op)
    ({"artifacts": [{"format": "awq-int4", "options": {"w_bit": 4}}]}, "options for awq-int4: unknown option 'w_bit'"),
    # MatMulNBits block sizes: onnxruntime would assert this only after the whole AWQ search
    ({"artifacts": [{"format": "onnx-int4", "options": {"group_size": 96}}]},
     "artifacts[0]: options for onnx-int4: 'group_size' must be a power of two from 16 (16, 32, 64, 128...), not 96"),
    ({"artifacts": [{"format": "onnx-int4", "options": {"embedding_block_size": 8}}]},
     "'embedding_block_size' must be a power of two from 16"),
    ({"artifacts": [{"format": "onnx-int8", "options": {"block_size": 0}}]}, "'block_size' must be a power of two"),
    ({"artifacts": [{"format": "onnx-fp16", "options": {"fp32_ops": ["Softmax", 3]}}]},
     "'fp32_ops' must be a non-empty list of strings"),
    ({"artifacts": [{"format": "onnx-int8", "options": {"opset": 23}}]}, "'opset' must be one of 18, 19, 20"),
    ({"artifacts": [{"format": "baseline-bf16", "options": {"x": 1}}]}, "options for baseline-bf16: unknown option 'x' (known: none)"),
    ({"artifacts": [{"format": "baseline-bf16", "options": 5}]}, "'options' must be a table, not 5"),
    ({"artifacts": [{"format": "baseline-bf16"}, {"format": "baseline-bf16"}]}, "'baseline-bf16' appears more"),
    ({"artifacts": ["baseline-bf16"]}, "artifacts[0]: expected a table"),
    ({"parity": {"max_queries": "abc"}}, "[parity]: 'max_queries' must be a positive integer, not 'abc'"),
    ({"parity": {"max_queries": 0}}, "'max_queries' must be a positive integer, not 0"),
    ({"parity": {"eval": "builtin"}}, "'eval' must be a non-empty list of strings"),
    ({"parity": {"eval": []}}, "'eval' must be a non-empty list of strings"),
    ({"parity": {"thresholds": 5}}, "[parity]: 'thresholds' must be a table, not 5"),
    ({"parity": {"thresholds": {"awq-int4": 5}}}, "thresholds.awq-int4: expected a table"),
    ({"parity": {"thresholds": {"awq-int4": {"max_abs_dp": "abc"}}}},
     "thresholds.awq-int4: 'max_abs_dp' must be a finite number from 0 to 1, not 'abc'"),
    ({"parity": {"thresholds": {"awq-int4": {"max_abs_dp": float("nan")}}}},
     "'max_abs_dp' must be a finite number from 0 to 1, not nan"),
    ({"parity": {"thresholds": {"awq-int4": {"min_top1": float("inf")}}}}, "'min_top1' must be a finite number from 0 to 1, not inf"),
    ({"parity": {"thresholds": {"gguf": {"min_top1": 1}}}}, "thresholds.gguf: 'gguf' is not a known artifact format"),
    ({"targets": [{"name": "t", "device": "cpu", "memory": "4GiB", "max_length": "big"}]},
     "targets[0]: 'max_length' must be an integer from 1 to 1048576, not 'big'"),
    ({"targets": [{"name": "t", "device": "cpu", "memory": "9" * 400}]}, "is too large"),
    ({"targets": [{"name": "t", "device": "cpu", "memory": True}]}, "'memory' must be a size"),
    ({"targets": [{"name": "t", "device": "cpu"}]}, "targets[0]: 'memory' is missing"),
    ({"targets": [{"name": "t", "device": "cpu", "memory": "1GiB"}] * 2}, "name 't' appears more than once"),
])
def test_every_value_is_checked_when_read(patch, message):
    with pytest.raises(RecipeError) as exc:
        parse_recipe({**MINIMAL, **patch}, "r.toml")
    assert message in str(exc.value) and str(exc.value).startswith("r.toml: ")


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_parses_its_defaults_and_round_trips(name):
    from rerank_export.formats.options import as_table

    spec = FORMATS[name]
    defaults = parse_format_options(spec, {})
    assert parse_format_options(spec, as_table(defaults)) == defaults  # lists back to tuples, same values


def test_valid_options_thresholds_and_targets_pass():
    recipe = parse_recipe({**MINIMAL, "artifacts": [
        {"format": "awq-int4", "options": {"calib_samples": 8, "group_size": 64, "clip": False}},
        {"format": "onnx-int4", "options": {"opset": 19, "quantize_embedding": False, "max_shrink": 0.25}}],
        "parity": {"max_queries": 3, "thresholds": {"awq-int4": {"max_abs_dp": 0.05, "min_spearman_worst": -1}}},
        "targets": [{"name": "t", "device": "cpu", "memory": 2**30, "max_length": 512}]})
    assert recipe.parity.max_queries == 3 and recipe.targets[0].max_length == 512


def test_toml_nan_threshold_names_the_file_and_key(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('name = "r"\n[source]\nmodel = "m"\n[[artifacts]]\nformat = "awq-int4"\n'
                    '[parity.thresholds.awq-int4]\nmax_abs_dp = nan\n')
    with pytest.raises(RecipeError, match=r"r\.toml: \[parity\]: thresholds\.awq-int4: 'max_abs_dp' must be a finite"):
        load_recipe(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
