"""The awq-int4 artifact: AutoAWQ GEMM files, a loader checked against an independent dequantised model,
the parity gate, calibration input, refusals, and the vLLM argument list."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rerank_export.calibration import builtin_pairs, load_calibration, read_pairs, select
from rerank_export.errors import ArtifactError, EvalSetError, UsageError
from rerank_export.evalsets import builtin_eval_set
from rerank_export.export import export_formats
from rerank_export.formats import FORMATS
from rerank_export.formats.awq import SEARCH_FILE, AwqOptions, load
from rerank_export.formats.options import as_table
from rerank_export.manifest import read_manifest
from rerank_export.parity import check_artifacts

from .test_awq_pack import reference_dequantize

pytestmark = pytest.mark.needs_fixtures

NAME = "awq-int4"
OPTIONS = {"calib_samples": 16, "search_tokens": 512}
LOADER_ATOL = 1e-3  # loader (fp16 hook, packed on-the-fly) vs the independent fp32 dequantised model
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def awq_root(tmp_path_factory, source):
    root = tmp_path_factory.mktemp("awq")
    export_formats(source.model_id, None, root, [NAME], {NAME: OPTIONS}, source=source)
    return root


def test_files_follow_the_autoawq_gemm_layout(awq_root, source):
    from safetensors.torch import load_file

    folder = awq_root / NAME
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["quantization_config"] == {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                                          "version": "gemm", "modules_to_not_convert": ["score"]}
    assert cfg["architectures"] == ["Qwen3ForSequenceClassification"]
    state = load_file(str(folder / "model.safetensors"))
    hidden = source.lm.config.hidden_size
    assert state["score.weight"].dtype == torch.float16 and state["score.weight"].shape == (1, hidden)
    assert state["model.embed_tokens.weight"].dtype == torch.float16
    for i in range(source.lm.config.num_hidden_layers):
        for name in LINEARS:
            key = f"model.layers.{i}.{name}"
            linear = source.lm.model.layers[i].get_submodule(name)
            out_f, in_f = linear.out_features, linear.in_features
            assert f"{key}.weight" not in state
            assert state[f"{key}.qweight"].shape == (in_f, out_f // 8) and state[f"{key}.qweight"].dtype == torch.int32
            assert state[f"{key}.qzeros"].shape == (in_f // 128, out_f // 8)
            assert state[f"{key}.scales"].shape == (in_f // 128, out_f)
            assert state[f"{key}.scales"].dtype == torch.float16
    assert (folder / SEARCH_FILE).is_file() and (folder / "tokenizer_config.json").is_file()


def test_manifest_records_calibration_and_search(awq_root, source):
    manifest = read_manifest(awq_root / NAME)
    assert manifest.format == NAME and manifest.dtype == "int4"
    assert manifest.details["calibration"]["name"] == "builtin"
    assert manifest.details["calibration"]["samples"] == 16
    assert manifest.details["search"]["n_grid"] == 20 and manifest.details["search"]["clip"] is True
    # Every option it was built with, defaults spelled out (the export stage records them)
    assert manifest.details["options"] == {**as_table(AwqOptions()), **OPTIONS}
    baseline_bytes = sum(p.numel() * 2 for p in source.lm.parameters())  # 16-bit, tied embedding
    assert manifest.memory.weight_bytes < baseline_bytes


def _independent_model(folder, source):
    """A float Qwen3ForSequenceClassification with each layer dequantised by the loop-based unpacker."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, Qwen3ForSequenceClassification

    state = load_file(str(folder / "model.safetensors"))
    float_state = {k: v.float() for k, v in state.items() if not k.endswith(("qweight", "qzeros", "scales"))}
    for key in [k[: -len(".qweight")] for k in state if k.endswith(".qweight")]:
        tensors = {t: state[f"{key}.{t}"] for t in ("qweight", "qzeros", "scales")}
        float_state[f"{key}.weight"] = reference_dequantize(tensors, 128)
    config = AutoConfig.from_pretrained(str(folder))
    model = Qwen3ForSequenceClassification(config).float().eval()
    model.load_state_dict(float_state, strict=True)
    return model


def test_loader_matches_an_independent_dequantised_model(awq_root, source):
    folder = awq_root / NAME
    backend = load(folder, read_manifest(folder), "cpu")
    fresh_rotary = type(backend.model.model.rotary_emb)(config=backend.model.config)
    assert torch.equal(backend.model.model.rotary_emb.inv_freq, fresh_rotary.inv_freq)
    model = _independent_model(folder, source)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2000, (3, 40), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :10] = 0  # left padding on one row
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).logits[:, 0].numpy()
    assert np.allclose(backend.logits(ids.numpy(), mask.numpy()), expected, atol=LOADER_ATOL)


def test_parity_gate_passes_with_recorded_thresholds(awq_root, source):
    (report,) = check_artifacts(awq_root, source, [builtin_eval_set()], names=[NAME])
    print({k: round(v, 4) for k, v in report.metrics.items() if isinstance(v, float)})
    assert report.passed, report.breaches
    assert read_manifest(awq_root / NAME).parity["verdict"] == "pass"
    assert FORMATS[NAME].thresholds.max_abs_dp < 0.5  # a real limit, not a disabled check


def test_bad_quantization_config_is_refused(awq_root, copy_tree):
    folder = copy_tree(awq_root / NAME)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["bits"] = 8
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="not 4-bit AWQ GEMM"):
        load(folder, None, "cpu")


def test_missing_weights_are_refused(awq_root, copy_tree):
    folder = copy_tree(awq_root / NAME)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="rebuild the artifact"):
        load(folder, None, "cpu")


@pytest.mark.parametrize("options, message", [({"w_bit": 4}, "awq-int4 options: unknown option .w_bit."),
                                              ({"group_size": 96}, "--group-size 96")])
def test_bad_options_fail_before_the_search(source, tmp_path, options, message):
    with pytest.raises(UsageError, match=message):
        export_formats(source.model_id, None, tmp_path, [NAME], {NAME: options}, source=source)


def test_calibration_reads_pairs_and_eval_lines(tmp_path, qwen_tokenizer):
    path = tmp_path / "calib.jsonl"
    path.write_text('{"query": "q1", "document": "d1", "instruction": "i"}\n\n'
                    '{"query": "q2", "documents": ["a", {"text": "b"}]}\n', encoding="utf-8")
    pairs = read_pairs(path)
    assert [(p.query, p.document, p.instruction) for p in pairs] == [("q1", "d1", "i"), ("q2", "a", None),
                                                                    ("q2", "b", None)]
    calib = load_calibration(qwen_tokenizer, path, samples=64, max_length=96)
    assert len(calib.input_ids) == 3 and all(len(s) <= 96 for s in calib.input_ids)


def test_builtin_calibration_covers_languages():
    pairs = builtin_pairs()
    chosen = select(pairs, 32)
    assert 64 <= len(pairs) <= 100 and len(chosen) == 32
    assert any("\u4e00" <= ch <= "\u9fff" for p in chosen for ch in p.document)  # Chinese
    assert any("def " in p.document or "{" in p.document for p in chosen)  # code


@pytest.mark.parametrize("line, message", [('{"query": ""}', "'query'"), ('{"query": "q"}', "'document'"),
                                           ("[1]", "JSON object"), ("{", "not valid JSON")])
def test_bad_calibration_lines_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(EvalSetError, match=message) as exc:
        read_pairs(path)
    assert "bad.jsonl:1" in str(exc.value)
