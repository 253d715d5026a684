"""Each ONNX format's exporter options (recipe `options`, `rerank-export onnx` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from ..awq import AwqOptions
from ..options import BLOCK, NON_NEGATIVE, one_of, option
from .convert import (
    FP16_FP32_OPS,
    INT4_ACCURACY_LEVEL,
    INT4_EMBEDDING_BLOCK,
    INT8_BLOCK,
    INT8_METHODS,
    INT8_REDUCE_RANGE,
)
from .graph import ATTENTIONS, DEFAULT_ATTENTION, DEFAULT_OPSET, SUPPORTED_OPSETS


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = option(DEFAULT_OPSET, one_of(*SUPPORTED_OPSETS), "ONNX opset of the exported graph")
    attention: str = option(DEFAULT_ATTENTION, one_of(*ATTENTIONS),
                            "gqa (GroupQueryAttention, memory linear in length) or matmul (plain ONNX ops)")


@dataclass(frozen=True)
class OnnxFp16Options(OnnxOptions):
    fp32_ops: tuple[str, ...] = FP16_FP32_OPS  # op types kept in fp32 (besides the norms and the head)
    fp32_norms: bool = True


@dataclass(frozen=True)
class OnnxInt8Options(OnnxOptions):
    method: str = option("dynamic", one_of(*INT8_METHODS), "dynamic (quantize_dynamic) or nbits (MatMulNBits)")
    quantize_embedding: bool = False  # also the embedding Gather (about halves the file)
    per_channel: bool = True  # dynamic only
    reduce_range: bool = INT8_REDUCE_RANGE  # dynamic only
    block_size: int = option(INT8_BLOCK, BLOCK, "nbits only: MatMulNBits block size")
    accuracy_level: int = option(4, NON_NEGATIVE, "nbits only: MatMulNBits accuracy level")


@dataclass(frozen=True)
class OnnxInt4Options(OnnxOptions, AwqOptions):
    """The AWQ search's options (shared with awq-int4, and its cached search) plus the 4-bit blocks'."""

    # AWQ's group size is also the MatMulNBits block size here (convert.to_int4), so it is a block size too.
    group_size: int = option(AwqOptions.group_size, BLOCK, "AWQ group and MatMulNBits block size")
    quantize_embedding: bool = True
    accuracy_level: int = option(INT4_ACCURACY_LEVEL, NON_NEGATIVE, "MatMulNBits accuracy level")
    embedding_block_size: int = option(INT4_EMBEDDING_BLOCK, BLOCK, "GatherBlockQuantized block size")
