"""From the fp32 graph to the other precisions, with onnxruntime's own tools: fp16 (norms, softmax and head
kept in fp32), int8 (dynamic, 7-bit weights), int4 (MatMulNBits / GatherBlockQuantized blocks)."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .graph import DATA_FILE, head_nodes, require, save_external
from .norms import OP as FUSED_NORM
from .rows import run_rows_alone

log = logging.getLogger(__name__)

# Kept in fp32 in the fp16 artifact. RMSNorm squares the residual stream and averages the squares: in
# fp16 that overflows once the RMS passes 256, which bf16-trained Qwen3 activations can reach, so each
# norm (a fused node in gqa graphs, the chain from Pow to the normalising Mul in matmul graphs) runs in
# fp32; its input and its O(1) output stay fp16.
# Softmax sums exponentials; the score head turns a small difference of large dot products into p(yes).
FP16_FP32_OPS = ("Softmax",)
RMSNORM_CHAIN = ("Pow", "ReduceMean", "Add", "Sqrt", "Reciprocal", "Div", "Mul")

Converter = Callable[[Path, Path, Any], dict[str, Any]]


def rmsnorm_nodes(model: Any) -> list[str]:
    """Names of every RMSNorm node, in graph order: a fused norm node (norms.py), or a chain from Pow(x, 2)
    up to the Mul that normalises x."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type == FUSED_NORM:
            found.append(node.name)
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


def copy_fp32(src: Path, dst: Path, options: Any) -> dict[str, Any]:
    # A real copy, not a hard link: onnx refuses external data with several links (hardlink attack).
    shutil.copy2(src, dst)
    shutil.copy2(src.parent / DATA_FILE, dst.parent / DATA_FILE)
    return {}


