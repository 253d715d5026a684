"""The AWQ 4-bit artifact: Qwen3ForSequenceClassification with 4-bit decoder linears in AutoAWQ's GEMM
layout (qweight/qzeros/scales), fp16 embedding, norms and score head, and `quantization_config` in
config.json, so vLLM (`--quantization awq`) loads it as is. The runtime here is plain PyTorch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..awq.settings import DTYPES as SEARCH_DTYPES
from ..awq.settings import SearchSettings
from ..calibration import DEFAULT_MAX_LENGTH, DEFAULT_SAMPLES
from ..contract import save_tokenizer, write_rope_theta
from ..errors import ArtifactError, UsageError, first_line
from ..manifest import Manifest
from ..progress import bars_enabled
from .baseline import TorchBackend, to_sequence_classifier
from .common import write_manifest
from .options import FRACTION, LENGTH, one_of, option

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
# In a subfolder: loaders read every top-level *.safetensors as weights (vLLM stops on the search's
# "clip" tensors), so the search results stay where no glob looks; onnx-int4 reuses them from here.
SEARCH_FILE = "awq_search/search.safetensors"
NOT_CONVERTED = ["score"]  # the one-row yes-minus-no head stays 16-bit (and cannot pack 1 row anyway)
DEQUANT_TEMP_FACTOR = 16  # bytes per weight element held briefly while one layer is dequantised


def quantization_config(bits: int, group_size: int) -> dict[str, Any]:
    """The config.json entry AutoAWQ writes and vLLM / transformers read."""
    return {"quant_method": "awq", "bits": bits, "group_size": group_size, "zero_point": True,
            "version": "gemm", "modules_to_not_convert": list(NOT_CONVERTED)}


@dataclass(frozen=True)
class AwqOptions:
    """The AWQ search and its calibration set (`rerank-export awq` flags, a recipe's `options`).

    No bit width: the AWQ GEMM layout vLLM loads is 4-bit only, so 4 is the format, not an option.
    """

    # Must divide every decoder linear's input width: checked against the model before the search.
    group_size: int = 128
    calib: str | None = option(None, help="calibration JSONL of {query, document[, instruction]} lines")
    calib_samples: int = DEFAULT_SAMPLES
    calib_max_length: int = option(DEFAULT_MAX_LENGTH, LENGTH)
    clip: bool = True
    scale_search: bool = True
    n_grid: int = SearchSettings.n_grid
    alpha_stride: int = option(SearchSettings.alpha_stride, help="score every Nth alpha, then refine (1: all)")
    max_shrink: float = option(SearchSettings.max_shrink, FRACTION)
    clip_tokens: int = SearchSettings.clip_tokens
    search_tokens: int = SearchSettings.search_tokens
    batch_tokens: int = SearchSettings.batch_tokens
    search_dtype: str = option(SearchSettings.search_dtype, one_of(*SEARCH_DTYPES),
                               "dtype of the search's forward passes")
    # Not a search setting: a CPU and a GPU search of the same settings share one cache entry.
    search_device: str = option("cpu", one_of("cpu", "cuda"), "where the search runs (cuda: a block at a time)")

    def settings(self) -> SearchSettings:
        return SearchSettings(**{f.name: getattr(self, f.name) for f in fields(SearchSettings)})

    def calibration(self, tokenizer: Any) -> Any:
        from ..calibration import load_calibration

        return load_calibration(tokenizer, self.calib, self.calib_samples, self.calib_max_length)


def check_group_size(decoder: Any, group_size: int) -> None:
    """Fail before the (long) search when a decoder linear cannot be packed with this group size."""
    from torch import nn

    for name, module in decoder.layers.named_modules():
        if isinstance(module, nn.Linear) and (module.in_features % group_size or module.out_features % 8):
            raise UsageError(
                f"--group-size {group_size} does not divide layers.{name} (in {module.in_features}, out "
                f"{module.out_features}); pick a group size dividing {module.in_features}, e.g. 64 or 32"
            )


def quantized_model(source: Any, result: Any) -> Any:
    """A fresh sequence classifier of the source with the AWQ result applied (the source is untouched)."""
    from ..awq.apply import apply_awq

    model = to_sequence_classifier(source, "fp32")
    apply_awq(model.model, result)
    return model.eval()


def save_quantized(model: Any, folder: Path, bits: int, group_size: int) -> int:
    """Write config.json (with quantization_config) and model.safetensors (floats in fp16); returns bytes."""
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    model.config.save_pretrained(str(folder))
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(dtype="float16", torch_dtype="float16", quantization_config=quantization_config(bits, group_size))
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    write_rope_theta(path, 1_000_000.0)
    return sum(v.numel() * v.element_size() for v in state.values())


def run_search(source: Any, options: AwqOptions) -> tuple[Any, dict[str, Any]]:
    """The AWQ result for the source's float decoder (cached; awq/cache.py) and its provenance."""
    from ..awq.cache import cached_search

    settings = options.settings()
    check_group_size(source.lm.model, settings.group_size)
    check_search_device(options.search_device)
    calib = options.calibration(source.tokenizer)
    log.info("AWQ: %d calibration prompts (%d tokens) from %s; settings %s", len(calib.input_ids),
             calib.num_tokens, calib.name, settings)
    return cached_search(source, settings, calib, progress=bars_enabled(), device=options.search_device)


def check_search_device(device: str) -> None:
    """A GPU search needs a visible GPU; said before the calibration set is built."""
    from ..host import cuda_available

    if device == "cuda" and not cuda_available():
        raise UsageError("--search-device cuda asked for but no CUDA GPU is visible; search on the CPU "
                         "(the default)")


def export(source: Any, folder: Path, spec: Any, options: AwqOptions) -> Manifest:
    """Search, apply, and write config, safetensors, tokenizer, search and manifest into `folder`."""
    result, provenance = run_search(source, options)
    model = quantized_model(source, result)
    log.info("writing %s (AWQ int4, group size %d)", spec.name, result.settings.group_size)
    file_bytes = save_quantized(model, folder, 4, result.settings.group_size)
    (folder / SEARCH_FILE).parent.mkdir()
    result.save(folder / SEARCH_FILE)
    save_tokenizer(source.tokenizer, folder)
    backend = load(folder, None, "cpu")
    details = {**provenance, "search_file": SEARCH_FILE, "weights_file_bytes": file_bytes,
               "quantization_config": quantization_config(4, result.settings.group_size)}
    return write_manifest(source, folder, spec.name, spec.dtype, resident_bytes(backend.model), details,
                          overhead_bytes=dequant_overhead(backend.model))


def resident_bytes(model: Any) -> int:
    """Bytes of every parameter and buffer as loaded (packed weights stay packed)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


def dequant_overhead(model: Any) -> int:
    """Transient bytes while the largest 4-bit layer is dequantised for a forward pass."""
    from ..awq.qlinear import WQLinearGEMM

    sizes = [m.in_features * m.out_features for m in model.modules() if isinstance(m, WQLinearGEMM)]
    return DEQUANT_TEMP_FACTOR * max(sizes, default=0)


def read_quant_config(folder: Path) -> dict[str, Any]:
    """The artifact's quantization_config; anything but 4-bit AWQ GEMM with zero points is refused."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ArtifactError(f"{path} not found: '{folder}' is not an AWQ artifact folder")
    qcfg = json.loads(path.read_text()).get("quantization_config") or {}
    wanted = {"quant_method": "awq", "bits": 4, "version": "gemm", "zero_point": True}
    wrong = {k: qcfg.get(k) for k, v in wanted.items() if qcfg.get(k) != v}
    if wrong or not isinstance(qcfg.get("group_size"), int):
        raise ArtifactError(f"{path}: quantization_config {qcfg} is not 4-bit AWQ GEMM with zero points "
                            f"(mismatched: {wrong or 'group_size'}); re-export with `rerank-export awq`")
    return qcfg


def empty_model(config: Any, group_size: int, device: str, compute_dtype: Any) -> Any:
    """The classifier built on the meta device with 4-bit decoder linears, then allocated on `device`.

    The embedding is allocated in fp16 (its stored dtype) and its output cast to the compute dtype by a
    forward hook, so a CPU runtime computes in fp32 without holding an fp32 copy of the vocabulary.
    """
    import torch
    from transformers import Qwen3ForSequenceClassification

    from ..awq.qlinear import WQLinearGEMM, swap_linears

    with torch.device("meta"):
        model = Qwen3ForSequenceClassification(config).to(compute_dtype)
        swap_linears(model.model.layers, lambda m: WQLinearGEMM(m.in_features, m.out_features, group_size,
                                                                 m.bias is not None))
        model.model.embed_tokens.to(torch.float16)
    model = model.to_empty(device=device)
    # to_empty leaves non-persistent buffers (rotary inv_freq) uninitialised: rebuild the module.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config).to(device)
    model.model.embed_tokens.register_forward_hook(lambda m, args, out: out.to(compute_dtype))
    return model


def compute_dtype(device: str) -> Any:
    """fp32 on a CPU (its fp16 matmuls are slow or emulated), fp16 on a GPU (AWQ's own W4A16)."""
    import torch

    return torch.float32 if str(device).startswith("cpu") else torch.float16


def load(folder: Path, manifest: Manifest | None, device: str = "cpu") -> TorchBackend:
    """A Backend over the 4-bit model: fp32 compute on CPU, fp16 on CUDA; weights stay packed."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    qcfg = read_quant_config(folder)
    config = AutoConfig.from_pretrained(str(folder))
    compute = compute_dtype(device)
    model = empty_model(config, qcfg["group_size"], device, compute)
    try:
        state = load_file(str(folder / WEIGHTS_FILE), device=str(device))
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError) as exc:  # missing file, missing/unexpected keys, shape mismatches
        raise ArtifactError(f"cannot load {folder / WEIGHTS_FILE}: {first_line(exc)}; rebuild the artifact") from exc
    return TorchBackend(model.eval(), manifest.format if manifest else folder.name)  # an artifact folder is named after its format
