"""The try-it page in a real headless chromium: type a query and documents, click, see ranked results."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from .test_serve import ServerThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SAME_ARTIFACT_TOL = 1e-4  # the page shows 4 decimals

pytestmark = [
    pytest.mark.browser,
    pytest.mark.needs_fixtures,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright not installed"),
]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory, baseline_artifacts, source):
    import rerank_export
    from rerank_export.evalsets import builtin_eval_set
    from rerank_export.parity import check_artifacts
    from rerank_export.serve import create_app

    root = tmp_path_factory.mktemp("browser") / "artifacts"
    shutil.copytree(baseline_artifacts, root)
    assert check_artifacts(root, source, [builtin_eval_set(False).limit(2)], names=["baseline-fp32"])[0].passed
    reranker = rerank_export.load(root, device="cpu", max_length=256)
    with ServerThread(create_app(reranker, "tiny-reranker")) as url:
        yield url, reranker


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_rank_documents_in_the_page(page_url, browser):
    url, reranker = page_url
    docs = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel Tower is in Paris."]
    page = browser.new_page()
    page.goto(url + "/")
    page.fill("#query", "What is the capital of France?")
    page.fill("#documents", "\n".join(docs) + "\n\n")  # blank lines are not documents
    page.click("#rank")
    page.wait_for_selector("#results li.result")
    rows = page.locator("#results li.result")
    assert rows.count() == 3
    shown = [(rows.nth(i).locator(".text").inner_text(), float(rows.nth(i).locator(".score").inner_text()))
             for i in range(3)]
    expected = sorted(zip(docs, reranker.score([("What is the capital of France?", d) for d in docs])),
                      key=lambda x: -x[1])
    assert [t for t, _ in shown] == [t for t, _ in expected]
    assert all(abs(s - e) <= SAME_ARTIFACT_TOL for (_, s), (_, e) in zip(shown, expected))
    assert "tokens" in page.inner_text("#usage")
    page.close()


def test_an_empty_query_shows_the_servers_message(page_url, browser):
    url, _ = page_url
    page = browser.new_page()
    page.goto(url + "/")
    page.fill("#documents", "a document")
    page.click("#rank")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "'query' is empty" in page.inner_text("#error")
    assert page.locator("#results li").count() == 0
    page.close()


def test_top_n_and_max_tokens_per_document_reach_the_server(page_url, browser):
    url, _reranker = page_url
    docs = ["Paris is the capital of France.", "Bananas are yellow.", "Paris, France: the capital city " * 10]
    page = browser.new_page()
    page.goto(url + "/")
    page.fill("#query", "What is the capital of France?")
    page.fill("#documents", "\n".join(docs))
    page.fill("#top_n", "2")
    page.fill("#max_tokens_per_doc", "12")
    page.click("#rank")
    page.wait_for_selector("#results li.result")
    assert page.locator("#results li.result").count() == 2
    assert "1 document(s) truncated" in page.inner_text("#usage")  # 7, 5 and 71 tokens: only the last is cut
    page.close()
