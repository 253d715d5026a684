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
    for name in FORMATS:
        assert_engines_read_only_the_weights(tmp_path / "artifacts" / name, FORMATS[name].backend)


# What loaders glob for weights in a folder (vLLM: *.safetensors, *.bin, *.pt; transformers and
# sentence-transformers: model*.safetensors, pytorch_model*.bin; onnxruntime tools: *.onnx and data files).
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx", "*.onnx.data", "*.onnx_data")
WEIGHTS_BY_BACKEND = {"torch": {"model.safetensors"}, "onnxruntime": {"model.onnx", "model.onnx.data"}}


def assert_engines_read_only_the_weights(folder: Path, backend: str) -> None:
    """A stray tensor file beside the weights breaks vLLM's loader (the AWQ search did); every file a
    server reads must be readable by other users (a container's server runs as another user)."""
    globbed = {p.name for pattern in WEIGHT_GLOBS for p in folder.glob(pattern)}
    assert globbed == WEIGHTS_BY_BACKEND[backend], (folder.name, globbed)
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("parity"):
            assert path.stat().st_mode & 0o044 == 0o044, f"{path} is not readable by others"
