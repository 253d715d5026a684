"""A bounded, seeded fuzz corpus against the real server: no body, however odd, gets a 5xx or stops it.

Generated here rather than with hypothesis: the corpus is fixed by its seed, so a failure names the exact
body (its index and bytes) and replays without a database of examples.
"""

from __future__ import annotations

import json
import random

import httpx
import pytest

from .test_serve import ServerThread

pytestmark = pytest.mark.needs_fixtures

SEED = 12
CASES = 300
MAX_DOCUMENTS = 8
ROUTES = ["/v1/rerank", "/rerank", "/score", "/v1/score"]
VALID = {"/v1/rerank": {"query": "capital?", "documents": ["Paris", "Rome"], "top_n": 1},
         "/rerank": {"query": "capital?", "documents": [{"text": "Paris"}], "instruction": "Find capitals"},
         "/score": {"pairs": [["capital?", "Paris"]]},
         "/v1/score": {"text_1": "capital?", "text_2": ["Paris", "Rome"]}}
FIELDS = ["query", "documents", "top_n", "return_documents", "instruction", "model", "pairs", "text_1", "text_2"]
ODD_CHARS = ["\ud800", "\udfff", "\x00", "\uffff", "\ufeff", "\U0001F600", "\u202e", "é", "\n", '"', "\\", " "]


class Raw(str):
    """JSON text emitted as is: numbers Python's json would refuse to write or read."""


def odd_string(rng: random.Random) -> str:
    return "".join(rng.choice(ODD_CHARS) if rng.random() < 0.5 else chr(rng.randrange(32, 0x3000))
                   for _ in range(rng.randrange(0, 12)))


def odd_number(rng: random.Random) -> Raw:
    return Raw(rng.choice([str(rng.randrange(-5, 50)), "-" * rng.randrange(2) + "9" * rng.randrange(1, 6000),
                           "1e999", "-1e999", "NaN", "Infinity", "0.5", "1E2", "-0", "1.0"]))


def odd_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return odd_string(rng)
    if kind == 1:
        return odd_number(rng)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return Raw("[" * (d := rng.choice([1, 20, 900, 5000])) + "]" * d)
    if kind == 4:
        return {"text": odd_string(rng)} if rng.random() < 0.5 else [odd_string(rng)]
    if kind in (5, 6):
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(0, MAX_DOCUMENTS + 3))]
    return {rng.choice(FIELDS + ["content", "type"]): odd_value(rng, depth + 1) for _ in range(rng.randrange(3))}


def dump(value: object) -> str:
    """JSON text with Raw passed through and strings ASCII-escaped (so lone surrogates survive as \\ud800)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    return json.dumps(value)


def mangle(raw: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: cut the body, or drop in a byte that is not UTF-8 or breaks the syntax."""
    at = rng.randrange(len(raw) + 1)
    return raw[:at] if rng.random() < 0.5 else raw[:at] + bytes([rng.choice([0xFF, 0xC3, 0x00, 0x22, 0x5D])]) + raw[at:]


def corpus(seed: int = SEED, count: int = CASES) -> list[tuple[str, bytes]]:
    """(route, body) pairs: valid bodies with fields replaced, added or removed, some damaged byte-wise."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        route = rng.choice(ROUTES)
        body = dict(VALID[rng.choice(ROUTES) if rng.random() < 0.2 else route])
        for _ in range(rng.randrange(1, 3)):
            if rng.random() < 0.2 and body:
                body.pop(rng.choice(list(body)))
            else:
                body[rng.choice(FIELDS)] = odd_value(rng)
        raw = (dump(body) if rng.random() < 0.9 else dump(odd_value(rng))).encode("utf-8", "surrogatepass")
        cases.append((route, mangle(raw, rng) if rng.random() < 0.15 else raw))
    return cases


@pytest.fixture(scope="module")
def fuzz_url(verified_artifacts):
    import rerank_export
    from rerank_export.serve import Limits, create_app

    reranker = rerank_export.load(verified_artifacts, device="cpu", max_length=256)
    with ServerThread(create_app(reranker, "tiny-reranker", limits=Limits(MAX_DOCUMENTS, 2**20))) as base:
        yield base


def test_the_corpus_reaches_the_cases_of_issue_12():
    bodies = b"\n".join(body for _, body in corpus())
    for case in [b"[" * 5000, b"9" * 4301, b"\\ud800", b"\\udfff", b"NaN", b"1e999"]:
        assert case in bodies, case


def test_no_body_gets_a_5xx_and_the_server_keeps_serving(fuzz_url):
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=fuzz_url, timeout=60, headers={"Content-Type": "application/json"}) as client:
        for i, (route, body) in enumerate(corpus()):
            r = client.post(route, content=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, f"case {i}: POST {route} {body[:300]!r} -> {r.status_code} {r.text[:300]}"
            if r.status_code >= 400:
                error = r.json()["error"]
                assert error["code"] == r.status_code and error["message"], f"case {i}: {r.text[:300]}"
        assert client.get("/health").status_code == 200
        ok = client.post("/v1/rerank", json={"query": "capital?", "documents": ["Paris"]})
        assert ok.status_code == 200 and ok.json()["results"][0]["index"] == 0, ok.text
    assert statuses.get(200, 0) > 0 and sum(n for s, n in statuses.items() if s >= 400) > CASES // 2, statuses
