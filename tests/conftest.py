"""Session-scoped tiny models built offline from the real Qwen3 tokenizer in ../shared/fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
QWEN_TOKENIZER = FIXTURES / "qwen3-reranker-0.6b"
NOVELEVAL = FIXTURES / "noveleval-2306"
T2RANKING_SMALL = FIXTURES / "t2ranking-100" / "t2rank_100.small.jsonl"


def pytest_collection_modifyitems(config, items):
    if not QWEN_TOKENIZER.is_dir():
        skip = pytest.mark.skip(reason=f"{QWEN_TOKENIZER} not found (../shared beside the checkout)")
        for item in items:
            if "needs_fixtures" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _awq_search_cache(tmp_path_factory):
    """This session's own AWQ search cache (awq/cache.py): nothing from an earlier run is reused, and the
    user's ~/.cache stays untouched. Set in os.environ so CLI subprocesses inherit it."""
    from rerank_export.awq.cache import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("search-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from rerank_export.contract import load_tokenizer

    return load_tokenizer(QWEN_TOKENIZER)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Tiny random Qwen3 reranker with the real tokenizer (read-only: copy it before mutating)."""
    from rerank_export.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("models") / "tiny", tokenizer_dir=QWEN_TOKENIZER, seed=0)


@pytest.fixture(scope="session")
def source(tiny_model):
    from rerank_export.reference import SourceModel

    return SourceModel(str(tiny_model))


@pytest.fixture(scope="session")
def baseline_artifacts(tmp_path_factory, source) -> Path:
    """fp32 and bf16 baseline artifacts of the tiny model (read-only)."""
    from rerank_export.export import export_formats

    root = tmp_path_factory.mktemp("artifacts")
    export_formats(source.model_id, None, root, ["baseline-fp32", "baseline-bf16"], source=source)
    return root


@pytest.fixture(scope="session")
def verified_artifacts(tmp_path_factory, baseline_artifacts, source) -> Path:
    """A copy of the baseline artifacts whose baseline-fp32 passed the parity gate (the runtime's input)."""
    from rerank_export.evalsets import builtin_eval_set
    from rerank_export.parity import check_artifacts

    root = tmp_path_factory.mktemp("verified") / "artifacts"
    shutil.copytree(baseline_artifacts, root)
    assert check_artifacts(root, source, [builtin_eval_set(False).limit(2)], names=["baseline-fp32"])[0].passed
    return root


ONNX_NAMES = ["onnx-fp32", "onnx-fp16", "onnx-int8"]


@pytest.fixture(scope="session")
def onnx_root(tmp_path_factory, source) -> Path:
    """The tiny model's fp32, fp16 and int8 ONNX artifacts, from one fp32 export (read-only: copy to mutate)."""
    from rerank_export.export import export_formats

    root = tmp_path_factory.mktemp("onnx")
    export_formats(source.model_id, None, root, ONNX_NAMES, source=source)
    return root


@pytest.fixture
def copy_tree(tmp_path):
    def _copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or Path(src).name)
        shutil.copytree(src, dst)
        return dst

    return _copy
