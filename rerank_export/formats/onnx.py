"""ONNX artifacts (fp32, fp16, int8, int4) of the single-logit scorer, and their onnxruntime backend.

The graph is the decoder plus a one-row yes-minus-no head applied to the last real token (found from
attention_mask, so left and right padding both work): inputs `input_ids` and `attention_mask` (int64,
dynamic batch and sequence), output `logit` (fp32, one per row). No vocabulary-wide logits, no KV cache.

fp32 is exported once with `torch.onnx.export(dynamo=True)`; fp16 and int8 are derived from that graph
with onnxruntime's own tools. int4 is exported from a copy of the decoder with AWQ's scales folded in and
its clipping applied (the awq-int4 search, reused when a sibling awq-int4 artifact has it), then cut to
4-bit blocks by onnxruntime's MatMulNBits quantizer. Weights always live in `model.onnx.data`: the real
fp32 model is over protobuf's 2 GB limit.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import save_tokenizer
from ..errors import ArtifactError, MissingExtra, UsageError
from ..manifest import Manifest, atomic_dir, scratch_dir
from ..scoring import OutOfMemory
from .common import build_manifest

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
DATA_FILE = MODEL_FILE + ".data"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logit"
HEAD = "score_head"  # the initializer holding W[yes] - W[no]; conversions leave its MatMul in fp32
DEFAULT_OPSET = 20
# 18-20 export and run; opset 23 exports a RotaryEmbedding op that onnxruntime rejects at run time.
SUPPORTED_OPSETS = (18, 19, 20)

# Kept in fp32 in the fp16 artifact. RMSNorm squares the residual stream and averages the squares: in
# fp16 that overflows once the RMS passes 256, which bf16-trained Qwen3 activations can reach, so each
# norm's chain from Pow to the normalising Mul runs in fp32 (its input and its O(1) output stay fp16).
# Softmax sums exponentials; the score head turns a small difference of large dot products into p(yes).
FP16_FP32_OPS = ("Softmax",)
RMSNORM_CHAIN = ("Pow", "ReduceMean", "Add", "Sqrt", "Reciprocal", "Div", "Mul")

Converter = Callable[[Path, Path, dict[str, Any]], dict[str, Any]]


def _require(package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingExtra(package.split(".")[0], "cpu") from None


def build_scorer(source: Any, decoder: Any = None) -> Any:
    """An nn.Module (input_ids, attention_mask) -> fp32 logit_yes - logit_no at each row's last real token.

    `decoder` replaces the source's decoder (int4 passes an AWQ-scaled copy); the head is the source's.
    """
    import torch

    yes, no = source.head_rows()

    class Scorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = source.lm.model if decoder is None else decoder  # export only traces it
            head = torch.nn.Parameter((yes - no).detach().clone(), requires_grad=False)
            self.register_parameter(HEAD, head)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask,
                                  use_cache=False).last_hidden_state
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (positions * attention_mask).argmax(dim=1)
            h = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
            return h.float() @ getattr(self, HEAD)

    return Scorer().eval()


def export_fp32_graph(source: Any, path: Path, opset: int = DEFAULT_OPSET, decoder: Any = None) -> Path:
    """Export the fp32 scorer to `path` (+ `path`.data) with the dynamo exporter."""
    import torch

    _require("onnxscript")
    if opset not in SUPPORTED_OPSETS:
        raise UsageError(f"opset {opset} is not supported; use one of {list(SUPPORTED_OPSETS)}")
    model = build_scorer(source, decoder)
    ids = torch.full((2, 16), source.contract.pad_id, dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # a padded row, so the trace does not specialise on an all-ones mask
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    log.info("exporting the fp32 ONNX graph (opset %d) to %s", opset, path)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            model, (ids, mask), dynamo=True, opset_version=opset, input_names=list(INPUTS),
            output_names=[OUTPUT], dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                                   "attention_mask": {0: batch, 1: seq}},
            optimize=True, verbose=False,
        )
    program.save(str(path), external_data=True)
    return path


def save_external(model: Any, path: Path) -> None:
    """Save with every weight in `<path>.data` (small constants stay inline: shape inference reads them)."""
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def rmsnorm_nodes(model: Any) -> list[str]:
    """Names of every RMSNorm node from Pow(x, 2) up to the Mul that normalises x, in graph order."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Pow":
            continue
        chain = [node]
        while chain[-1].op_type != "Mul":
            nxt = [c for out in chain[-1].output for c in consumers.get(out, [])]
            if len(nxt) != 1 or nxt[0].op_type not in RMSNORM_CHAIN:
                break
            chain.append(nxt[0])
        if chain[-1].op_type == "Mul":  # a complete norm; anything else is some other Pow
            found += [n.name for n in chain]
    return found


