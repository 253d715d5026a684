"""The ONNX scorer's contract (file names, inputs, output, opsets) and helpers every ONNX module shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import MissingExtra

MODEL_FILE = "model.onnx"
DATA_FILE = MODEL_FILE + ".data"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logit"
# Shared-prefix reuse (gqa graphs): optional inputs, each with an empty default in the graph. past.<i>.key
# and past.<i>.value hold a prefix's keys/values per layer, (1, kv_heads, P, head_dim); kv_positions
# names the positions whose keys/values come back as present.<i>.key / present.<i>.value (none by
# default, so a plain scoring run returns nothing extra).
KV_POSITIONS = "kv_positions"
KV_KINDS = ("key", "value")


def past_name(layer: int, kind: str) -> str:
    return f"past.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    return f"present.{layer}.{kind}"

HEAD = "score_head"  # the initializer holding W[yes] - W[no]; conversions leave its MatMul in fp32
DEFAULT_OPSET = 20
# 18-20 export and run; opset 23's RotaryEmbedding fails in onnxruntime 1.32 for batches over one row.
SUPPORTED_OPSETS = (18, 19, 20)
# "gqa": com.microsoft.GroupQueryAttention, memory linear in length (attention.py).
# "matmul": the exporter's own MatMul -> Softmax -> MatMul, B x heads x L x L scores.
ATTENTIONS = ("gqa", "matmul")
DEFAULT_ATTENTION = "gqa"
# Every graph moves each row's real tokens to its front itself (export.real_tokens_first), so it reads left,
# right or any padding. Graphs made before that record "right" (gqa) or "left" (matmul) here.
PADDING = "any"
# The graph's own record of the padding it reads (model metadata), so a session knows without a manifest.
PADDING_KEY = "rerank_export.padding"


def require(package: str) -> Any:
    """Import an optional package, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingExtra(package.split(".")[0], "cpu") from None


def save_external(model: Any, path: Path) -> None:
    """Save with every weight in `<path>.data` (small constants stay inline: shape inference reads them)."""
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def all_nodes(graph: Any) -> list[Any]:
    """Every node of an ONNX graph and of the graphs inside its nodes (the row Loop's body: rows.py)."""
    found = []
    for node in graph.node:
        found.append(node)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found += all_nodes(attribute.g)
    return found


def head_nodes(model: Any) -> list[str]:
    """Names of the nodes that read the score head (kept in full precision by every conversion)."""
    return [n.name for n in all_nodes(model.graph) if HEAD in n.input]
