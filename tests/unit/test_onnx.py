"""ONNX artifacts: graph shape, parity against the causal LM, fp16 safety, int8 layout, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rerank_export.contract import pad_left
from rerank_export.errors import ArtifactError, MissingExtra
from rerank_export.evalsets import builtin_eval_set
from rerank_export.export import export_formats
from rerank_export.formats import FORMATS
from rerank_export.formats import onnx as ox
from rerank_export.manifest import describe_files, read_manifest
from rerank_export.reference import ReferenceBackend, SourceModel
from tests.conftest import ONNX_NAMES

pytestmark = pytest.mark.needs_fixtures

FP32_LOGIT_TOL = 1e-4  # fp32 graph vs fp32 PyTorch: reordered sums only
FP16_MAX_DP = FORMATS["onnx-fp16"].thresholds.max_abs_dp
STRESS_SCALE = 3000.0  # layer-0 down_proj x this: residual RMS far past fp16's sqrt(65504) ~ 256
FP16_SQUARE_LIMIT = 256.0
SEED = 0


def _batch(source: SourceModel, side: str) -> tuple[np.ndarray, np.ndarray]:
    group = builtin_eval_set(long_document=False).groups[0]
    seqs = [source.contract.encode(group.query, d).input_ids for d in group.documents[:4]]
    ids, mask = pad_left(seqs, source.contract.pad_id)
    ids, mask = np.array(ids, dtype=np.int64), np.array(mask, dtype=np.int64)
    if side == "right":  # move each row's padding to the end
        for row in range(len(ids)):
            ids[row] = np.roll(ids[row], -int((mask[row] == 0).sum()))
            mask[row] = np.roll(mask[row], -int((mask[row] == 0).sum()))
    return ids, mask


def test_graph_needs_two_int64_inputs_and_gives_one_logit_per_row(onnx_root, source):
    """Two required inputs; the prefix inputs all have (empty) defaults; the first output is the logit
    (no vocabulary logits), the rest each layer's keys/values, empty unless asked for; attention is one
    GroupQueryAttention per layer, on rows of any padding (the graph's metadata says so); every RMSNorm (two
    per layer, the q/k norms, the final one) is one SimplifiedLayerNormalization node; dynamic int8 runs
    each row alone inside a Loop."""
    import onnx

    layers = source.lm.config.num_hidden_layers
    for name in ONNX_NAMES:
        model = onnx.load(str(onnx_root / name / ox.MODEL_FILE), load_external_data=False)
        defaults = {t.name: t for t in model.graph.initializer}
        inputs = {i.name: i.type.tensor_type for i in model.graph.input}
        assert [n for n in inputs if n not in defaults] == ["input_ids", "attention_mask"]
        for n in ("input_ids", "attention_mask"):
            assert inputs[n].elem_type == onnx.TensorProto.INT64
            assert all(d.dim_param for d in inputs[n].shape.dim), "batch and sequence axes must be dynamic"
        past = [ox.past_name(i, k) for i in range(layers) for k in ("key", "value")]
        assert [n for n in inputs if n in defaults] == [ox.KV_POSITIONS, *past]
        assert all(0 in defaults[n].dims for n in [ox.KV_POSITIONS, *past]), "defaults must be empty"
        out, *presents = model.graph.output
        assert out.name == "logit" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert len(out.type.tensor_type.shape.dim) == 1
        assert [p.name for p in presents] == [n.replace("past.", "present.") for n in past]
        nodes = ox.all_nodes(model.graph)
        assert sum(n.op_type == "GroupQueryAttention" for n in nodes) == layers
        assert sum(n.op_type == "SimplifiedLayerNormalization" for n in nodes) == 4 * layers + 1
        assert not any(n.op_type in ("Pow", "ReduceMean", "Sqrt") for n in nodes)
        assert ox.runs_rows_alone(model) == (name == "onnx-int8")
        assert {p.key: p.value for p in model.metadata_props}[ox.PADDING_KEY] == "any"
        assert (onnx_root / name / ox.DATA_FILE).is_file()
        details = read_manifest(onnx_root / name).details
        assert details["opset"] == ox.DEFAULT_OPSET and details["attention"] == "gqa"
        assert details["padding"] == "any"


@pytest.mark.parametrize("name", ONNX_NAMES)
def test_prefix_reuse_scores_as_whole_rows(onnx_root, source, name):
    """A batch sharing a query runs its prefix once and each tail against the prefix's keys/values; the
    scores equal the whole rows' within the format's rounding, and the prefix is computed once per query."""
    group = builtin_eval_set(long_document=False).groups[0]
    ids, mask = pad_left([source.contract.encode(group.query, d).input_ids for d in group.documents],
                         source.contract.pad_id)
    ids, mask = np.asarray(ids), np.asarray(mask)
    folder = onnx_root / name
    reuse = ox.load(folder, read_manifest(folder))
    whole = ox.OnnxBackend(ox.make_session(folder / ox.MODEL_FILE), prefix_reuse=False)
    tolerance = {"onnx-fp32": 1e-4, "onnx-fp16": 0.02, "onnx-int8": 0.5}[name]  # logits, not p(yes)
    np.testing.assert_allclose(reuse.logits(ids, mask), whole.logits(ids, mask), atol=tolerance, rtol=0)
    np.testing.assert_allclose(reuse.logits(ids[:3], mask[:3]), whole.logits(ids[:3], mask[:3]),
                               atol=tolerance, rtol=0)
    assert reuse.stats["reused"] == 2 and reuse.stats["prefix_tokens_saved"] > 0
    assert whole.stats["reused"] == 0


@pytest.mark.parametrize("name", ONNX_NAMES)
def test_a_pair_scores_the_same_alone_and_beside_any_batch_mates(onnx_root, source, name):
    """Rows split after their own document marker, so a pair's computation is the same whatever shares its
    batch: exactly, even for dynamic int8, whose activation scales are taken per run."""
    groups = builtin_eval_set(long_document=False).groups
    pairs = [(g.query, d) for g in groups[:3] for d in g.documents[:3]]
    seqs = [source.contract.encode(q, d).input_ids for q, d in pairs]
    folder = onnx_root / name
    backend = ox.load(folder, read_manifest(folder))
    assert backend.split_marker == source.contract.document_marker_ids

    def score(rows):
        ids, mask = pad_left(rows, source.contract.pad_id)
        return backend.logits(np.asarray(ids), np.asarray(mask))

    together = score(seqs)
    alone = np.concatenate([score([s]) for s in seqs])
    assert np.array_equal(together, alone), np.abs(together - alone).max()
    assert np.array_equal(score(seqs[::-1])[::-1], together)


def _plain_batch(seqs: list[list[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """A padded batch as a user's tokenizer makes it: pads on `side`, attention_mask 0 there."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, cols], mask[row, cols] = seq, 1
    return ids, mask


