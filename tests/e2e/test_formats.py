"""Every FORMATS entry is exported and gated: the demo recipe builds them all and each passes parity."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_export.formats import FORMATS
from rerank_export.manifest import read_manifest
from rerank_export.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "recipes" / "tiny-demo.toml"


def test_the_demo_recipe_covers_every_format():
    """A new format must join the demo recipe, and so this suite's export + parity test below."""
    assert sorted(load_recipe(DEMO).artifact_names()) == sorted(FORMATS)


# ~3 minutes (the whole demo recipe, its AWQ search included): in the slow stage, which CI runs after the
# default one; each format's own export and gate are in the default run (test_cli, test_onnx_cli, test_awq_cli).
@pytest.mark.slow
def test_every_format_exports_and_passes_parity(tmp_path):
    """The demo recipe through the real CLI, in its own process: every format passes, and the run is quiet
    (library warnings such as torch.onnx's or onnxruntime's quantizer hints appear only with --verbose)."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(DEMO.read_text().replace('model = "artifacts/tiny-model"', f'model = "{tmp_path / "tiny"}"'))
    out = tmp_path / "artifacts"
    done = subprocess.run([sys.executable, "-m", "rerank_export", "build", str(recipe), "--out", str(out)],
                          capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"})
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = {name: read_manifest(out / name).parity["verdict"] for name in FORMATS}
    assert verdicts == {name: "pass" for name in FORMATS}, done.stdout
    assert "| cpu | cpu | 8GiB |" in done.stdout and "nothing fits" not in _row(done.stdout, "| cpu | cpu |")
    noise = [ln for ln in done.stderr.splitlines() if re.search(r"Warning\b|^[WI]\d{4} |^WARNING:", ln)]
    assert noise == [], noise[:5]
    for name in FORMATS:
        assert_engines_read_only_the_weights(out / name, FORMATS[name].backend)


def _row(table: str, start: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(start))


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
