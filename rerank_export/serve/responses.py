"""Each route's answer, built in a worker thread from a checked request: vLLM/Cohere/Jina rerank, TEI's bare
list, vLLM's score list, and TEI's /info."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from ..manifest import TOOLKIT_VERSION
from .errors import RequestError
from .requests import Limits, Options, RerankRequest, ScoreRequest, TeiRequest
from .reranker import ServedReranker
from .scheduling import CHUNK_PAIRS, CHUNK_TOKENS, Turns, score_chunks

TEI_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # TEI's names; int8/int4 stay ours
SCORE_LABEL = "relevance"  # the one label of the artifacts' classifier head (formats/baseline.py)


def _usage(tokens: int, truncated: list[int]) -> dict[str, Any]:
    # vLLM's UsageInfo requires prompt_tokens; a reranker generates nothing, so total = prompt
    return {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_documents": truncated}


def rerank_response(reranker: ServedReranker, req: RerankRequest, model: str, limits: Limits, turns: Turns,
                    cancel: threading.Event) -> dict[str, Any]:
    scores, tokens, truncated = score_chunks(reranker, [(req.query, d) for d in req.documents],
                                             req.options, limits, cancel, turns)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:req.top_n]  # stable: ties keep input order
    # vLLM's RerankResult requires `document`: without return_documents its text is null, not the key absent
    results = [{"index": i, "relevance_score": scores[i],
                "document": {"text": req.documents[i] if req.return_documents else None}} for i in order]
    return {"id": _answer_id("rerank", req.options), "model": model, "results": results,
            "usage": _usage(tokens, truncated)}


def _answer_id(kind: str, options: Options) -> str:
    return f"{kind}-{options.request_id if options.request_id is not None else uuid.uuid4().hex}"


def tei_response(reranker: ServedReranker, req: TeiRequest, limits: Limits, turns: Turns,
                 cancel: threading.Event) -> list[dict[str, Any]]:
    """TEI's answer: a bare list of {index, score[, text]}, best first."""
    scores, _, truncated = score_chunks(reranker, [(req.query, t) for t in req.texts], Options(), limits, cancel,
                                        turns)
    if truncated and not req.truncate:  # TEI refuses over-long input unless asked to truncate
        raise RequestError(413, f"texts[{truncated[0]}] is longer than this server's max length of "
                                f"{reranker.max_length} tokens; send 'truncate': true to cut it", param="texts")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [{"index": i, "score": scores[i], **({"text": req.texts[i]} if req.return_text else {})} for i in order]


def tei_info(reranker: ServedReranker, model: str, limits: Limits, threads: int) -> dict[str, Any]:
    """TEI's GET /info (tei-client reads it before its first rerank): what this server is and its bounds."""
    manifest = reranker.manifest
    return {"model_id": model, "model_sha": manifest.source_revision,
            "model_dtype": TEI_DTYPES.get(manifest.dtype, manifest.dtype),
            "model_type": {"reranker": {"id2label": {"0": SCORE_LABEL}, "label2id": {SCORE_LABEL: 0}}},
            "max_concurrent_requests": threads,  # requests worked on at once; more wait, none is refused
            "max_input_length": reranker.max_length, "max_batch_tokens": CHUNK_TOKENS,
            "max_batch_requests": CHUNK_PAIRS, "max_client_batch_size": limits.max_documents,
            "auto_truncate": False,  # TEI's /rerank here cuts a text only when asked ('truncate': true)
            "tokenization_workers": threads, "version": TOOLKIT_VERSION, "sha": None, "docker_label": None}


def score_response(reranker: ServedReranker, req: ScoreRequest, model: str, limits: Limits, turns: Turns,
                   cancel: threading.Event) -> dict[str, Any]:
    scores, tokens, truncated = score_chunks(reranker, req.pairs, req.options, limits, cancel, turns)
    return {"id": _answer_id("score", req.options), "object": "list", "model": model,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": _usage(tokens, truncated)}