def head_nodes(model: Any) -> list[str]:
    """Names of the nodes that read the score head (kept in full precision by every conversion)."""
    return [n.name for n in model.graph.node if HEAD in n.input]


def copy_fp32(src: Path, dst: Path, options: dict[str, Any]) -> dict[str, Any]:
    # A real copy, not a hard link: onnx refuses external data with several links (hardlink attack).
    shutil.copy2(src, dst)
    shutil.copy2(src.parent / DATA_FILE, dst.parent / DATA_FILE)
    return {}


def to_fp16(src: Path, dst: Path, options: dict[str, Any]) -> dict[str, Any]:
    """fp16 weights and MatMuls; fp32 inputs/outputs, norms, softmax and score head."""
    import onnx

    float16 = _require("onnxruntime.transformers.float16")
    fp32_ops = list(options.get("fp32_ops", FP16_FP32_OPS))
    graph = onnx.load(str(src), load_external_data=False)
    keep = head_nodes(graph) + (rmsnorm_nodes(graph) if options.get("fp32_norms", True) else [])
    model = float16.convert_float_to_float16(
        str(src), keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + fp32_ops,
        node_block_list=keep,
    )
    dropped = drop_cast_round_trips(model)
    # The converter appends its Casts at the end; other ONNX tools expect a topologically sorted graph.
    _require("onnxruntime.transformers.onnx_model").OnnxModel(model).topological_sort()
    save_external(model, dst)
    return {"fp16": {"converter": "onnxruntime.transformers.float16", "keep_io_types": True,
                     "fp32_ops": fp32_ops, "fp32_nodes": len(keep),
                     "fp32_norms": bool(options.get("fp32_norms", True)),
                     "dropped_cast_round_trips": dropped}}


def drop_cast_round_trips(model: Any) -> int:
    """Short-circuit fp32 -> fp16 -> fp32 Cast pairs (between fp32 nodes, or to the fp32 output); count.

    The float16 converter routes a tensor passed from one kept-in-fp32 node to the next through fp16,
    which is exactly the overflow (x^2 -> inf) that keeping the nodes in fp32 was meant to avoid.
    """
    float16, float32 = 10, 1  # onnx.TensorProto.FLOAT16, FLOAT
    producer = {out: n for n in model.graph.node for out in n.output}
    count = 0
    for node in model.graph.node:
        first = producer.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if first is not None and first.op_type == "Cast" and _cast_to(node) == float32 \
                and _cast_to(first) == float16:
            node.input[0] = first.input[0]  # now an fp32 -> fp32 Cast, which onnxruntime removes
            count += 1
    return count


def _cast_to(node: Any) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


@contextlib.contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(level, before))
    try:
        yield
    finally:
        root.setLevel(before)


# int8 weights with uint8 activations: on CPUs without VNNI (AVX2 laptops, older Xeons) onnxruntime
# multiplies u8 x s8 with VPMADDUBSW, whose int16 pair sums saturate, while VNNI and AMX sum exactly. So
# full-range s8 weights score differently by CPU: on one tiny seed max |dp| 0.069 with AVX512-VNNI, 0.178
# on AVX2 (qemu Haswell). 7-bit weights (reduce_range) keep every pair sum inside int16, so every CPU
# computes the same integers: scores are identical on AVX512-VNNI, AVX2 and SSE4, at the same speed on
# VNNI (u8 x s8 kernel); uint8 weights would also agree but run 2x slower there (u8 x u8 kernel).
INT8_REDUCE_RANGE = True


