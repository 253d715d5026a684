"""The baseline artifact: a plain 16-bit Qwen3ForSequenceClassification with a one-row yes-minus-no head.

AutoModelForSequenceClassification (and so sentence-transformers' CrossEncoder and vLLM) load it with
no overrides.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import save_tokenizer, write_rope_theta
from ..manifest import Manifest
from ..scoring import OutOfMemory
from .common import write_manifest
from .spec import FLOAT_DTYPES

log = logging.getLogger(__name__)

TORCH_DTYPES = FLOAT_DTYPES


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, TORCH_DTYPES[name])


def to_sequence_classifier(source: Any, dtype: str = "fp32") -> Any:
    """A Qwen3ForSequenceClassification whose single logit is logit_yes - logit_no of the source.

    The head row is computed in fp32 before any cast. The decoder is deep-copied so the source stays
    untouched for the next exporter; the class is built on the meta device only for its shell, and
    both submodules are then replaced by real ones (the rotary inv_freq buffer comes from the source).
    """
    import torch
    from transformers import Qwen3ForSequenceClassification

    config = copy.deepcopy(source.lm.config)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "relevance"}, {"relevance": 0}
    config.architectures = ["Qwen3ForSequenceClassification"]
    # Without it batches > 1 fail and right padding scores the wrong token.
    config.pad_token_id = source.contract.pad_id
    with torch.device("meta"):
        model = Qwen3ForSequenceClassification(config)
    model.model = copy.deepcopy(source.lm.model)
    yes, no = source.head_rows()
    head = torch.nn.Linear(config.hidden_size, 1, bias=False)
    with torch.no_grad():
        head.weight.copy_((yes - no).unsqueeze(0))
    expected = (1, config.hidden_size)
    if tuple(head.weight.shape) != expected:
        raise ValueError(f"score head has shape {tuple(head.weight.shape)}, expected {expected}")
    model.score = head
    model = model.to(torch_dtype(dtype)).eval()
    # Module.to() casts buffers too; RoPE frequencies stay fp32 as from_pretrained would leave them.
    rotary = model.model.rotary_emb
    rotary.inv_freq = source.lm.model.rotary_emb.inv_freq.clone()
    if hasattr(rotary, "original_inv_freq"):
        rotary.original_inv_freq = rotary.inv_freq
    return model


def export(source: Any, folder: Path, spec: Any, options: Any) -> Manifest:
    """Write config, safetensors, tokenizer and manifest into `folder` (the export stage's temp folder)."""
    model = to_sequence_classifier(source, spec.dtype)
    log.info("writing %s (%s)", spec.name, spec.dtype)
    model.save_pretrained(str(folder))
    save_tokenizer(source.tokenizer, folder)
    write_rope_theta(folder / "config.json", 1_000_000.0)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return write_manifest(source, folder, spec.name, spec.dtype, weight_bytes)


class TorchBackend:
    """Scores with a Hugging Face sequence-classification model (the baseline's runtime)."""

    def __init__(self, model: Any, name: str = "torch") -> None:
        self.model = model
        self.name = name
        self.device = next(model.parameters()).device

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        ids = torch.as_tensor(input_ids, device=self.device)
        mask = torch.as_tensor(attention_mask, device=self.device)
        try:
            with torch.inference_mode():
                out = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(str(exc)) from exc
        return out[:, 0].float().cpu().numpy()


def load(folder: Path, manifest: Manifest, device: str = "cpu") -> TorchBackend:
    from transformers import AutoModelForSequenceClassification

    dtype = torch_dtype(manifest.dtype)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=dtype).to(device).eval()
    return TorchBackend(model, manifest.format)
