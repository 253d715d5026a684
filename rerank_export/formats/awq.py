"""The AWQ 4-bit artifact: Qwen3ForSequenceClassification with 4-bit decoder linears in AutoAWQ's GEMM
layout (qweight/qzeros/scales), fp16 embedding, norms and score head, and `quantization_config` in
config.json, so vLLM (`--quantization awq`) loads it as is. The runtime here is plain PyTorch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..contract import save_tokenizer
from ..errors import ArtifactError, UsageError
from ..manifest import Manifest, atomic_dir
from .baseline import TorchBackend, to_sequence_classifier
from .common import build_manifest

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


def search_settings(options: dict[str, Any]) -> Any:
    """SearchSettings from exporter options (CLI flags); only 4-bit exists in the GEMM layout."""
    from ..awq.search import SearchSettings

    if int(options.get("w_bit", 4)) != 4:
        raise UsageError(f"--w-bit {options['w_bit']} is not supported: the AWQ GEMM layout is 4-bit only")
    known = SearchSettings.__dataclass_fields__
    values = {k: v for k, v in options.items() if k in known}
    return SearchSettings(**values)


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

    from ..tiny import write_rope_theta

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


def run_search(source: Any, options: dict[str, Any]) -> tuple[Any, Any, float]:
    """Calibration set, AWQResult and seconds taken, for the source's float decoder."""
    from ..awq.search import search
    from ..calibration import DEFAULT_MAX_LENGTH, DEFAULT_SAMPLES, load_calibration

    settings = search_settings(options)
    check_group_size(source.lm.model, settings.group_size)
    calib = load_calibration(source.tokenizer, options.get("calib"),
                             int(options.get("calib_samples", DEFAULT_SAMPLES)),
                             int(options.get("calib_max_length", DEFAULT_MAX_LENGTH)))
    log.info("AWQ: %d calibration prompts (%d tokens) from %s; settings %s", len(calib.input_ids),
             calib.num_tokens, calib.name, settings)
    start = time.perf_counter()
    result = search(source.lm.model, calib.input_ids, source.contract.pad_id, settings,
                    progress=bool(options.get("progress", True)))
    return calib, result, time.perf_counter() - start


def export(source: Any, out_root: Path, spec: Any, options: dict[str, Any]) -> Manifest:
    """Search, apply, and write <out_root>/<spec.name>/: config, safetensors, tokenizer, search, manifest."""
    calib, result, seconds = run_search(source, options)
    model = quantized_model(source, result)
    target = Path(out_root) / spec.name
    log.info("writing %s (AWQ int4, group size %d) to %s", spec.name, result.settings.group_size, target)
    with atomic_dir(target) as tmp:
        file_bytes = save_quantized(model, tmp, 4, result.settings.group_size)
        (tmp / SEARCH_FILE).parent.mkdir()
        result.save(tmp / SEARCH_FILE)
        save_tokenizer(source.tokenizer, tmp)
        backend = load(tmp, None, "cpu")
        details = {"calibration": calib.describe(), "search": asdict(result.settings),
                   "search_seconds": round(seconds, 1), "search_summary": result.summary(),
                   "search_file": SEARCH_FILE, "weights_file_bytes": file_bytes,
                   "quantization_config": quantization_config(4, result.settings.group_size)}
        manifest = build_manifest(source, tmp, spec.name, spec.dtype, resident_bytes(backend.model),
                                  details, overhead_bytes=dequant_overhead(backend.model))
    return manifest


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
    from torch import nn
    from transformers import Qwen3ForSequenceClassification

    from ..awq.qlinear import WQLinearGEMM

    with torch.device("meta"):
        model = Qwen3ForSequenceClassification(config).to(compute_dtype)
        for block in model.model.layers:
            for name, module in list(block.named_modules()):
                if isinstance(module, nn.Linear):
                    parent, _, child = name.rpartition(".")
                    setattr(block.get_submodule(parent) if parent else block, child,
                            WQLinearGEMM(module.in_features, module.out_features, group_size,
                                         module.bias is not None))
        model.model.embed_tokens.to(torch.float16)
    model = model.to_empty(device=device)
    # to_empty leaves non-persistent buffers (rotary inv_freq) uninitialised: rebuild the module.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config).to(device)
    model.model.embed_tokens.register_forward_hook(lambda m, args, out: out.to(compute_dtype))
    return model


def load(folder: Path, manifest: Manifest | None, device: str = "cpu") -> TorchBackend:
    """A Backend over the 4-bit model: fp32 compute on CPU, fp16 on CUDA; weights stay packed."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    qcfg = read_quant_config(folder)
    config = AutoConfig.from_pretrained(str(folder))
    compute = torch.float32 if str(device).startswith("cpu") else torch.float16
    model = empty_model(config, qcfg["group_size"], device, compute)
    try:
        state = load_file(str(folder / WEIGHTS_FILE), device=str(device))
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError) as exc:  # missing file, missing/unexpected keys, shape mismatches
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"cannot load {folder / WEIGHTS_FILE}: {first}; rebuild the artifact") from exc
    return TorchBackend(model.eval(), manifest.format if manifest else "awq-int4")
