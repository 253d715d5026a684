"""The HTTP request contract, written down in one place: which fields each route reads and what each does.

Every field a client may send is in one of two tables: READ (honoured, with what it does) or REFUSED (known
from a client family but not supported here, with why). Anything else, or a refused field set to a value
other than its harmless default, is a 400 that names it: nothing is accepted and silently ignored.

Routes: POST /v1/rerank, /v2/rerank, /rerank (vLLM; Cohere v1 and v2 clients; Jina) and POST /score,
/v1/score (vLLM's pairs). TEI's `/rerank` with `texts` is not served yet: `texts` is refused by name.
"""

from __future__ import annotations

from typing import Any

RERANK_ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank")
SCORE_ROUTES = ("/score", "/v1/score")

COMMON = {
    "model": "must be the served model name (GET /v1/models) if sent; another name is a 404, as in vLLM",
    "instruction": "the task line of the Qwen3 template (default: the model card's web-search one)",
    "chat_template_kwargs": "only {'instruction': ...}, the same as the top-level field",
    "max_tokens_per_doc": "each document is cut to this many of its own tokens (Cohere v2, vLLM)",
    "truncate_prompt_tokens": "each pair is cut to this many tokens, from the document's end only (vLLM)",
    "use_activation": "true only: scores are always p(yes) in [0, 1]",
    "priority": "0 only: requests are served in arrival order",
}
READ = {
    "rerank": {**COMMON,
               "query": "the query (a non-empty string)",
               "documents": "strings or {'text': string}",
               "top_n": "the best n results; 0, absent or above the count: all (vLLM)",
               "return_documents": "echo each document's text in results (default true)"},
    "score": {**COMMON,
              "pairs": "[[query, document], ...]",
              "text_1": "one query, or one per document (vLLM)",
              "text_2": "the documents (vLLM)"},
}
# Fields real clients send that this server does not implement: refused by name unless harmless.
REFUSED: dict[str, tuple[Any, str]] = {
    "rank_fields": (None, "Cohere v1's structured documents are not supported: send text documents"),
    "max_chunks_per_doc": (None, "documents are truncated, never chunked: use max_tokens_per_doc"),
    "raw_scores": (False, "only p(yes) scores are served"),
    "return_text": (False, "TEI's shape is not served: use 'return_documents'"),
    "texts": (None, "TEI's request shape is not served: send 'documents'"),
    "queries": (None, "vLLM's 'queries'/'documents' score shape is not served: send 'text_1' and 'text_2'"),
    "data_1": (None, "vLLM's 'data_1'/'data_2' score shape is not served: send 'text_1' and 'text_2'"),
    "data_2": (None, "vLLM's 'data_1'/'data_2' score shape is not served: send 'text_1' and 'text_2'"),
    "mm_processor_kwargs": (None, "text only"),
    "softmax": (None, "scores are always p(yes)"),
    "activation": (None, "scores are always p(yes): see 'use_activation'"),
}
HARMLESS = {"use_activation": True, "priority": 0}


def unread_field(body: dict[str, Any], kind: str) -> tuple[str, str] | None:
    """The first field of `body` this server would not honour, with why; None when all are honoured."""
    for key, value in body.items():
        if key in HARMLESS and value is not None and value != HARMLESS[key]:
            return key, f"'{key}' can only be {str(HARMLESS[key]).lower()} here: {READ[kind][key]}"
        if key in REFUSED and value != REFUSED[key][0]:
            return key, f"'{key}' is not supported: {REFUSED[key][1]}"
        if key not in READ[kind] and key not in REFUSED:
            return key, f"'{key}' is not a field of this route; it reads {', '.join(sorted(READ[kind]))}"
    return None