@pytest.mark.parametrize("name", ONNX_NAMES)
def test_a_plain_session_scores_a_row_alike_in_any_batch_and_padding(onnx_root, source, name):
    """What a user of the card runs: a plain InferenceSession (default options), mixed-length batches padded
    left or right. Each row's logit equals its logit alone within the format's alone-vs-batch limit."""
    import onnxruntime as ort

    groups = builtin_eval_set(long_document=False).groups
    seqs = [source.contract.encode(g.query, d).input_ids for g in groups for d in g.documents]
    session = ort.InferenceSession(str(onnx_root / name / ox.MODEL_FILE))
    limit = FORMATS[name].thresholds.max_batch_dp

    def logits(rows: list[list[int]], side: str) -> np.ndarray:
        ids, mask = _plain_batch(rows, source.contract.pad_id, side)
        return session.run(["logit"], {"input_ids": ids, "attention_mask": mask})[0]

    alone = np.concatenate([logits([s], "left") for s in seqs])
    for side in ("left", "right"):
        for rows in (list(range(len(seqs))), list(range(len(seqs)))[::-3]):
            together = logits([seqs[i] for i in rows], side)
            dp = np.abs(1 / (1 + np.exp(-together)) - 1 / (1 + np.exp(-alone[rows])))
            assert dp.max() <= limit, (side, float(dp.max()))