def to_int8(src: Path, dst: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Dynamic int8 quantization of the MatMul weights (and the embedding Gather if asked)."""
    import onnx

    quant = _require("onnxruntime.quantization")
    ops = ["MatMul"] + (["Gather"] if options.get("quantize_embedding") else [])
    per_channel = bool(options.get("per_channel", True))
    reduce_range = bool(options.get("reduce_range", INT8_REDUCE_RANGE))
    keep = head_nodes(onnx.load(str(src), load_external_data=False))
    with _root_log_level(logging.WARNING):  # quantize_dynamic logs every tensor at INFO on the root logger
        quant.quantize_dynamic(src, dst, op_types_to_quantize=ops, per_channel=per_channel,
                               reduce_range=reduce_range, weight_type=quant.QuantType.QInt8,
                               nodes_to_exclude=keep, use_external_data_format=True,
                               extra_options={"MatMulConstBOnly": True})
    return {"int8": {"method": "onnxruntime.quantization.quantize_dynamic", "op_types": ops,
                     "per_channel": per_channel, "weight_type": "QInt8", "reduce_range": reduce_range,
                     "excluded_nodes": keep}}


# MatMulNBits' accuracy_level: 4 computes with int8-quantized activations (fastest on CPU), 0 in the
# activations' own type. On the tiny model they gate alike: mean abs dp 0.198 at 4 and 0.197 at 0 (fp32
# embedding), 0.253 and 0.260 (embedding in 4-bit blocks of 128).
INT4_ACCURACY_LEVEL = 4
# Embedding rows are looked up, not multiplied, so smaller blocks cost little time: 32 kept the tiny
# model's mean abs dp at 0.19 (0.25 with blocks of 128; 0.20 with an fp32 embedding).
INT4_EMBEDDING_BLOCK = 32


def to_int4(src: Path, dst: Path, options: dict[str, Any]) -> dict[str, Any]:
    """4-bit blocks along the input dimension: MatMulNBits for the decoder's MatMul weights and, unless
    turned off, GatherBlockQuantized for the embedding (in fp32 it is most of a 0.6B artifact's bytes)."""
    import onnx

    _require("onnxruntime.quantization")
    group = int(options.get("group_size", 128))
    level = int(options.get("accuracy_level", INT4_ACCURACY_LEVEL))
    model = onnx.load(str(src))
    keep = head_nodes(model)
    model = _quantize_nbits(model, "MatMul", group, level, keep)
    details = {"method": "onnxruntime MatMulNBitsQuantizer (round to nearest, asymmetric)", "block_size": group,
               "accuracy_level": level, "excluded_nodes": keep, "embedding": "fp32"}
    if options.get("quantize_embedding", True):
        block = int(options.get("embedding_block_size", INT4_EMBEDDING_BLOCK))
        model = _quantize_nbits(model, "Gather", block, level, keep)
        details["embedding"] = f"int4, blocks of {block}"
    save_external(model, dst)
    return {"int4": details}


def _quantize_nbits(model: Any, op: str, block: int, level: int, keep: list[str]) -> Any:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=False, accuracy_level=level,
                                     nodes_to_exclude=keep, op_types_to_quantize=(op,),
                                     quant_axes=(("MatMul", 0), ("Gather", 1)))
    # All-zero blocks (unused vocabulary rows) divide by a zero scale; onnxruntime then writes zero point 8.
    with _root_log_level(logging.WARNING), np.errstate(divide="ignore", invalid="ignore"):
        quantizer.process()
    return quantizer.model.model


# Storage dtype of a FORMATS row -> how its graph is derived from an fp32 export.
CONVERSIONS: dict[str, Converter] = {"fp32": copy_fp32, "fp16": to_fp16, "int8": to_int8, "int4": to_int4}


def export(source: Any, out_root: Path, spec: Any, options: dict[str, Any]) -> Manifest:
    """Write <out_root>/<spec.name>/: model.onnx, model.onnx.data, tokenizer, manifest."""
    return export_many(source, out_root, [spec], {spec.name: options})[0]


def export_many(source: Any, out_root: Path, specs: Sequence[Any],
                options: dict[str, dict[str, Any]] | None = None) -> list[Manifest]:
    """Export the fp32 graph once, then derive every requested ONNX artifact from it."""
    out_root = Path(out_root)
    options = options or {}
    opsets = {int(options.get(s.name, {}).get("opset", DEFAULT_OPSET)) for s in specs}
    if len(opsets) != 1:
        raise UsageError(f"ONNX formats in one export must share an opset, got {sorted(opsets)}")
    for spec in specs:
        if spec.dtype not in CONVERSIONS:
            raise UsageError(f"no ONNX conversion to '{spec.dtype}'; known: {', '.join(CONVERSIONS)}")
    out_root.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out_root, ".onnx-export-") as scratch:
        fp32 = export_fp32_graph(source, Path(scratch) / MODEL_FILE, opsets.pop())
        return [_write_artifact(source, fp32, out_root, s, options.get(s.name, {})) for s in specs]


