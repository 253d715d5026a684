"""An ONNX artifact run the way its card tells a user to: a plain onnxruntime session, the folder's own
tokenizer on the rendered prompt, a padded batch. No re-padding, no prefix split, no rerank-export code
between the user and the graph, so the gate (parity.plain_check) sees what a C#, Java, Node or Rust user
sees."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...contract import SUFFIX
from .graph import INPUTS, MODEL_FILE, OUTPUT, require

SIDES = ("left", "right")  # Qwen's tokenizer pads left; most hand-written batching pads right


class PlainScorer:
    """Logits from model.onnx in a default InferenceSession, ids from the folder's tokenizer."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # quiet about the optional prefix inputs; nothing else differs
        self.session = ort.InferenceSession(str(Path(folder) / MODEL_FILE), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.suffix = self.tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]

    def encode(self, prompt: str, max_length: int) -> list[int]:
        """The prompt's ids; past `max_length` the document is cut from its end and the template's end kept,
        as the card says."""
        ids = list(self.tokenizer(prompt)["input_ids"])
        if len(ids) <= max_length:
            return ids
        return ids[:max_length - len(self.suffix)] + list(self.suffix)

    def logits(self, seqs: Sequence[Sequence[int]], side: str) -> np.ndarray:
        """One logit per sequence, from one batch padded on `side` by the tokenizer."""
        batch: Any = self.tokenizer.pad({"input_ids": [list(s) for s in seqs]}, padding=True,
                                        padding_side=side, return_tensors="np")
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in INPUTS}
        return np.asarray(self.session.run([OUTPUT], feed)[0], dtype=np.float64).reshape(-1)
