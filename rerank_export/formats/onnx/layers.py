"""The last decoder layer as the gqa graphs trace it: run on each row's last real token only.

The score reads one position, so the last layer's attention output is cut to each row's last real token
before o_proj: o_proj, the residual Adds, the MLP and the final norm run on one token per row instead of
every token (2.6% of a pass's MatMul work on the 0.6B shape; onnx-int8 2-3% faster per pair). Keys and
values, and so the presents, still cover every position; the layer's modules are Qwen3's own, called in
the same order.

(Folding the residual Adds into SkipSimplifiedLayerNormalization was tried too: onnxruntime 1.32's CPU
kernel for it took as long as the Add and SimplifiedLayerNormalization it replaced, so it was not kept.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class LastToken:
    """Each row's last real token (a (B,) index), set by the scorer before the decoder runs."""

    index: Any = None

    def take(self, hidden: Any) -> Any:
        """(B, L, D) -> (B, 1, D)."""
        import torch

        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, self.index].unsqueeze(1)


def _cut_forward(layer: Any, last: LastToken, hidden_states: Any, attention_mask: Any = None,
                 position_embeddings: Any = None, **kwargs: Any) -> Any:
    """Qwen3DecoderLayer.forward, its output at each row's last token only (o_proj's pre-hook cuts the
    attention output; the residual is cut here)."""
    attended, _ = layer.self_attn(hidden_states=layer.input_layernorm(hidden_states),
                                  attention_mask=attention_mask, position_embeddings=position_embeddings,
                                  **kwargs)
    hidden = last.take(hidden_states) + attended
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


@contextlib.contextmanager
def last_layer_cut(decoder: Any, last: LastToken) -> Iterator[None]:
    """Trace `decoder` so that it returns (B, 1, D): each row's last real token; its last layer's own
    forward comes back after."""
    layer = decoder.layers[decoder.config.num_hidden_layers - 1]
    hook = layer.self_attn.o_proj.register_forward_pre_hook(lambda _module, args: (last.take(args[0]),))

    def forward(hidden_states: Any, **kwargs: Any) -> Any:
        return _cut_forward(layer, last, hidden_states, **kwargs)

    layer.forward = forward  # an instance attribute: this layer only
    try:
        yield
    finally:
        del layer.forward
        hook.remove()
