"""`rerank-export build` on a tiny recipe: export -> parity -> selection -> SUMMARY.md, then a no-op rebuild."""

from __future__ import annotations

import pytest

from rerank_export.cli import main
from rerank_export.manifest import read_manifest

pytestmark = pytest.mark.needs_fixtures


def _recipe(tmp_path, tiny_model) -> str:
    path = tmp_path / "recipe.toml"
    path.write_text(f"""
name = "test"
[source]
model = "{tiny_model}"
[[artifacts]]
format = "baseline-bf16"
[[artifacts]]
format = "baseline-fp32"
[parity]
eval = ["builtin"]
max_queries = 4
[[targets]]
name = "gpu-4gb"
device = "cuda"
memory = "4GiB"
[[targets]]
name = "too-small"
device = "cpu"
memory = "1MiB"
""")
    return str(path)


def test_build_then_skip_then_force(tiny_model, tmp_path, capsys):
    recipe, out = _recipe(tmp_path, tiny_model), tmp_path / "artifacts"
    assert main(["--quiet", "build", recipe, "--out", str(out)]) == 0
    summary = (out / "SUMMARY.md").read_text()
    not_weights = ("manifest.", "parity.", "README.md")  # the card is written with the verdict, not hashed
    sizes = {n: sum(p.stat().st_size for p in (out / n).iterdir() if not p.name.startswith(not_weights))
             for n in ("baseline-bf16", "baseline-fp32")}
    assert f"| {sizes['baseline-bf16']:,} | 1.00x | PASS |" in summary
    assert f"| {sizes['baseline-fp32']:,} | {sizes['baseline-fp32'] / sizes['baseline-bf16']:.2f}x | PASS |" in summary
    assert "| gpu-4gb | cuda | 4GiB | 8192 | baseline-bf16 |" in summary  # 16-bit first on GPUs; the GPU check runs it
    assert "| too-small | cpu | 1MiB |" in summary and "nothing fits" in summary
    first = read_manifest(out / "baseline-bf16").created
    assert read_manifest(out / "baseline-bf16").recipe["recipe"] == "test"

    assert main(["--quiet", "build", recipe, "--out", str(out)]) == 0
    assert read_manifest(out / "baseline-bf16").created == first  # up to date: not rebuilt

    assert main(["--quiet", "build", recipe, "--out", str(out), "--force"]) == 0
    assert read_manifest(out / "baseline-bf16").created > first


def test_build_with_a_bad_recipe_is_one_line(tmp_path, capsys):
    bad = tmp_path / "r.toml"
    bad.write_text('name = "x"\n[source]\nmodel = "m"\n[[artifacts]]\nformat = "nope"\n')
    assert main(["build", str(bad), "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "artifacts[0]: 'nope' is not a known artifact format; known: " in err
