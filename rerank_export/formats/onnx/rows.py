"""A graph that scores each row of a batch on its own: the scorer inside an ONNX Loop over the rows.

Dynamic int8 quantizes a MatMul's activations with one scale over everything in the run. Run on a padded
batch, a pair's score then moves with its batch-mates and with its own padding (0.04 on the tiny model, in
a plain onnxruntime session). Inside the Loop each iteration takes one row, keeps its real tokens only
(Compress by its attention_mask: left, right or any padding) and runs the scorer on that 1 x n row, so the
scales are the row's own and a pair scores exactly the same alone and in any batch, in every runtime that
runs ONNX. On a CPU one row of a few hundred tokens keeps the MatMuls as busy as a batch, and no pad is
computed. The prefix inputs pass through (each row continues the same prefix).
"""

from __future__ import annotations

from typing import Any

from .graph import INPUTS

ROW = "row."  # prefix of every name the rewrite adds, in and around the Loop's body


def run_rows_alone(model: Any) -> Any:
    """Rewrite `model` (the scorer: input_ids, attention_mask, ... -> logit, presents) in place so that
    its nodes run once per row, on that row's real tokens; inputs, outputs and initializers keep their
    names (the weights stay in the main graph: the body reads them from the outer scope)."""
    from onnx import TensorProto, helper

    graph = model.graph
    outputs = [o.name for o in graph.output]
    ids, mask = INPUTS
    inner = {ids: ROW + ids, mask: ROW + mask, **{o: ROW + o for o in outputs}}
    take_row = [
        helper.make_node("Gather", [ids, ROW + "i"], [ROW + "ids_padded"], axis=0),
        helper.make_node("Gather", [mask, ROW + "i"], [ROW + "mask_padded"], axis=0),
        helper.make_node("Cast", [ROW + "mask_padded"], [ROW + "real"], to=TensorProto.BOOL),
        helper.make_node("Compress", [ROW + "ids_padded", ROW + "real"], [ROW + "ids"], axis=0),
        helper.make_node("Unsqueeze", [ROW + "ids", ROW + "axis0"], [inner[ids]]),
        helper.make_node("Shape", [inner[ids]], [ROW + "shape"]),
        helper.make_node("ConstantOfShape", [ROW + "shape"], [inner[mask]],
                         value=helper.make_tensor("one", TensorProto.INT64, [1], [1])),
        helper.make_node("Identity", [ROW + "cond"], [ROW + "cond_out"]),
    ]
    for node in graph.node:
        node.input[:] = [inner.get(name, name) for name in node.input]
        node.output[:] = [inner.get(name, name) for name in node.output]
    body = helper.make_graph(
        take_row + list(graph.node), "one_row",
        [helper.make_tensor_value_info(ROW + "i", TensorProto.INT64, []),
         helper.make_tensor_value_info(ROW + "cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(ROW + "cond_out", TensorProto.BOOL, []),
         *[helper.make_tensor_value_info(inner[o.name], o.type.tensor_type.elem_type, None) for o in graph.output]],
        initializer=[helper.make_tensor(ROW + "axis0", TensorProto.INT64, [1], [0])],
    )
    # Loop stacks each iteration's outputs on a new first axis: (B, 1) logits, (B, 1, KV, T, D) presents.
    stacked = [ROW + "stacked." + o for o in outputs]
    loop = [
        helper.make_node("Shape", [ids], [ROW + "batch1"], start=0, end=1),
        helper.make_node("Squeeze", [ROW + "batch1"], [ROW + "batch"]),
        helper.make_node("Constant", [], [ROW + "true"], value=helper.make_tensor("true", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", [ROW + "batch", ROW + "true"], stacked, name="rows", body=body),
        helper.make_node("Reshape", [stacked[0], ROW + "flat"], [outputs[0]]),
        *[helper.make_node("Squeeze", [s, ROW + "axis1"], [o]) for s, o in zip(stacked[1:], outputs[1:])],
    ]
    graph.initializer.extend([helper.make_tensor(ROW + "flat", TensorProto.INT64, [1], [-1]),
                              helper.make_tensor(ROW + "axis1", TensorProto.INT64, [1], [1])])
    del graph.node[:]
    graph.node.extend(loop)
    del graph.value_info[:]  # shapes inside the body were the batch's; onnxruntime infers them again
    return model


def runs_rows_alone(model: Any) -> bool:
    """Whether `model` is a scorer that run_rows_alone rewrote."""
    return any(node.op_type == "Loop" and node.name == "rows" for node in model.graph.node)
