"""The embedded default: a deterministic random-weight Qwen3 reranker that needs no download.

Same architecture as Qwen3-Reranker (tied embeddings, GQA, q/k norms), small sizes; the hidden and
intermediate sizes are multiples of 128 so 4-bit group size 128 applies. Without a tokenizer folder it
trains a small byte-level BPE tokenizer on built-in text, with the Qwen special tokens and single-token
"yes" and "no", and writes it in the same vocab.json + merges.txt layout as the real one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .contract import NO_TOKEN, PREFIX, SUFFIX, YES_TOKEN, Contract, load_tokenizer, write_rope_theta
from .evalsets import builtin_eval_set
from .manifest import PARTIAL_MARKER, atomic_dir, folder_files

log = logging.getLogger(__name__)

# Qwen2/Qwen3's pre-tokenizer split, so the small tokenizer segments text the way the real one does.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<think>", False),
    ("</think>", False),
]
SMALL_VOCAB = 2048
# Written into every tiny model folder: how `tiny --force` knows a folder is one it may replace.
TINY_MARKER = "rerank-export-tiny.json"
TINY_KIND = "rerank-export tiny model"
# What markers written before the marker listed its files stand for: every name build_tiny wrote then.
LEGACY_TINY_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json", "chat_template.jinja", "vocab.json", "merges.txt",
                     "special_tokens_map.json", "added_tokens.json")


@dataclass(frozen=True)
class TinySizes:
    """Small enough for tests on 2 cores; multiples of 128 where AWQ groups need them."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 32768
    # Larger than Qwen's 0.02 so random scores spread over (0, 1) and rankings mean something.
    initializer_range: float = 0.08


def build_small_tokenizer(out: Path) -> None:
    """Train a byte-level BPE on built-in text and save it as a Qwen2Tokenizer folder."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=SMALL_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.model.save(str(out))
    vocab_size = tok.get_vocab_size()
    added = {
        str(vocab_size + i): {
            "content": text, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
        for i, (text, special) in enumerate(SPECIAL_TOKENS)
    }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_bos_token": False,
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "split_special_tokens": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


def _corpus() -> list[str]:
    texts = [PREFIX, SUFFIX] + [f"{YES_TOKEN} {NO_TOKEN} {YES_TOKEN}\n{NO_TOKEN}\n"] * 200
    for group in builtin_eval_set().groups:
        texts.append(group.query)
        texts.extend(group.documents)
    return texts


def build_tiny(out: str | Path, tokenizer_dir: str | Path | None = None, seed: int = 0,
               sizes: TinySizes = TinySizes(), replace: bool = False) -> Path:
    """Write a tiny random-weight Qwen3ForCausalLM reranker (bf16, like the real checkpoint) to `out`.

    `out` must be new or empty; an earlier tiny model of ours (TINY_MARKER) is replaced only with `replace`,
    and only when it holds nothing but the files its marker lists.
    """
    out = Path(out)
    tok = None if tokenizer_dir is None else load_tokenizer(tokenizer_dir)  # a bad folder fails before any work
    with atomic_dir(out, replace=replace, owned=tiny_files, kind="tiny model written by rerank-export") as tmp:
        if tok is None:
            build_small_tokenizer(tmp)
            tok = load_tokenizer(tmp)
        else:
            tok.save_pretrained(str(tmp))
        _save_model(tmp, tok, seed, sizes)
        written = [n for n in folder_files(tmp) if n != PARTIAL_MARKER]
        marker = {"kind": TINY_KIND, "seed": seed, **sizes.__dict__, "files": written}
        (tmp / TINY_MARKER).write_text(json.dumps(marker, indent=2))
    log.info("wrote tiny Qwen3 reranker to %s", out)
    return out


def tiny_files(folder: Path) -> set[str] | None:
    """The files of a tiny model build_tiny wrote at `folder` (its marker lists them), or None when the
    folder has no marker of ours."""
    try:
        info = json.loads((folder / TINY_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("kind") != TINY_KIND:
        return None
    files = info.get("files", LEGACY_TINY_FILES)
    if not isinstance(files, list | tuple) or not all(isinstance(f, str) for f in files):
        return None
    return {*files, TINY_MARKER}


def _save_model(out: Path, tok, seed: int, sizes: TinySizes) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    contract = Contract(tok)
    _ = (contract.yes_id, contract.no_id)  # fail early if yes/no are not single tokens
    config = Qwen3Config(
        vocab_size=len(tok),
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tok.pad_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        **sizes.__dict__,
    )
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out))
    write_rope_theta(out / "config.json", 1_000_000.0)
