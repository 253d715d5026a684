"""The reference scorer: the original causal LM, p(yes) from the yes/no logits at the last position.

It never computes the vocabulary-wide logits: it runs the decoder, takes the final hidden state of the
last real token, and multiplies it by the two lm_head rows only. This is the independent path every
artifact is compared against.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .contract import Contract, load_tokenizer
from .errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-Reranker-0.6B"


def check_local_model(model: str) -> None:
    """A local folder must exist and hold a Qwen3 causal LM config; hub ids are checked at load."""
    path = Path(model)
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if not looks_local:
        return
    if not path.is_dir():
        raise ModelError(f"model folder '{model}' does not exist")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"'{model}' has no config.json: not a Hugging Face model folder")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") != "qwen3":
        raise ModelError(f"'{model}' is a {cfg.get('model_type')!r} model, not a Qwen3 reranker")
    if "Qwen3ForCausalLM" not in (cfg.get("architectures") or ["Qwen3ForCausalLM"]):
        raise ModelError(
            f"'{model}' is {cfg.get('architectures')}, not the original Qwen3ForCausalLM reranker "
            "(pass the source model, not an exported artifact)"
        )


def load_causal_lm(model: str, revision: str | None = None) -> Any:
    """Load the causal LM in fp32 on CPU; an unreachable hub id is a one-line ModelError."""
    import torch
    from transformers import AutoModelForCausalLM

    check_local_model(model)
    try:
        lm = AutoModelForCausalLM.from_pretrained(model, revision=revision, dtype=torch.float32)
    except OSError as exc:
        raise ModelError(
            f"cannot load model '{model}' (offline and not in the local cache?): pass a local folder "
            f"with --model /path/to/{model.rstrip('/').split('/')[-1]}"
        ) from exc
    if getattr(lm.config, "model_type", None) != "qwen3":
        raise ModelError(f"'{model}' is a {lm.config.model_type!r} model, not a Qwen3 reranker")
    return lm.eval()


class SourceModel:
    """The loaded source checkpoint (fp32 causal LM + tokenizer), shared by every exporter."""

    def __init__(self, model: str = DEFAULT_MODEL, revision: str | None = None) -> None:
        self.model_id = model
        self.revision = revision
        self.lm = load_causal_lm(model, revision)
        self.tokenizer = load_tokenizer(model, revision)
        self.contract = Contract(self.tokenizer)

    def head_rows(self) -> tuple[Any, Any]:
        """The fp32 lm_head rows for yes and no (tied to the embedding in Qwen3-Reranker)."""
        weight = self.lm.get_output_embeddings().weight
        return weight[self.contract.yes_id].float(), weight[self.contract.no_id].float()


class ReferenceBackend:
    """Backend over the causal LM: logit_yes - logit_no at each row's last real token."""

    name = "reference"

    def __init__(self, source: SourceModel) -> None:
        self.source = source

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        ids = torch.as_tensor(input_ids)
        mask = torch.as_tensor(attention_mask)
        with torch.inference_mode():
            hidden = self.source.lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
            # Last real token per row: works for left padding, right padding and no padding.
            positions = torch.arange(mask.shape[1])
            last = (positions * mask).argmax(dim=1)
            h = hidden[torch.arange(ids.shape[0]), last].float()
            yes, no = self.source.head_rows()
            return ((h @ yes) - (h @ no)).numpy()