def test_gate_fails_a_graph_that_scores_right_only_when_run_as_its_card_says(source, tmp_path, monkeypatch):
    """A graph that reads right-padded rows only (as before real_tokens_first), marked so that the backend
    re-pads for it: rerank-export's own runtime scores it right, a user's left-padded batch does not, and
    the gate fails it naming the plain onnxruntime path."""
    import importlib

    import onnx

    from rerank_export.parity import check_artifacts

    onnx_export = importlib.import_module("rerank_export.formats.onnx.export")  # the package exports a function so named
    monkeypatch.setattr(onnx_export, "real_tokens_first", lambda ids, mask: (ids, mask))
    root = tmp_path / "artifacts"
    export_formats(source.model_id, None, root, ["onnx-fp32"], source=source)
    path = root / "onnx-fp32" / ox.MODEL_FILE
    graph = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(graph, {ox.PADDING_KEY: "right"})
    onnx.save_model(graph, str(path))
    manifest = read_manifest(root / "onnx-fp32")
    manifest.files = describe_files(root / "onnx-fp32")
    manifest.write(root / "onnx-fp32")

    report, = check_artifacts(root, source, [builtin_eval_set(long_document=False)])
    assert not report.passed
    assert report.breaches and all(b.startswith("plain onnxruntime: ") for b in report.breaches), report.breaches
    assert any("batch_max_dp" in b for b in report.breaches)
    assert report.metrics["max_abs_dp"] < 1e-5  # the runtime's own path: exact
    assert report.metrics["batch_max_dp"] == report.metrics["plain"]["batch_max_dp"] > 1e-3
    assert "plain onnxruntime" in (root / "onnx-fp32" / "parity.md").read_text()


def test_kv_positions_return_the_prefix_keys_and_values(onnx_root, source):
    """The prefix pass: kv_positions asks for positions 0..P-1 of every layer; a plain run returns none."""
    config = source.lm.config
    session = ox.make_session(onnx_root / "onnx-fp32" / ox.MODEL_FILE)
    ids = np.asarray([source.contract.encode("a query", "a document").input_ids], dtype=np.int64)
    presents = [o.name for o in session.get_outputs()][1:]
    plain = session.run(presents, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    asked = session.run(presents, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                   ox.KV_POSITIONS: np.arange(5, dtype=np.int64)})
    assert all(p.shape == (1, config.num_key_value_heads, 0, config.head_dim) for p in plain)
    assert all(p.shape == (1, config.num_key_value_heads, 5, config.head_dim) for p in asked)


