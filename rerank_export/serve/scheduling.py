"""The model's time shared between requests: a request's pairs are scored a chunk per turn, first come first
served, and stop once the request is cancelled; freed memory goes back to the OS after a large one."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import Cancelled
from .requests import Limits, Options
from .reranker import ServedReranker
from .tokens import bound_texts, encode_pairs

# Between chunks a request checks for a gone client or its timeout, and waiting requests take their turn: a
# one-document request waits for at most one chunk of another's, however many documents that one has.
CHUNK_PAIRS = 16
CHUNK_TOKENS = 4096  # a chunk of long documents ends earlier (a pair longer than this is a chunk of its own)
# After a request of this many tokens the freed activations go back to the OS (gc, then glibc's malloc_trim):
# without it one 8,192-token document leaves the process at its peak RSS for good.
RELEASE_AFTER_TOKENS = 2048


class Turns:
    """The model, one chunk at a time, first come first served.

    A request that has scored a chunk queues again behind the requests already waiting, so requests take
    turns chunk by chunk and a one-document request waits for one chunk of a large one, not for all of it.
    (The Reranker's threading.Lock promises no order: the thread that releases it usually takes it again.)
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._queue: deque[threading.Event] = deque()
        self._busy = False

    @property
    def waiting(self) -> int:
        """How many requests wait for their turn (for tests and logs)."""
        with self._guard:
            return len(self._queue)

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._guard:
            mine = threading.Event() if self._busy else None
            if mine is not None:
                self._queue.append(mine)
            self._busy = True
        if mine is not None:
            mine.wait()  # set by the holder's release: the turn is handed over, never raced for
        try:
            yield
        finally:
            with self._guard:
                if self._queue:
                    self._queue.popleft().set()
                else:
                    self._busy = False


def chunk_bounds(counts: list[int], max_pairs: int = CHUNK_PAIRS, max_tokens: int = CHUNK_TOKENS) -> list[range]:
    """Consecutive index ranges of at most max_pairs pairs and max_tokens tokens (at least one pair each)."""
    chunks, start, tokens = [], 0, 0
    for i, count in enumerate(counts):
        if i > start and (i - start >= max_pairs or tokens + count > max_tokens):
            chunks.append(range(start, i))
            start, tokens = i, 0
        tokens += count
    return [*chunks, range(start, len(counts))] if counts else chunks


def release_memory(reranker: ServedReranker) -> None:
    """Hand freed memory back to the OS: the backend's cache (onnxruntime's arena), Python's cycles, then
    glibc's free heap pages (no-op elsewhere)."""
    reranker.release_memory()
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def score_chunks(reranker: ServedReranker, pairs: list[tuple[str, str]], options: Options, limits: Limits,
                 cancel: threading.Event, turns: Turns | None = None) -> tuple[list[float], int, list[int]]:
    """Scores, tokens and truncated indices, a chunk per turn, stopping once `cancel` is set.

    Each pair is tokenized once (encode_pairs) and scored from those ids. Each pair's score is its own (the
    runtime pads and masks), so cutting a request into chunks, or taking turns with other requests between
    them, changes no score.
    """
    pairs, cut = bound_texts(pairs, reranker.max_length, limits)
    encoded = encode_pairs(reranker, pairs, options, limits.max_request_tokens, cancel)
    turns = turns or Turns()
    scores: list[float] = []
    tokens, truncated = 0, set(cut)
    for chunk in chunk_bounds([len(e.input_ids) for e in encoded]):
        with turns.turn():
            if cancel.is_set():  # checked with the turn in hand: a request cancelled while queued scores nothing
                raise Cancelled
            scored = reranker.score_encoded(encoded[chunk.start:chunk.stop])
        scores, tokens = scores + scored.scores, tokens + scored.total_tokens
        truncated.update(chunk.start + i for i, t in enumerate(scored.truncated) if t)
    if tokens >= RELEASE_AFTER_TOKENS:
        release_memory(reranker)
    return scores, tokens, sorted(truncated)
