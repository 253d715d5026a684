"""The HTTP request contract, written down in one place: which fields each route reads and what each does.

Every field a client may send is in one of two tables: READ (honoured, with what it does) or REFUSED (known
from a client family but not supported here, with why). Anything else, or a refused field set to a value
other than its harmless default, is a 400 that names it: nothing is accepted and silently ignored.

Routes: POST /v1/rerank, /v2/rerank, /rerank (vLLM; Cohere v1 and v2 clients; Jina), POST /score,
/v1/score (vLLM's pairs), and TEI's POST /rerank, told apart by its `texts` field (answered by a bare list).
"""

from __future__ import annotations

import json
from typing import Any

RERANK_ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank")
SCORE_ROUTES = ("/score", "/v1/score")
# vLLM's score request shapes, (queries, documents) field names, newest first; `pairs` is ours.
SCORE_SHAPES = (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"), ("text_1", "text_2"))

COMMON = {
    "model": "must be the served model name (GET /v1/models) if sent; another name is a 404, as in vLLM",
    "instruction": "the task line of the Qwen3 template (default: the model card's web-search one)",
    "chat_template_kwargs": "only {'instruction': ...}, the same as the top-level field",
    "max_tokens_per_doc": "each document is cut to this many of its own tokens (Cohere v2, vLLM)",
    "truncate_prompt_tokens": "each pair is cut to this many tokens, from the document's end only (vLLM)",
}
READ = {
    "rerank": {**COMMON,
               "query": "the query (a non-empty string)",
               "documents": "strings, {'text': string} or vLLM's {'content': [text parts]}",
               "top_n": "the best n results; 0, absent or above the count: all (vLLM)",
               "return_documents": "echo each document's text in results (default true)"},
    "score": {**COMMON,
              "pairs": "[[query, document], ...]",
              "text_1": "one query, or one per document (vLLM)",
              "text_2": "the documents (vLLM)",
              "queries": "as text_1 (vLLM's current names)",
              "documents": "as text_2 (vLLM's current names)",
              "items": "as text_2 (vLLM)",
              "data_1": "as text_1 (vLLM)",
              "data_2": "as text_2 (vLLM)"},
    "tei": {"query": "the query (a non-empty string)",
            "texts": "the documents (strings)",
            "return_text": "echo each text in the answer (default false)",
            "truncate": "true: cut texts longer than the max length; false or absent: refuse them (413)"},
}
# Fields real clients send that this server does not implement: refused by name unless harmless.
REFUSED: dict[str, tuple[Any, str]] = {
    "rank_fields": (None, "Cohere v1's structured documents are not supported: send text documents"),
    "max_chunks_per_doc": (None, "documents are truncated, never chunked: use max_tokens_per_doc"),
    "return_text": (None, "TEI's field: TEI's shape is POST /rerank with 'texts'"),
    "texts": (None, "TEI's field: TEI's shape is POST /rerank with 'query' and 'texts' only"),
    "padding": (None, "pairs are batched by this server's token budget"),
    "mm_processor_kwargs": (None, "text only"),
    "softmax": (None, "scores are always p(yes)"),
    "activation": (None, "scores are always p(yes): see 'use_activation'"),
}
# Options every route accepts at the values that describe what it does anyway (and refuses otherwise).
HARMLESS: dict[str, tuple[tuple[Any, ...], str]] = {
    "use_activation": ((True,), "scores are always p(yes) in [0, 1]"),
    "priority": ((0,), "requests are served in arrival order"),
    "raw_scores": ((False,), "only p(yes) scores are served"),
    "truncation_direction": (("right", "Right"), "documents are cut from their end"),
    "truncation_side": (("right",), "documents are cut from their end"),
    "max_tokens_per_query": ((0,), "queries are never cut (vLLM: 0 = no query truncation)"),
}


def unread_field(body: dict[str, Any], kind: str) -> tuple[str, str] | None:
    """The first field of `body` this server would not honour, with why; None when all are honoured."""
    for key, value in body.items():
        if key in HARMLESS:
            allowed, why = HARMLESS[key]
            if value is not None and value not in allowed:
                return key, f"'{key}' can only be {json.dumps(allowed[0])} here: {why}"
        elif key in READ[kind]:
            continue
        elif key in REFUSED:
            if value != REFUSED[key][0]:
                return key, f"'{key}' is not supported here: {REFUSED[key][1]}"
        else:
            return key, f"'{key}' is not a field of this route; it reads {', '.join(sorted(READ[kind]))}"
    return None
