"""ONNX artifacts (fp32, fp16, int8, int4) of the single-logit scorer, and their onnxruntime backend.

The graph is the decoder plus a one-row yes-minus-no head applied to the last real token (found from
attention_mask): inputs `input_ids` and `attention_mask` (int64, dynamic batch and sequence), output
`logit` (fp32, one per row). No vocabulary-wide logits. The graph first moves each row's real tokens to its
front, so it reads left, right or any padding (its metadata `rerank_export.padding` says "any"). Attention
is one com.microsoft.GroupQueryAttention node per layer (memory linear in length). Dynamic int8 runs each
row alone inside the graph (rows.py), so its per-run activation scales are the row's own. Optional inputs
carry a shared prefix's keys and values (graph.py), which the backend uses to run one query's prefix once
per batch.

fp32 is exported once with `torch.onnx.export(dynamo=True)`; fp16 and int8 are derived from that graph
with onnxruntime's own tools. int4 is exported from a copy of the decoder with AWQ's scales folded in and
its clipping applied (awq-int4's search, from the shared cache when it holds one), then cut to 4-bit
blocks by onnxruntime's MatMulNBits quantizer. Weights always live in `model.onnx.data`: the real fp32
model is over protobuf's 2 GB limit.

graph.py    the scorer's file names, inputs, output, opsets and attention; helpers the others share
attention.py  the decoder's attention traced as GroupQueryAttention
norms.py    RMSNorms traced as SimplifiedLayerNormalization
layers.py   the last layer traced on each row's last real token only
export.py   the fp32 trace and the exporters
convert.py  fp32 -> fp16, int8, int4
rows.py     the Loop that scores each row of a batch on its own (dynamic int8)
options.py  each format's exporter options
session.py  checking an artifact's graph, onnxruntime sessions, the backend
"""

from .convert import CONVERSIONS, INT8_REDUCE_RANGE, to_fp16, to_int4, to_int8
from .export import export, export_fp32_graph, export_int4, export_many
from .graph import (
    ATTENTIONS,
    DATA_FILE,
    DEFAULT_ATTENTION,
    DEFAULT_OPSET,
    HEAD,
    INPUTS,
    KV_POSITIONS,
    MODEL_FILE,
    OUTPUT,
    PADDING_KEY,
    SUPPORTED_OPSETS,
    all_nodes,
    past_name,
    present_name,
    save_external,
)
from .options import OnnxFp16Options, OnnxInt4Options, OnnxInt8Options, OnnxOptions
from .rows import runs_rows_alone
from .session import OnnxBackend, check_graph, load, make_session, providers_for, session_options

__all__ = ["ATTENTIONS", "CONVERSIONS", "DATA_FILE", "DEFAULT_ATTENTION", "DEFAULT_OPSET", "HEAD", "INPUTS", "INT8_REDUCE_RANGE", "KV_POSITIONS", "MODEL_FILE", "OUTPUT",
           "PADDING_KEY",
           "SUPPORTED_OPSETS", "OnnxBackend", "OnnxFp16Options", "OnnxInt4Options", "OnnxInt8Options",
           "OnnxOptions", "all_nodes", "check_graph", "export", "export_fp32_graph", "export_int4", "export_many", "load",
           "make_session", "past_name", "present_name", "providers_for", "runs_rows_alone", "save_external", "session_options", "to_fp16", "to_int4", "to_int8"]