def test_the_last_layer_runs_on_each_rows_last_token_only(onnx_root, source, tmp_path):
    """The score reads one position, so the last layer's down_proj (the graph's last MatMul before the
    head) runs on one token per row: its output is (B, 1, hidden), however long and padded the rows."""
    import onnx
    import onnxruntime

    model = onnx.load(str(onnx_root / "onnx-fp32" / ox.MODEL_FILE))
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and ox.HEAD not in n.input]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(matmuls[-1].output[0]))
    onnx.save(model, str(tmp_path / "probe.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "probe.onnx"))  # a plain one: the probe output is extra
    ids, mask = _batch(source, "left")
    logit, down = session.run([ox.OUTPUT, matmuls[-1].output[0]], {"input_ids": ids, "attention_mask": mask})
    assert ids.shape[1] > 1 and down.shape == (len(ids), 1, source.lm.config.hidden_size)
    expected = ReferenceBackend(source).logits(ids, mask)
    np.testing.assert_allclose(logit, expected, atol=FP32_LOGIT_TOL, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_fp32_logits_match_the_causal_lm(onnx_root, source, side):
    ids, mask = _batch(source, side)
    backend = ox.load(onnx_root / "onnx-fp32", read_manifest(onnx_root / "onnx-fp32"))
    expected = ReferenceBackend(source).logits(ids, mask)
    np.testing.assert_allclose(backend.logits(ids, mask), expected, atol=FP32_LOGIT_TOL, rtol=0)


def test_every_onnx_artifact_passes_the_parity_gate(onnx_root, source, copy_tree):
    from rerank_export.parity import check_artifacts

    root = copy_tree(onnx_root, "gate")
    reports = check_artifacts(root, source, [builtin_eval_set(long_document=False)])
    assert {r.name for r in reports} == set(ONNX_NAMES)
    for report in reports:
        assert report.passed, (report.name, report.breaches)
        assert read_manifest(root / report.name).parity["verdict"] == "pass"
    fp32 = next(r for r in reports if r.name == "onnx-fp32")
    assert fp32.metrics["max_abs_dp"] < 1e-5


def test_int8_quantizes_matmul_weights_only_and_keeps_the_head(onnx_root):
    import onnx

    model = onnx.load(str(onnx_root / "onnx-int8" / ox.MODEL_FILE), load_external_data=False)
    ops = {n.op_type for n in ox.all_nodes(model.graph)}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    inits = {t.name: t.data_type for t in model.graph.initializer}
    assert inits[ox.HEAD] == onnx.TensorProto.FLOAT
    assert inits["decoder.embed_tokens.weight"] == onnx.TensorProto.FLOAT  # Gather left alone by default
    assert [n.op_type for n in ox.all_nodes(model.graph) if ox.HEAD in n.input] == ["MatMul"]


def test_int8_weights_are_7_bit_so_no_cpu_saturates(onnx_root):
    """u8 activations x s8 weights: without VNNI onnxruntime sums pairs in int16 (VPMADDUBSW), which
    saturates past 32767. 255 * 64 * 2 = 32640 fits, so with weights in [-64, 64] every CPU computes the
    same integers (scores measured identical on AVX512-VNNI, AVX2 and SSE4.2: tests/e2e/test_cpu_paths.py)."""
    import onnx
    from onnx import numpy_helper

    folder = onnx_root / "onnx-int8"
    assert read_manifest(folder).details["int8"]["reduce_range"] is True
    model = onnx.load(str(folder / ox.MODEL_FILE))
    weights = {n.input[1] for n in ox.all_nodes(model.graph) if n.op_type == "MatMulInteger"}
    values = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name in weights]
    assert len(values) == 7 * 2  # q k v o gate up down, two tiny layers
    assert all(v.dtype == np.int8 and np.abs(v.astype(np.int32)).max() <= 64 for v in values)


def test_fp16_keeps_io_types_and_halves_the_weights(onnx_root):
    import onnx

    details = read_manifest(onnx_root / "onnx-fp16").details["fp16"]
    assert details["keep_io_types"] and details["fp32_norms"] and details["fp32_nodes"] > 0
    # the fused norms run in fp32 (the overflow guard): input and weight each arrive through a Cast to fp32
    model = onnx.load(str(onnx_root / "onnx-fp16" / ox.MODEL_FILE), load_external_data=False)
    producer = {out: n for n in model.graph.node for out in n.output}
    norms = [n for n in model.graph.node if n.op_type == "SimplifiedLayerNormalization"]
    casts = [producer[name] for n in norms for name in n.input[:2]]
    assert norms and all(c.op_type == "Cast" and c.attribute[0].i == onnx.TensorProto.FLOAT for c in casts)
    fp32 = (onnx_root / "onnx-fp32" / ox.DATA_FILE).stat().st_size
    fp16 = (onnx_root / "onnx-fp16" / ox.DATA_FILE).stat().st_size
    assert 0.45 < fp16 / fp32 < 0.55


def _stressed_source(tiny_model: Path, tmp_path: Path) -> SourceModel:
    import torch

    src = SourceModel(str(shutil.copytree(tiny_model, tmp_path / "stressed")))
    with torch.no_grad():
        src.lm.model.layers[0].mlp.down_proj.weight.mul_(STRESS_SCALE)
    return src


def _residual_rms(src: SourceModel, ids: np.ndarray) -> float:
    """Largest per-token RMS of the residual stream entering layer 1 (the next RMSNorm's input)."""
    import torch

    with torch.no_grad():
        hidden = src.lm.model(input_ids=torch.as_tensor(ids), output_hidden_states=True).hidden_states[1]
    return float(hidden.pow(2).mean(-1).sqrt().max())


def test_fp16_survives_large_activations_where_naive_fp16_does_not(tiny_model, tmp_path):
    """Evaluated with onnx's reference evaluator, which computes fp16 tensors in fp16 like a GPU does.

    (onnxruntime's CPU provider runs most fp16 ops in fp32, so it would hide the overflow.) The graph
    spells attention out in plain ops, which the evaluator runs; the norms it checks are the same in both.
    """
    from onnx.reference import ReferenceEvaluator
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    from rerank_export.scoring import sigmoid

    src = _stressed_source(tiny_model, tmp_path)
    ids, mask = _batch(src, "left")
    assert _residual_rms(src, ids) > FP16_SQUARE_LIMIT  # the stress really overflows x^2 in fp16
    fp32 = ox.export_fp32_graph(src, tmp_path / "fp32.onnx", attention="matmul")
    ox.to_fp16(fp32, tmp_path / "safe.onnx", ox.OnnxFp16Options())
    naive = convert_float_to_float16(str(fp32), keep_io_types=True)
    OnnxModel(naive).topological_sort()
    ox.save_external(naive, tmp_path / "naive.onnx")
    expected = sigmoid(ReferenceBackend(src).logits(ids, mask))
    feed = {"input_ids": ids, "attention_mask": mask}
    safe = sigmoid(ReferenceEvaluator(str(tmp_path / "safe.onnx")).run(None, feed)[0])
    with np.errstate(over="ignore", invalid="ignore"):
        bad = sigmoid(ReferenceEvaluator(str(tmp_path / "naive.onnx")).run(None, feed)[0])
    assert np.isfinite(safe).all() and np.abs(safe - expected).max() <= FP16_MAX_DP
    assert not np.isfinite(bad).all() or np.abs(bad - expected).max() > FP16_MAX_DP


def test_missing_external_data_is_a_one_line_error(onnx_root, copy_tree):
    folder = copy_tree(onnx_root / "onnx-int8")
    (folder / ox.DATA_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx\.data is missing"):
        ox.load(folder, read_manifest(folder))


def test_truncated_model_is_a_one_line_error(onnx_root, copy_tree):
    folder = copy_tree(onnx_root / "onnx-int8")
    path = folder / ox.MODEL_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ArtifactError, match=r"model\.onnx") as info:
        ox.load(folder, read_manifest(folder))
    assert "\n" not in str(info.value)


def test_unexpected_graph_inputs_are_refused(onnx_root, copy_tree):
    import onnx
    from onnx import TensorProto, helper

    folder = copy_tree(onnx_root / "onnx-int8")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["logit"])], "wrong", [x], [y])
    onnx.save_model(helper.make_model(graph), str(folder / ox.MODEL_FILE))
    with pytest.raises(ArtifactError, match=r"has inputs \['x'\].*expected int64"):
        ox.load(folder, read_manifest(folder))


