"""README.md for an artifact folder: what it is and how to load it, in the layout model hubs render.

Written when the gate records a verdict, so a folder pushed to a hub or copied to a server carries its
source, format, bytes, parity table and plot, prompt contract and load commands. vLLM in particular scores
silently wrong without `--chat-template`, and a card is where a user who never ran rerank-export looks.
"""

from __future__ import annotations

from pathlib import Path

from .contract import BODY_TEMPLATE, DEFAULT_INSTRUCTION, PREFIX, SUFFIX
from .formats import get_format
from .formats.spec import FormatSpec
from .manifest import Manifest, write_atomic

CARD = "README.md"


def render_card(manifest: Manifest, parity_md: str | None) -> str:
    """The whole README.md text of an artifact folder (commands run inside the folder)."""
    spec = get_format(manifest.format)
    size = sum(f["bytes"] for f in manifest.files.values())
    verdict = (manifest.parity or {}).get("verdict", "unchecked")
    lines = [*_front_matter(manifest, spec.family, spec.library),
             f"# {manifest.source_model} as `{manifest.format}`", "",
             f"A `{spec.family}` artifact of {_source_link(manifest.source_model)}"
             + (f" at revision `{manifest.source_revision}`" if manifest.source_revision else "")
             + f", weights in {manifest.dtype}, {size:,} bytes in {len(manifest.files)} files, made by "
             f"rerank-export {manifest.toolkit_version}. Parity against the source model: **{verdict}**.", "",
             *_contract_lines(manifest), *_load_lines(spec, manifest.max_length), *_parity_lines(parity_md)]
    return "\n".join(lines) + "\n"


def _is_hub_id(model: str) -> bool:
    """'Qwen/Qwen3-Reranker-0.6B', not a local folder such as '/models/x' or 'artifacts/tiny-model'."""
    return model.count("/") == 1 and not model.startswith((".", "/", "~")) and not Path(model).exists()


def _source_link(model: str) -> str:
    return f"[{model}](https://huggingface.co/{model})" if _is_hub_id(model) else f"`{model}`"


def _front_matter(manifest: Manifest, family: str, library: str) -> list[str]:
    tags = ["reranker", "cross-encoder", "qwen3", "rerank-export", family, manifest.dtype]
    base = [f"base_model: {manifest.source_model}"] if _is_hub_id(manifest.source_model) else []
    return ["---", *base, f"library_name: {library}", "pipeline_tag: text-ranking", "tags:",
            *[f"- {t}" for t in tags], "---", ""]


def _contract_lines(manifest: Manifest) -> list[str]:
    return ["## How it scores", "",
            (f"One prompt per (instruction, query, document) in the model card's template "
             f"(`{manifest.template}`); the score is p(yes) = sigmoid(logit), the single logit being "
             f"logit_yes - logit_no at the last position (token ids yes {manifest.yes_id}, no {manifest.no_id}). "
             f"Documents longer than {manifest.max_length:,} tokens in all are cut; the template's end never is."),
            "",
            "```text", PREFIX + BODY_TEMPLATE + SUFFIX,
            "```", "", f"Default instruction: \"{DEFAULT_INSTRUCTION}\".", ""]


EXAMPLE = ("What is the capital of China?", "Beijing is the capital.")
# Every Python snippet below defines score(pairs) -> p(yes) per (query, document) pair and calls it once;
# tests/e2e/test_cards.py runs each one as written, then calls its score() on a mixed-length batch.
SCORE_NOTE = "Each Python snippet defines `score(pairs)`: p(yes) for each (query, document) pair."


def _load_lines(spec: FormatSpec, max_length: int) -> list[str]:
    lines = ["## Load it", "", SCORE_NOTE, "",
             "With rerank-export (checks the files against their sha256 and the parity verdict):", "", "```python", "import rerank_export", "",
             "reranker = rerank_export.load(\".\")", "score = reranker.score",
             f"print(score([{EXAMPLE!r}]))", "```", ""]
    return lines + (_transformers_lines(spec) if spec.vllm_loadable else _onnx_lines(max_length))


def _transformers_lines(spec: FormatSpec) -> list[str]:
    quantization = f" --quantization {spec.vllm_quantization}" if spec.vllm_quantization else ""
    if spec.vllm_quantization:  # transformers reads AWQ checkpoints only through gptqmodel, which we do not test
        others = [("transformers and sentence-transformers load this folder only with `gptqmodel` installed "
                   "(not tested by rerank-export)."), ""]
    else:
        others = [("With sentence-transformers (>= 5.4; the tokenizer's chat template renders the prompt, any "
                   "padding side):"), "", "```python", "from sentence_transformers import CrossEncoder", "",
                  "score = CrossEncoder(\".\").predict", f"print(score([{EXAMPLE!r}]))", "```", ""]
    return [*others,
            ("With vLLM, **`--chat-template` is required**: without it vLLM joins query and document "
             "without the prompt and every score is silently wrong. `rerank-export serve . --engine vllm "
             "--print-command` prints the full command sized for your device."), "", "```bash",
            f"vllm serve . --runner pooling --chat-template ./chat_template.jinja{quantization}", "```", ""]


def _onnx_lines(max_length: int) -> list[str]:
    return [("With onnxruntime alone: inputs `input_ids` and `attention_mask` (int64, batch x length, **any "
             "padding**: left as this folder's tokenizer pads, or right; the graph moves each row's real tokens "
             "to its front), output `logit` (one per row, float32). A pair scores the same alone and in any "
             "batch. The same steps work from any language onnxruntime serves, with this folder's `tokenizer.json` "
             "(tested from Node with onnxruntime-node and @huggingface/tokenizers). "
             f"Cut documents so that a prompt stays within {max_length:,} tokens."), "",
            "```python", "import numpy as np", "import onnxruntime as ort", "from transformers import AutoTokenizer", "",
            f"PREFIX = {PREFIX!r}", f"BODY = {BODY_TEMPLATE!r}", f"SUFFIX = {SUFFIX!r}", "",
            "tokenizer = AutoTokenizer.from_pretrained(\".\")",
            "session = ort.InferenceSession(\"model.onnx\")", "", "",
            f"def score(pairs, instruction={DEFAULT_INSTRUCTION!r}):",
            "    texts = [PREFIX + BODY.format(instruction=instruction, query=q, document=d) + SUFFIX for q, d in pairs]",
            "    batch = tokenizer(texts, padding=True, return_tensors=\"np\")",
            "    feed = {name: batch[name].astype(np.int64) for name in (\"input_ids\", \"attention_mask\")}",
            "    return 1 / (1 + np.exp(-session.run([\"logit\"], feed)[0]))", "", "",
            f"print(score([{EXAMPLE!r}]))", "```", ""]


def _parity_lines(parity_md: str | None) -> list[str]:
    if not parity_md:
        return ["## Parity", "", "Not checked yet: run `rerank-export parity` on this folder's root.", ""]
    body = [ln for ln in parity_md.splitlines() if not ln.startswith("# ")]
    return ["## Parity", "", *body, "", "![scores against the reference](parity.png)", ""]


def write_card(folder: Path, manifest: Manifest) -> None:
    """Write README.md from the manifest and the gate's parity.md (when there is one)."""
    parity = folder / "parity.md"
    text = render_card(manifest, parity.read_text() if parity.is_file() else None)
    write_atomic(folder / CARD, text)
