"""The AWQ search: it changes nothing it compares against, s = 1 is plain RTN, and it beats RTN on outliers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rerank_export.awq.apply import apply_awq, fold_scales, quantize_linears
from rerank_export.awq.pack import fake_quantize
from rerank_export.awq.qlinear import WQLinearGEMM
from rerank_export.awq.search import (
    AWQResult,
    ScaleResult,
    SearchSettings,
    applicable_groups,
    candidate_scales,
    capture_block_inputs,
    grid_search,
    search,
    search_clip,
)
from rerank_export.calibration import load_calibration
from rerank_export.evalsets import builtin_eval_set
from rerank_export.formats.baseline import TorchBackend, to_sequence_classifier
from rerank_export.formats.spec import Thresholds
from rerank_export.parity import compare, score_set
from rerank_export.reference import ReferenceBackend, SourceModel

pytestmark = pytest.mark.needs_fixtures

SEED = 0
CALIB_SAMPLES = 16  # enough for a stable search on the tiny model, small enough for two shared cores
FOLD_ATOL = 1e-4  # logits of the scale-folded float model vs the original (fp32 rounding only)
OUTLIER_CHANNELS = [3, 17, 42, 99]
OUTLIER_FACTOR = 50.0
FAST = {"clip": False, "search_tokens": 512}


def _calib(source, samples=CALIB_SAMPLES):
    return load_calibration(source.tokenizer, samples=samples).input_ids


def test_alpha_zero_gives_exactly_one():
    x_mean = torch.rand(64) * 10 + 0.01
    assert torch.equal(candidate_scales(x_mean, 0.0), torch.ones(64))
    s = candidate_scales(x_mean, 0.5)
    assert torch.isclose(s.max() * s.min(), torch.tensor(1.0))


@pytest.mark.parametrize("seed", range(20))
def test_strided_grid_search_finds_the_scan_minimum_of_a_single_dip(seed):
    gen = torch.Generator().manual_seed(seed)
    n, low = 20, int(torch.randint(0, 20, (1,), generator=gen))
    depth = torch.rand(n, generator=gen) + 0.1  # a random curve falling to `low`, then rising
    curve = [float(depth[min(i, low):max(i, low)].sum()) for i in range(n)]
    scanned: list[int] = []
    best, losses = grid_search(n, 4, lambda i: scanned.append(i) or curve[i])
    assert best == low == min(range(n), key=curve.__getitem__)
    assert len(scanned) == len(set(scanned)) <= 9 and 0 in losses
    full, every = grid_search(n, 1, curve.__getitem__)
    assert full == low and sorted(every) == list(range(n))


def test_grid_search_ties_go_to_the_smaller_step():
    assert grid_search(20, 1, lambda i: 1.0)[0] == 0
    assert grid_search(20, 4, lambda i: 0.0 if i in (8, 12) else 1.0)[0] == 8


def test_capture_stops_at_the_first_block(source):
    decoder, ran = source.lm.model, []
    handles = [layer.register_forward_pre_hook(lambda m, a, i=i: ran.append(i))
               for i, layer in enumerate(decoder.layers)]
    try:
        with torch.inference_mode():
            batches = capture_block_inputs(decoder, _calib(source, 4), source.contract.pad_id, 512, torch.bfloat16)
    finally:
        for h in handles:
            h.remove()
    assert ran and set(ran) == {0}
    assert all(b.hidden.dtype == torch.bfloat16 and b.hidden.shape[:2] == b.mask.shape for b in batches)


def test_search_leaves_the_source_untouched_and_round_trips(source, tmp_path):
    before = {k: v.clone() for k, v in source.lm.state_dict().items()}
    result = search(source.lm.model, _calib(source, 8), source.contract.pad_id,
                    SearchSettings(search_tokens=256), progress=False)
    after = source.lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(result.scales) == 3 * len(source.lm.model.layers)  # GQA: no v->o group
    assert result.clips and all(not c.linear.endswith(("q_proj", "k_proj")) for c in result.clips)
    result.save(tmp_path / "awq.safetensors")
    loaded = AWQResult.load(tmp_path / "awq.safetensors")
    assert loaded.settings == result.settings
    assert [(r.block, r.prev, r.linears, r.alpha) for r in loaded.scales] == \
        [(r.block, r.prev, r.linears, r.alpha) for r in result.scales]
    assert all(torch.equal(a.scales, b.scales) for a, b in zip(loaded.scales, result.scales))
    assert all(torch.equal(a.max_val, b.max_val) for a, b in zip(loaded.clips, result.clips))


def test_v_to_o_group_only_without_gqa(source):
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    gqa = [g.prev for g in applicable_groups(source.lm.model.layers[0])]
    assert "self_attn.v_proj" not in gqa and "input_layernorm" in gqa
    config = source.lm.config.__class__(**{**source.lm.config.to_dict(), "num_key_value_heads": 4})
    mha = [g.prev for g in applicable_groups(Qwen3DecoderLayer(config, 0))]
    assert "self_attn.v_proj" in mha


def test_folding_scales_keeps_the_float_model(source):
    gen = torch.Generator().manual_seed(SEED)
    hidden, inter = source.lm.config.hidden_size, source.lm.config.intermediate_size
    result = AWQResult(SearchSettings(), [
        ScaleResult(0, "input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), 0.5,
                    0.0, 0.0, torch.rand(hidden, generator=gen) + 0.5),
        ScaleResult(1, "mlp.up_proj", ("mlp.down_proj",), 0.5, 0.0, 0.0, torch.rand(inter, generator=gen) + 0.5),
    ])
    plain, folded = to_sequence_classifier(source), to_sequence_classifier(source)
    fold_scales(folded.model, result)
    ids = torch.randint(0, 1000, (2, 12), generator=gen)
    with torch.inference_mode():
        a, b = plain(input_ids=ids).logits, folded(input_ids=ids).logits
    assert torch.allclose(a, b, atol=FOLD_ATOL)


def test_clip_search_is_never_worse_than_no_clip():
    gen = torch.Generator().manual_seed(SEED)
    weight, x = torch.randn(16, 256, generator=gen), torch.randn(300, 256, generator=gen)
    weight[0, 5] = 12.0  # one outlier weight: clipping its group should pay off
    max_val = search_clip(weight, x, SearchSettings())
    clipped = torch.clamp(weight.view(16, 2, 128), -max_val.unsqueeze(-1), max_val.unsqueeze(-1)).view(16, 256)

    def err(w):
        return float((x @ fake_quantize(w, 128).t() - x @ weight.t()).pow(2).mean())

    assert err(clipped) <= err(weight)
    assert float(max_val[0, 0]) < 12.0


def test_clip_search_scores_what_a_pass_over_the_tokens_scores():
    """The quadratic form d^T C d picks the bounds the token-by-token error (llm-awq's) picks."""
    gen = torch.Generator().manual_seed(SEED)
    weight = torch.randn(64, 256, generator=gen)
    x = torch.randn(700, 256, generator=gen) * (torch.rand(256, generator=gen) * 4)
    settings = SearchSettings()
    w = weight.view(64, 2, 128)
    xs = x[:: max(1, x.shape[0] // settings.clip_tokens)]
    org_max = w.abs().amax(dim=-1)
    errors = []
    for i in range(int(settings.max_shrink * settings.n_grid)):
        bound = (org_max * (1 - i / settings.n_grid)).unsqueeze(-1)
        clipped = fake_quantize(torch.clamp(w, -bound, bound).view(64, 256), 128).view(64, 2, 128)
        errors.append(torch.einsum("ogk,tgk->togk", clipped - w, xs.view(-1, 2, 128)).sum(-1).pow(2).mean(0))
    steps = torch.stack(errors).argmin(dim=0)  # the first least error per (row, group)
    assert torch.equal(search_clip(weight, x, settings), org_max * (1 - steps / settings.n_grid))


def test_scale_one_is_round_to_nearest(source):
    result = search(source.lm.model, _calib(source, 8), source.contract.pad_id,
                    SearchSettings(scale_search=False, **FAST), progress=False)
    assert all(torch.equal(r.scales, torch.ones_like(r.scales)) for r in result.scales)
    awq, rtn = to_sequence_classifier(source), to_sequence_classifier(source)
    apply_awq(awq.model, result)
    quantize_linears(rtn.model, result.settings.group_size)
    for a, b in zip(awq.model.layers.modules(), rtn.model.layers.modules()):
        if isinstance(a, WQLinearGEMM):
            assert torch.equal(a.qweight, b.qweight) and torch.equal(a.qzeros, b.qzeros)
            assert torch.equal(a.scales, b.scales)


@pytest.fixture(scope="module")
def outlier_source(tiny_model):
    """The tiny model with 4 input channels of block 0 scaled up 50x, compensated in q/k/v (same function)."""
    src = SourceModel(str(tiny_model))
    block = src.lm.model.layers[0]
    with torch.no_grad():
        block.input_layernorm.weight[OUTLIER_CHANNELS] *= OUTLIER_FACTOR
        for proj in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj):
            proj.weight[:, OUTLIER_CHANNELS] /= OUTLIER_FACTOR
    return src


def _scores(source, model, evalset):
    return np.asarray(score_set(TorchBackend(model), source, evalset))


def test_awq_beats_round_to_nearest_on_outliers(outlier_source, source):
    src, evalset = outlier_source, builtin_eval_set(long_document=False)
    reference = np.asarray(score_set(ReferenceBackend(src), src, evalset))
    # the injected outliers leave the float model unchanged
    assert np.allclose(reference, score_set(ReferenceBackend(source), source, evalset), atol=1e-5)
    rtn = to_sequence_classifier(src)
    quantize_linears(rtn.model, 128)
    scores = {"rtn": _scores(src, rtn, evalset)}
    for name, scale_search in (("awq", True), ("scale=1", False)):
        model = to_sequence_classifier(src)
        apply_awq(model.model, search(src.lm.model, _calib(src), src.contract.pad_id,
                                      SearchSettings(scale_search=scale_search, **FAST), progress=False))
        scores[name] = _scores(src, model, evalset)
    metrics = {k: compare(reference, v, evalset, Thresholds()).metrics for k, v in scores.items()}
    print({k: (round(m["spearman_mean"], 4), round(m["max_abs_dp"], 4)) for k, m in metrics.items()})
    assert np.array_equal(scores["scale=1"], scores["rtn"])
    assert metrics["awq"]["spearman_mean"] > metrics["rtn"]["spearman_mean"]
    assert metrics["awq"]["max_abs_dp"] < metrics["rtn"]["max_abs_dp"]