def test_session_options_and_providers():
    import onnxruntime

    opts = ox.session_options(threads=1, optimization="basic")
    assert opts.intra_op_num_threads == 1
    assert opts.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert not opts.enable_mem_reuse  # its per-shape buffer pools held 2.7x the activations (RESULTS.md)
    assert ox.providers_for("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert ox.providers_for("auto") == ["CPUExecutionProvider"]
        with pytest.raises(MissingExtra, match="onnxruntime-gpu"):
            ox.providers_for("cuda")


def test_release_memory_hands_the_arena_back(onnx_root):
    """onnxruntime keeps its arena at the high-water mark after a long sequence; release_memory returns it
    (the server calls it after large requests), and the session still scores the same afterwards."""
    from rerank_export.memory import rss_bytes

    folder = onnx_root / "onnx-fp32"  # runs the batch whole (onnx-int8 runs one row at a time: rows.py)
    backend = ox.load(folder, read_manifest(folder), "cpu")
    ids = np.random.default_rng(0).integers(0, 1000, size=(32, 3072))  # attention is linear: a big batch
    mask = np.ones_like(ids)
    backend.logits(ids[:, :16], mask[:, :16])
    loaded = rss_bytes()
    first = backend.logits(ids, mask)
    grown = rss_bytes() - loaded
    backend.release_memory()
    kept = rss_bytes() - loaded
    assert grown > 100 * 2**20, f"a 32 x 3,072-token pass grew RSS by only {grown / 2**20:.0f} MiB: nothing to release"
    assert kept < 0.2 * grown, f"{kept / 2**20:.0f} of {grown / 2**20:.0f} MiB still held"
    assert np.array_equal(backend.logits(ids, mask), first)


@pytest.mark.slow
def test_one_long_document_costs_an_onnx_graph_at_most_1_5x_pytorch_fp32(onnx_root, baseline_artifacts):
    """Issue 14's bound on attention memory: one 8,192-token document, peak RSS above the loaded model, each
    artifact in a fresh process (the exporter's own matmul attention took 43x on the 0.6B shape; its
    numbers are in benchmarks/RESULTS.md)."""
    from rerank_export.memory import measure_peak

    reference = measure_peak(baseline_artifacts / "baseline-fp32", 1, 8192)["peak_above_loaded"]
    for name in ("onnx-fp32", "onnx-int8"):
        peak = measure_peak(onnx_root / name, 1, 8192)["peak_above_loaded"]
        assert peak <= 1.5 * reference, f"{name}: {peak / 2**20:.0f} MiB against {reference / 2**20:.0f} MiB"


def test_int8_as_nbits_blocks_scores_each_row_on_its_own(onnx_root, tmp_path):
    """method "nbits": 8-bit MatMulNBits weights; at accuracy level 0 a row's score ignores its batch-mates
    (dynamic int8's one activation scale per batch does not)."""
    import onnx

    dst = tmp_path / ox.MODEL_FILE
    details = ox.to_int8(onnx_root / "onnx-fp32" / ox.MODEL_FILE, dst, ox.OnnxInt8Options(method="nbits", accuracy_level=0))
    assert details["int8"]["bits"] == 8 and details["int8"]["accuracy_level"] == 0
    nodes = [n for n in onnx.load(str(dst), load_external_data=False).graph.node if n.op_type == "MatMulNBits"]
    assert nodes and all(next(a.i for a in n.attribute if a.name == "bits") == 8 for n in nodes)
    backend = ox.OnnxBackend(ox.make_session(dst))
    rng = np.random.default_rng(0)
    short, long = rng.integers(0, 1000, size=(1, 20)), rng.integers(0, 1000, size=(1, 300))
    ids, mask = pad_left([short[0].tolist(), long[0].tolist()], 0)
    together = backend.logits(np.asarray(ids), np.asarray(mask))
    alone = backend.logits(short, np.ones_like(short))
    assert abs(together[0] - alone[0]) < 1e-4