def export_int4(source: Any, out_root: Path, spec: Any, options: dict[str, Any]) -> Manifest:
    """AWQ's scales and clipping applied to an fp32 copy of the decoder, exported, then cut to 4 bits.

    Blocks run along the input dimension with AWQ's group size, as in awq-int4, so the clipping the
    search chose per group bounds each MatMulNBits block the same way.
    """
    from ..awq.apply import clip_weights, fold_scales

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    result, provenance = awq_search(source, out_root, options)
    decoder = copy.deepcopy(source.lm.model).float()
    fold_scales(decoder, result)
    clip_weights(decoder, result)
    opts = {**options, "group_size": result.settings.group_size}
    with scratch_dir(out_root, ".onnx-export-") as scratch:
        fp32 = export_fp32_graph(source, Path(scratch) / MODEL_FILE, int(options.get("opset", DEFAULT_OPSET)),
                                 decoder)
        del decoder
        return _write_artifact(source, fp32, out_root, spec, opts, {"awq": provenance})


def awq_search(source: Any, out_root: Path, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The AWQ search for these options: a sibling awq-int4 artifact's when it was made from the same
    source, settings and calibration (the search is most of the export time), else a new one."""
    from dataclasses import asdict

    from ..awq.search import AWQResult
    from ..calibration import DEFAULT_MAX_LENGTH, DEFAULT_SAMPLES, load_calibration
    from ..manifest import read_manifest, verify_files
    from . import awq as awq_format

    settings = awq_format.search_settings(options)
    sibling = out_root / "awq-int4"
    if (sibling / awq_format.SEARCH_FILE).is_file():
        calib = load_calibration(source.tokenizer, options.get("calib"),
                                 int(options.get("calib_samples", DEFAULT_SAMPLES)),
                                 int(options.get("calib_max_length", DEFAULT_MAX_LENGTH)))
        try:
            manifest = read_manifest(sibling)
            verify_files(sibling, manifest)
        except ArtifactError as exc:
            log.warning("not reusing the AWQ search of %s: %s", sibling, exc)
            manifest = None
        if manifest is not None and (manifest.source_model, manifest.source_revision) == \
                (source.model_id, source.revision) and manifest.details.get("search") == asdict(settings) \
                and manifest.details.get("calibration") == calib.describe():
            log.info("reusing the AWQ search of %s", sibling)
            return AWQResult.load(sibling / awq_format.SEARCH_FILE), {
                "search_from": "awq-int4", "search": asdict(settings), "calibration": calib.describe()}
    calib, result, seconds = awq_format.run_search(source, options)
    return result, {"search_from": "this export", "search": asdict(settings), "calibration": calib.describe(),
                    "search_seconds": round(seconds, 1), "search_summary": result.summary()}


def _write_artifact(source: Any, fp32: Path, out_root: Path, spec: Any, options: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Manifest:
    import onnx

    target = out_root / spec.name
    log.info("writing %s to %s", spec.name, target)
    with atomic_dir(target) as tmp:
        details = {**CONVERSIONS[spec.dtype](fp32, tmp / MODEL_FILE, options), **(extra or {})}
        save_tokenizer(source.tokenizer, tmp)
        for path in tmp.iterdir():
            path.chmod(0o644)  # onnx writes the data file private; an artifact is meant to be shared
        weight_bytes = sum(p.stat().st_size for p in (tmp / MODEL_FILE, tmp / DATA_FILE))
        graph = onnx.load(str(tmp / MODEL_FILE), load_external_data=False)
        opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
        details.update(_provenance(opset))
        manifest = build_manifest(source, tmp, spec.name, spec.dtype, weight_bytes, details)
    return manifest


def _provenance(opset: int) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {"graph": "decoder + yes-minus-no head at the last real token (from attention_mask)",
            "model_file": MODEL_FILE, "external_data": DATA_FILE, "inputs": list(INPUTS), "output": OUTPUT,
            "opset": opset, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


# --- loading -----------------------------------------------------------------------------------------

def check_graph(path: Path) -> None:
    """Refuse a missing/truncated model.onnx, a missing external data file, or unexpected inputs."""
    onnx = _require("onnx")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the ONNX artifact is incomplete; rebuild it")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors share no base class
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path} is not a readable ONNX model (truncated or corrupted?): {reason}; "
                            "rebuild it") from exc
    _check_io(path, model)
    _check_external_data(path, model)


def _check_io(path: Path, model: Any) -> None:
    int64 = 7  # onnx.TensorProto.INT64
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    if inputs != [(name, int64) for name in INPUTS]:
        raise ArtifactError(f"{path} has inputs {[n for n, _ in inputs]} (element types "
                            f"{[t for _, t in inputs]}), expected int64 {list(INPUTS)}: not a rerank-export "
                            "ONNX scorer; rebuild it")
    outputs = [o.name for o in model.graph.output]
    if outputs != [OUTPUT]:
        raise ArtifactError(f"{path} has outputs {outputs}, expected ['{OUTPUT}']: not a rerank-export ONNX "
                            "scorer; rebuild it")


def _check_external_data(path: Path, model: Any) -> None:
    for tensor in model.graph.initializer:
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        info = {e.key: e.value for e in tensor.external_data}
        data = path.parent / info.get("location", "")
        if not data.is_file():
            raise ArtifactError(f"{data} is missing: {path.name} keeps its weights there; copy it beside "
                                f"{path.name} or rebuild the artifact")
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        if data.stat().st_size < end:
            raise ArtifactError(f"{data} is truncated ({data.stat().st_size} bytes, tensor '{tensor.name}' "
                                f"ends at {end}); rebuild the artifact")


def providers_for(device: str) -> list[str]:
    """Execution providers: CUDA when asked for ("cuda") or available ("auto"), else CPU."""
    ort = _require("onnxruntime")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise MissingExtra("onnxruntime-gpu", "gpu")
    if device not in ("cpu", "cuda", "auto"):
        raise UsageError(f"unknown device '{device}' for onnxruntime; use cpu, cuda or auto")
    if device == "cuda" or (device == "auto" and has_cuda):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int | None = None, optimization: str = "all") -> Any:
    """Thread count (None = onnxruntime's default, one per physical core) and graph optimisation level."""
    ort = _require("onnxruntime")
    if optimization not in OPTIMIZATION_LEVELS:
        raise UsageError(f"unknown optimisation level '{optimization}'; use one of {OPTIMIZATION_LEVELS}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{optimization.upper()}",
                                            ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: ORT warns about every unused initializer otherwise
    return opts


def make_session(path: Path, device: str = "cpu", threads: int | None = None,
                 optimization: str = "all") -> Any:
    """A checked onnxruntime session for an artifact's model.onnx."""
    ort = _require("onnxruntime")
    check_graph(Path(path))
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads, optimization),
                                    providers=providers_for(device))
    except (RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"onnxruntime cannot load {path}: {first}") from exc


class OnnxBackend:
    """Scores with an onnxruntime session over the single-logit graph (parity gate and runtime)."""

    def __init__(self, session: Any, name: str = "onnx") -> None:
        self.session = session
        self.name = name
        self.providers = session.get_providers()

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {INPUTS[0]: np.ascontiguousarray(input_ids, dtype=np.int64),
                INPUTS[1]: np.ascontiguousarray(attention_mask, dtype=np.int64)}
        try:
            out = self.session.run([OUTPUT], feed)[0]
        except Exception as exc:  # onnxruntime raises its own classes, not MemoryError
            if "allocate" in str(exc).lower() or "out of memory" in str(exc).lower():
                raise OutOfMemory(str(exc)) from exc
            raise
        return np.asarray(out, dtype=np.float32).reshape(-1)


def load(folder: Path, manifest: Manifest, device: str = "cpu", threads: int | None = None,
         optimization: str = "all") -> OnnxBackend:
    """The onnxruntime backend of an ONNX artifact folder."""
    session = make_session(Path(folder) / MODEL_FILE, device, threads, optimization)
    log.info("loaded %s on %s", folder, session.get_providers()[0])
    return OnnxBackend(session, manifest.format)
