"""The export stage's ONNX part: trace the fp32 scorer once with the dynamo exporter, then write each
requested artifact from it (int4 from an AWQ-scaled copy of the decoder)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...contract import save_tokenizer
from ...errors import UsageError
from ...manifest import Manifest, scratch_dir
from ..common import write_manifest
from .attention import fused_attention
from .convert import CONVERSIONS
from .graph import (
    DATA_FILE,
    DEFAULT_ATTENTION,
    DEFAULT_OPSET,
    HEAD,
    INPUTS,
    KV_KINDS,
    KV_POSITIONS,
    MODEL_FILE,
    OUTPUT,
    PADDING,
    PADDING_KEY,
    SUPPORTED_OPSETS,
    past_name,
    present_name,
    require,
)
from .layers import LastToken, last_layer_cut
from .norms import fused_norms
from .options import OnnxInt4Options, OnnxOptions

log = logging.getLogger(__name__)


def build_scorer(source: Any, decoder: Any = None, prefix: bool = False,
                 cut: LastToken | None = None) -> Any:
    """An nn.Module (input_ids, attention_mask) -> fp32 logit_yes - logit_no at each row's last real token.

    `decoder` replaces the source's decoder (int4 passes an AWQ-scaled copy); the head is the source's.
    With `prefix` (gqa attention only) it also takes (kv_positions, *past) and returns the presents:
    rows continue a shared prefix whose keys/values are given per layer (graph.py's names). With `cut`
    the decoder is traced under layers.last_layer_cut, so it returns each row's last token only.
    """
    import torch

    from .attention import PrefixKV

    yes, no = source.head_rows()
    layers = source.lm.config.num_hidden_layers

    class Scorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = source.lm.model if decoder is None else decoder  # export only traces it
            head = torch.nn.Parameter((yes - no).detach().clone(), requires_grad=False)
            self.register_parameter(HEAD, head)

        def forward(self, input_ids: Any, attention_mask: Any, kv_positions: Any = None, *past: Any) -> Any:
            width = attention_mask.shape[1]
            input_ids, attention_mask = real_tokens_first(input_ids, attention_mask)
            extra: dict[str, Any] = {}
            if prefix:
                kv = PrefixKV([(past[2 * i], past[2 * i + 1]) for i in range(layers)], kv_positions)
                start = past[0].shape[2]  # the prefix's length: this pass's positions follow it
                positions = torch.arange(start, start + width, device=input_ids.device)
                extra = {"prefix_kv": kv, "position_ids": positions.unsqueeze(0).expand(input_ids.shape[0], -1)}
            steps = torch.arange(width, device=attention_mask.device)
            last = (steps * attention_mask).argmax(dim=1)
            if cut is not None:
                cut.index = last
            hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                  **extra).last_hidden_state
            if cut is not None:  # already cut to the last token
                h = hidden[:, 0]
            else:
                h = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
            logit = h.float() @ getattr(self, HEAD)
            if not prefix:
                return logit
            return (logit, *[t for pair in kv.present for t in pair])

    return Scorer().eval()


def real_tokens_first(input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
    """Each row's real tokens moved to its front, in order, and its pads after them, inside the graph.

    GroupQueryAttention and the rotary positions read rows as right-padded (attention.py); a caller who
    pads left (Qwen's tokenizer does by default) or leaves holes would otherwise shift positions and let
    real tokens attend to pads. CumSum and ScatterElements cost nothing next to a layer.
    """
    import torch

    real = attention_mask != 0
    count = real.sum(dim=1, keepdim=True)
    ahead = torch.cumsum(real.to(torch.int64), dim=1) - 1  # a real token's place among its row's
    behind = count + torch.cumsum((~real).to(torch.int64), dim=1) - 1  # a pad's place after them
    target = torch.where(real, ahead, behind)
    ids = torch.zeros_like(input_ids).scatter(1, target, input_ids)
    steps = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return ids, (steps.unsqueeze(0) < count).to(attention_mask.dtype)


def export_fp32_graph(source: Any, path: Path, opset: int = DEFAULT_OPSET, decoder: Any = None,
                      attention: str = DEFAULT_ATTENTION) -> Path:
    """Export the fp32 scorer to `path` (+ `path`.data) with the dynamo exporter.

    gqa graphs take the prefix inputs too (graph.py), each with an empty default.
    """
    import contextlib

    import torch

    require("onnxscript")
    if opset not in SUPPORTED_OPSETS:
        raise UsageError(f"opset {opset} is not supported; use one of {list(SUPPORTED_OPSETS)}")
    prefix = attention == "gqa"
    cut = LastToken() if prefix else None
    model = build_scorer(source, decoder, prefix, cut)
    ids = torch.full((2, 16), source.contract.pad_id, dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # a padded row, so the trace does not specialise on an all-ones mask
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    args: tuple[Any, ...] = (ids, mask)
    names, outputs = list(INPUTS), [OUTPUT]
    shapes: dict[str, Any] = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    if prefix:
        past, kinds = _sample_past(source), [(i, k) for i in range(source.lm.config.num_hidden_layers)
                                             for k in KV_KINDS]
        args += (torch.arange(3), *past)
        names += [KV_POSITIONS] + [past_name(i, k) for i, k in kinds]
        outputs += [present_name(i, k) for i, k in kinds]
        shapes |= {"kv_positions": {0: torch.export.Dim("kv_positions")},
                   "past": tuple({2: torch.export.Dim("past")} for _ in past)}
    log.info("exporting the fp32 ONNX graph (opset %d, %s attention) to %s", opset, attention, path)
    fused = contextlib.ExitStack()
    if prefix:  # gqa graphs: onnxruntime's fused attention and norms (norms.py says why only these)
        fused.enter_context(fused_attention(model.decoder))
        fused.enter_context(fused_norms())
        fused.enter_context(last_layer_cut(model.decoder, cut))
    with torch.inference_mode(False), torch.no_grad(), fused:
        program = torch.onnx.export(model, args, dynamo=True, opset_version=opset, input_names=names,
                                    output_names=outputs, dynamic_shapes=shapes, optimize=True, verbose=False)
    program.save(str(path), external_data=True)
    return path


def _sample_past(source: Any) -> list[Any]:
    """Trace inputs for the prefix's keys/values: 5 positions per layer (any length but 0 and 1, which
    torch.export would specialise on)."""
    import torch

    config = source.lm.config
    shape = (1, config.num_key_value_heads, 5, config.head_dim)
    return [torch.zeros(shape) for _ in range(2 * config.num_hidden_layers)]


def add_prefix_defaults(model: Any) -> None:
    """Empty defaults for the prefix inputs (an input with an initializer of its name is optional), typed
    as the converted graph declares them."""
    import numpy as np
    from onnx import helper, numpy_helper

    existing = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in existing or value.name in INPUTS:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(dims, dtype=dtype), value.name))


def export(source: Any, folder: Path, spec: Any, options: OnnxOptions) -> Manifest:
    """Write model.onnx, model.onnx.data, tokenizer and manifest into `folder`."""
    return export_many(source, {spec.name: folder}, [spec], {spec.name: options})[0]


def export_many(source: Any, folders: dict[str, Path], specs: Sequence[Any],
                options: dict[str, OnnxOptions]) -> list[Manifest]:
    """Trace the fp32 graph once, then write every requested ONNX artifact from it into its folder."""
    graphs = {(options[s.name].opset, options[s.name].attention) for s in specs}
    if len(graphs) != 1:
        raise UsageError(f"ONNX formats in one export must share opset and attention, got {sorted(graphs)}")
    for spec in specs:
        if spec.dtype not in CONVERSIONS:
            raise UsageError(f"no ONNX conversion to '{spec.dtype}'; known: {', '.join(CONVERSIONS)}")
    with scratch_dir(next(iter(folders.values())).parent, ".onnx-export-") as scratch:
        opset, attention = graphs.pop()
        fp32 = export_fp32_graph(source, Path(scratch) / MODEL_FILE, opset, attention=attention)
        return [_write_artifact(source, fp32, folders[s.name], s, options[s.name]) for s in specs]


def export_int4(source: Any, folder: Path, spec: Any, options: OnnxInt4Options) -> Manifest:
    """AWQ's scales and clipping applied to an fp32 copy of the decoder, exported, then cut to 4 bits.

    Blocks run along the input dimension with AWQ's group size, as in awq-int4, so the clipping the
    search chose per group bounds each MatMulNBits block the same way. The search is awq-int4's own
    (formats/awq.run_search), cached for both.
    """
    from ...awq.apply import clip_weights, fold_scales
    from ..awq import run_search

    result, provenance = run_search(source, options)
    decoder = copy.deepcopy(source.lm.model).float()
    fold_scales(decoder, result)
    clip_weights(decoder, result)
    with scratch_dir(folder.parent, ".onnx-export-") as scratch:
        fp32 = export_fp32_graph(source, Path(scratch) / MODEL_FILE, options.opset, decoder, options.attention)
        del decoder
        return _write_artifact(source, fp32, folder, spec, options, {"awq": provenance})


def _write_artifact(source: Any, fp32: Path, folder: Path, spec: Any, options: OnnxOptions,
                    extra: dict[str, Any] | None = None) -> Manifest:
    import onnx

    log.info("writing %s", spec.name)
    details = {**CONVERSIONS[spec.dtype](fp32, folder / MODEL_FILE, options), **(extra or {})}
    save_tokenizer(source.tokenizer, folder)
    weight_bytes = sum(p.stat().st_size for p in (folder / MODEL_FILE, folder / DATA_FILE))
    graph = onnx.load(str(folder / MODEL_FILE), load_external_data=False)
    onnx.helper.set_model_props(graph, {PADDING_KEY: PADDING})
    add_prefix_defaults(graph)
    onnx.save_model(graph, str(folder / MODEL_FILE))  # the proto only: its weights stay where they are
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    details.update(_provenance(opset, options.attention))
    return write_manifest(source, folder, spec.name, spec.dtype, weight_bytes, details)


def _provenance(opset: int, attention: str) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {"graph": "decoder + yes-minus-no head at the last real token (from attention_mask)",
            "model_file": MODEL_FILE, "external_data": DATA_FILE, "inputs": list(INPUTS), "output": OUTPUT,
            "opset": opset, "attention": attention, "padding": PADDING,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}