def to_fp16(src: Path, dst: Path, options: Any) -> dict[str, Any]:
    """fp16 weights and MatMuls; fp32 inputs/outputs, norms, softmax and score head."""
    import onnx

    float16 = require("onnxruntime.transformers.float16")
    fp32_ops = list(options.fp32_ops)
    graph = onnx.load(str(src), load_external_data=False)
    keep = head_nodes(graph) + (rmsnorm_nodes(graph) if options.fp32_norms else [])
    model = float16.convert_float_to_float16(
        str(src), keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + fp32_ops,
        node_block_list=keep,
    )
    dropped = drop_cast_round_trips(model)
    # The converter appends its Casts at the end; other ONNX tools expect a topologically sorted graph.
    require("onnxruntime.transformers.onnx_model").OnnxModel(model).topological_sort()
    save_external(model, dst)
    return {"fp16": {"converter": "onnxruntime.transformers.float16", "keep_io_types": True,
                     "fp32_ops": fp32_ops, "fp32_nodes": len(keep),
                     "fp32_norms": options.fp32_norms,
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


# Two ways to int8. "dynamic" (quantize_dynamic): int8 weights per channel, activations quantized with one
# scale over the whole padded batch, so a pair's score moves with its batch-mates. "nbits": 8-bit weight
# blocks in MatMulNBits, whose accuracy level 4 quantizes activations per row and block, so a row's score is
# its own.
INT8_METHODS = ("dynamic", "nbits")
INT8_BLOCK = 32


def to_int8(src: Path, dst: Path, options: Any) -> dict[str, Any]:
    """int8 MatMul weights (and the embedding if asked), by options.method (INT8_METHODS)."""
    if options.method == "nbits":
        return {"int8": _nbits(src, dst, 8, options.block_size, options.accuracy_level,
                               options.quantize_embedding and options.block_size)}
    return _int8_dynamic(src, dst, options)


def _int8_dynamic(src: Path, dst: Path, options: Any) -> dict[str, Any]:
    """Dynamic int8 quantization of the MatMul weights (and the embedding Gather if asked)."""
    import onnx

    quant = require("onnxruntime.quantization")
    ops = ["MatMul"] + (["Gather"] if options.quantize_embedding else [])
    per_channel, reduce_range = options.per_channel, options.reduce_range
    keep = head_nodes(onnx.load(str(src), load_external_data=False))
    with _root_log_level(logging.WARNING):  # quantize_dynamic logs every tensor at INFO on the root logger
        quant.quantize_dynamic(src, dst, op_types_to_quantize=ops, per_channel=per_channel,
                               reduce_range=reduce_range, weight_type=quant.QuantType.QInt8,
                               nodes_to_exclude=keep, use_external_data_format=True,
                               extra_options={"MatMulConstBOnly": True})
    # One activation scale per run: each row runs alone inside the graph, so that run is the row (rows.py).
    graph = onnx.load(str(dst), load_external_data=False)
    onnx.save_model(run_rows_alone(graph), str(dst))  # the proto only: its weights stay where they are
    return {"int8": {"method": "onnxruntime.quantization.quantize_dynamic", "op_types": ops,
                     "per_channel": per_channel, "weight_type": "QInt8", "reduce_range": reduce_range,
                     "excluded_nodes": keep, "rows": "each row alone (a Loop over the batch)"}}


# MatMulNBits' accuracy_level: 4 computes with int8-quantized activations (fastest on CPU), 0 in the
# activations' own type. On the tiny model they gate alike: mean abs dp 0.198 at 4 and 0.197 at 0 (fp32
# embedding), 0.253 and 0.260 (embedding in 4-bit blocks of 128).
INT4_ACCURACY_LEVEL = 4
# Embedding rows are looked up, not multiplied, so smaller blocks cost little time: 32 kept the tiny
# model's mean abs dp at 0.19 (0.25 with blocks of 128; 0.20 with an fp32 embedding).
INT4_EMBEDDING_BLOCK = 32


def to_int4(src: Path, dst: Path, options: Any) -> dict[str, Any]:
    """4-bit blocks along the input dimension: MatMulNBits for the decoder's MatMul weights and, unless
    turned off, GatherBlockQuantized for the embedding (in fp32 it is most of a 0.6B artifact's bytes)."""
    block = options.quantize_embedding and options.embedding_block_size
    return {"int4": _nbits(src, dst, 4, options.group_size, options.accuracy_level, block)}


def _nbits(src: Path, dst: Path, bits: int, block: int, level: int, embedding_block: int | bool) -> dict[str, Any]:
    """MatMulNBits blocks of `bits` for the decoder's MatMul weights; the embedding Gather too when
    `embedding_block` is a block size. The score head stays fp32."""
    import onnx

    require("onnxruntime.quantization")
    model = onnx.load(str(src))
    keep = head_nodes(model)
    model = _quantize_nbits(model, "MatMul", bits, block, level, keep)
    details = {"method": "onnxruntime MatMulNBitsQuantizer (round to nearest, asymmetric)", "bits": bits,
               "block_size": block, "accuracy_level": level, "excluded_nodes": keep, "embedding": "fp32"}
    if embedding_block:
        model = _quantize_nbits(model, "Gather", bits, embedding_block, level, keep)
        details["embedding"] = f"int{bits}, blocks of {embedding_block}"
    save_external(model, dst)
    return details


def _quantize_nbits(model: Any, op: str, bits: int, block: int, level: int, keep: list[str]) -> Any:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=False, accuracy_level=level,
                                     nodes_to_exclude=keep, op_types_to_quantize=(op,),
                                     quant_axes=(("MatMul", 0), ("Gather", 1)))
    # All-zero blocks (unused vocabulary rows) divide by a zero scale; onnxruntime then writes zero point 8.
    with _root_log_level(logging.WARNING), np.errstate(divide="ignore", invalid="ignore"):
        quantizer.process()
    return quantizer.model.model


# Storage dtype of a FORMATS row -> how its graph is derived from an fp32 export.
CONVERSIONS: dict[str, Converter] = {"fp32": copy_fp32, "fp16": to_fp16, "int8": to_int8, "int4": to_int4}
