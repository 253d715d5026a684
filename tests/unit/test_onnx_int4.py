"""onnx-int4: AWQ's search applied to the decoder, then onnxruntime's 4-bit blocks (MatMulNBits)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rerank_export.errors import UsageError
from rerank_export.evalsets import builtin_eval_set
from rerank_export.export import export_formats
from rerank_export.formats import get_format
from rerank_export.formats import onnx as ox
from rerank_export.manifest import read_manifest
from rerank_export.parity import check_artifacts
from rerank_export.reference import ReferenceBackend
from rerank_export.scoring import score_pairs

pytestmark = pytest.mark.needs_fixtures

SEARCH = {"calib_samples": 16, "search_tokens": 512}  # as tests/unit/test_awq_format.py
NAME = "onnx-int4"


@pytest.fixture(scope="module")
def int4_root(tmp_path_factory, source):
    """awq-int4, then onnx-int4 beside it (so it reuses the search)."""
    root = tmp_path_factory.mktemp("int4")
    export_formats(source.model_id, None, root, ["awq-int4", NAME], {"awq-int4": SEARCH, NAME: SEARCH},
                   source=source)
    return root


def test_a_bad_block_size_fails_before_any_work(tmp_path):
    # No source model at all: the options are read first, so onnxruntime's own assertion (after the whole
    # AWQ search) is never reached.
    with pytest.raises(UsageError, match=r"onnx-int4 options: 'group_size' must be a power of two from 16"):
        export_formats(str(tmp_path / "nowhere"), None, tmp_path / "out", [NAME], {NAME: {"group_size": 24}})
    assert not (tmp_path / "out").exists()


def _scores(folder, pairs):
    from rerank_export import load

    return np.array(load(folder, device="cpu", allow_unverified=True).score(pairs))


def test_reuses_the_awq_search_and_quantizes_every_decoder_matmul(int4_root, source):
    import onnx

    details = read_manifest(int4_root / NAME).details
    assert details["awq"]["search_from"] == "cache"  # awq-int4 ran the search, onnx-int4 read it
    assert details["int4"]["block_size"] == 128 and details["int4"]["embedding"] == "int4, blocks of 32"
    assert details["options"]["group_size"] == 128 and details["options"]["embedding_block_size"] == 32
    model = onnx.load(str(int4_root / NAME / ox.MODEL_FILE), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulNBits") == 7 * source.lm.config.num_hidden_layers  # q k v o gate up down
    assert ops.count("GatherBlockQuantized") == 1
    weights = {t.name for t in model.graph.initializer}
    float_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    assert [n for m in float_matmuls for n in m.input if n in weights] == [ox.HEAD]  # only the head stays fp32


def test_scores_like_awq_int4_when_computed_alike(int4_root, source, tmp_path):
    """Same scales, clipping and 4-bit grid as awq-int4: with an fp32 embedding and fp32 activations
    (accuracy level 0) its scores sit far closer to awq-int4's than either does to the reference."""
    root = tmp_path / "artifacts"
    shutil.copytree(int4_root / "awq-int4", root / "awq-int4")
    export_formats(source.model_id, None, root, [NAME],
                   {NAME: {**SEARCH, "quantize_embedding": False, "accuracy_level": 0}}, source=source)
    pairs = [(g.query, d) for g in builtin_eval_set(False).groups for d in g.documents]
    onnx_scores, awq_scores = _scores(root / NAME, pairs), _scores(root / "awq-int4", pairs)
    reference = np.array(score_pairs(ReferenceBackend(source), source.contract, pairs).scores)
    gap = np.abs(onnx_scores - awq_scores).max()
    assert gap < 0.1 * np.abs(awq_scores - reference).max()  # measured: 0.021 against 0.33


def test_int8_activations_move_scores_far_less_than_the_4bit_weights(int4_root, source, tmp_path):
    """The default accuracy level 4 quantizes activations to int8 in kernels that differ by CPU (AVX2,
    AVX512-VNNI, AMX; plain SSE computes in fp32 instead). Against a twin with the same 4-bit weights and
    fp32 activations, that rounding must stay a small part of the error: measured 0.017 max |dp| on
    AVX512-VNNI, 0.015 on AVX2, 0 on SSE4 (qemu), against 0.21 from the weights, so a quarter is 3x margin."""
    root = tmp_path / "artifacts"
    shutil.copytree(int4_root / "awq-int4", root / "awq-int4")
    export_formats(source.model_id, None, root, [NAME], {NAME: {**SEARCH, "accuracy_level": 0}}, source=source)
    assert read_manifest(root / NAME).details["int4"]["accuracy_level"] == 0
    pairs = [(g.query, d) for g in builtin_eval_set(False).groups for d in g.documents]
    level4, level0 = _scores(int4_root / NAME, pairs), _scores(root / NAME, pairs)
    reference = np.array(score_pairs(ReferenceBackend(source), source.contract, pairs).scores)
    assert np.abs(level4 - level0).max() < 0.25 * np.abs(level0 - reference).max()


def test_passes_the_parity_gate(int4_root, source, copy_tree):
    root = copy_tree(int4_root)
    (result,) = check_artifacts(root, source, [builtin_eval_set(False)], names=[NAME])
    assert result.passed, result.breaches
    assert result.metrics["max_abs_dp"] <= get_format(NAME).thresholds.max_abs_dp


def test_other_search_settings_run_a_new_search(int4_root, source, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(int4_root / "awq-int4", root / "awq-int4")
    export_formats(source.model_id, None, root, [NAME], {NAME: {**SEARCH, "group_size": 32}}, source=source)
    details = read_manifest(root / NAME).details
    assert details["awq"]["search_from"] == "this export" and details["int4"]["block_size"] == 32
