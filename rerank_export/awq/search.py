"""The AWQ search (Lin et al., 2023): per decoder block, per-input-channel scales and per-group clips.

Follows the paper and its reference implementation (llm-awq `auto_scale_block` / `auto_clip_block`):
the block's inputs come from the unquantised model; for each group of linears sharing an input, the
scale s = mean|x|^alpha is chosen on a grid of alpha to minimise the error of the group's `inspect`
module with fake-quantised weights; then each linear's clipping range is searched per group on its scaled
weights. Nothing here changes the model: candidate weights are passed with torch.func.functional_call,
and the results are plain data (AWQResult) that apply.py folds in and that is saved beside the artifact.
The forward passes run in SearchSettings.search_dtype (bf16 by default), the quantisation arithmetic in fp32.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .pack import fake_quantize, fake_quantize_groups
from .settings import SearchSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScaleGroup:
    """Linears that share one input, the op whose output is that input, and the module to inspect."""

    prev: str  # 1/s is folded into this op (a norm's weight or a linear's output rows)
    linears: tuple[str, ...]  # their input columns are multiplied by s
    inspect: str  # the module whose output error scores a candidate scale


# Qwen3 decoder block, as in AutoAWQ's qwen3 model table. q_norm/k_norm act on q/k's outputs, so
# scaling q/k/v's input channels (folded into input_layernorm) stays exact.
QWEN3_GROUPS = (
    ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),
    ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),  # only without GQA
    ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
    ScaleGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
)
# Clipping q/k distorts attention scores more than it saves (AutoAWQ's avoid_clipping list).
NO_CLIP_SUFFIXES = ("q_proj", "k_proj")


@dataclass
class ScaleResult:
    block: int
    prev: str
    linears: tuple[str, ...]
    alpha: float
    loss: float  # output error at the chosen alpha
    loss_rtn: float  # output error with s = 1 (alpha 0)
    scales: torch.Tensor  # [in] fp32


@dataclass
class ClipResult:
    block: int
    linear: str
    max_val: torch.Tensor  # [out, in/group] fp32, applied to the *scaled* weight


@dataclass
class AWQResult:
    """Everything the search decided, as data: saved beside the artifact, applied by apply.py."""

    settings: SearchSettings
    scales: list[ScaleResult] = field(default_factory=list)
    clips: list[ClipResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        alphas = [r.alpha for r in self.scales]
        return {"scale_groups": len(self.scales), "clipped_linears": len(self.clips),
                "mean_alpha": float(sum(alphas) / len(alphas)) if alphas else None}

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"scale.{i}": r.scales.contiguous() for i, r in enumerate(self.scales)}
        tensors.update({f"clip.{i}": r.max_val.contiguous() for i, r in enumerate(self.clips)})
        table = {"settings": asdict(self.settings),
                 "scales": [{k: v for k, v in asdict(r).items() if k != "scales"} for r in self.scales],
                 "clips": [{"block": r.block, "linear": r.linear} for r in self.clips]}
        save_file(tensors, str(path), metadata={"awq_search": json.dumps(table)})

    @classmethod
    def load(cls, path: str | Path) -> AWQResult:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            table = json.loads(f.metadata()["awq_search"])
            scales = [ScaleResult(**{**r, "linears": tuple(r["linears"])}, scales=f.get_tensor(f"scale.{i}"))
                      for i, r in enumerate(table["scales"])]
            clips = [ClipResult(**r, max_val=f.get_tensor(f"clip.{i}")) for i, r in enumerate(table["clips"])]
        return cls(SearchSettings(**table["settings"]), scales, clips)


@dataclass
class Batch:
    """One calibration batch at a block's input: hidden states, the block kwargs, real-token mask."""

    hidden: torch.Tensor  # [B, L, H]
    kwargs: dict[str, Any]
    mask: torch.Tensor  # [B, L] bool, False on left padding


@dataclass
class Call:
    """A watched module's inputs and output on one batch."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any = None


class _Captured(Exception):
    """Stops the decoder's forward once the first block's inputs are recorded."""


def capture_block_inputs(decoder: nn.Module, sequences: Sequence[Sequence[int]], pad_id: int,
                         batch_tokens: int, dtype: torch.dtype = torch.float32) -> list[Batch]:
    """The first block's inputs (and kwargs: mask, rotary embeddings) for every calibration batch, in `dtype`.

    A forward pre-hook records them and stops the pass there: the later blocks would only be run again.
    """
    from ..contract import pad_left
    from ..scoring import plan_batches

    captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        rest = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values")}
        captured.append((hidden, rest))
        raise _Captured

    batches: list[Batch] = []
    handle = decoder.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for idx in plan_batches([len(s) for s in sequences], batch_tokens):
            ids, mask = pad_left([sequences[i] for i in idx], pad_id)
            ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)
            with contextlib.suppress(_Captured):
                decoder(input_ids=ids_t, attention_mask=mask_t, use_cache=False)
            hidden, kwargs = captured.pop()
            batches.append(Batch(cast_floats(hidden, dtype), cast_floats(kwargs, dtype), mask_t.bool()))
    finally:
        handle.remove()
    return batches


def cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """Floating tensors (also inside tuples, lists and dicts) cast to `dtype`; everything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: cast_floats(v, dtype) for k, v in value.items()}
    return value


def run_block(block: nn.Module, batches: Sequence[Batch], watch: Sequence[str]
              ) -> tuple[list[torch.Tensor], dict[str, list[Call]]]:
    """Run the block on every batch; return its outputs and each watched module's calls."""
    calls: dict[str, list[Call]] = {name: [] for name in watch}
    handles = []
    for name in watch:
        module = block.get_submodule(name)
        handles.append(module.register_forward_pre_hook(
            lambda m, a, k, name=name: calls[name].append(Call(a, k)), with_kwargs=True))
        handles.append(module.register_forward_hook(
            lambda m, a, out, name=name: setattr(calls[name][-1], "output", out)))
    try:
        outputs = [_first(block(b.hidden, **b.kwargs)) for b in batches]
    finally:
        for h in handles:
            h.remove()
    return outputs, calls


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _input(call: Call) -> torch.Tensor:
    return call.args[0] if call.args else next(iter(call.kwargs.values()))


def real_rows(calls: Sequence[Call], batches: Sequence[Batch]) -> torch.Tensor:
    """A linear's inputs at real (non-padding) tokens, as [tokens, in]."""
    return torch.cat([_input(c)[b.mask] for c, b in zip(calls, batches)])


def search_subset(batches: Sequence[Batch], tokens: int) -> list[int]:
    """Indices of the first batches holding at least `tokens` real tokens (whole sequences)."""
    chosen, total = [], 0
    for i, b in enumerate(batches):
        if total >= tokens:
            break
        chosen.append(i)
        total += int(b.mask.sum())
    return chosen


def candidate_scales(x_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = mean|x|^alpha, normalised so max(s) * min(s) = 1 (llm-awq); alpha 0 gives exactly 1."""
    s = x_mean.pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def output_error(module: nn.Module, overrides: dict[str, torch.Tensor], calls: Sequence[Call],
                 masks: Sequence[torch.Tensor]) -> float:
    """Mean squared error of `module` with some weights replaced, over real tokens, vs its recorded output."""
    total, count = 0.0, 0
    for call, mask in zip(calls, masks):
        out = _first(torch.func.functional_call(module, overrides, call.args, call.kwargs, strict=False))
        diff = (out.float() - _first(call.output).float())[mask]
        total += float(diff.square().sum(dtype=torch.float64))
        count += diff.numel()
    return total / max(count, 1)


def _relative(name: str, parent: str) -> str:
    return name[len(parent) + 1:] if name.startswith(parent + ".") else ""


def search_scale(block: nn.Module, work: nn.Module, index: int, group: ScaleGroup, x_mean: torch.Tensor,
                 calls: Sequence[Call], masks: Sequence[torch.Tensor], settings: SearchSettings) -> ScaleResult:
    """The search over alpha for one group; the block itself is never modified.

    Candidates are fake-quantised from `block`'s float weights and scored through `work`, its copy in the
    search dtype (the same module when that is the block's own dtype).
    """
    inspect = work.get_submodule(group.inspect)
    dtype = next(inspect.parameters()).dtype
    weights = {name: block.get_submodule(name).weight.float() for name in group.linears}
    keys = {name: ".".join(filter(None, [_relative(name, group.inspect), "weight"])) for name in group.linears}

    def loss(step: int) -> float:
        s = candidate_scales(x_mean, step / settings.n_grid)
        overrides = {keys[n]: (fake_quantize(w * s, settings.group_size) / s).to(dtype)
                     for n, w in weights.items()}
        return output_error(inspect, overrides, calls, masks)

    best, losses = grid_search(settings.n_grid if settings.scale_search else 1, settings.alpha_stride, loss)
    alpha = best / settings.n_grid
    return ScaleResult(index, group.prev, group.linears, alpha, losses[best], losses[0],
                       candidate_scales(x_mean, alpha).float())


def grid_search(n: int, stride: int, loss: Callable[[int], float]) -> tuple[int, dict[int, float]]:
    """The step in range(n) with the least loss, and every loss computed on the way.

    Scores every `stride`-th step, then steps around the best at a stride halved (rounding up) until 1: at
    stride 1 the whole grid (llm-awq), at 4 on a grid of 20, 9 candidates, the same pick wherever the loss
    falls and rises once along the grid. Ties go to the smaller step, as in a scan from 0.
    """
    losses: dict[int, float] = {}

    def score(steps: Iterable[int]) -> int:
        for i in steps:
            if 0 <= i < n and i not in losses:
                losses[i] = loss(i)
        return min(losses, key=lambda i: (losses[i], i))

    best = score(range(0, n, stride))
    while stride > 1:
        stride = (stride + 1) // 2
        best = score((best - stride, best + stride))
    return best, losses


def search_clip(weight: torch.Tensor, x: torch.Tensor, settings: SearchSettings) -> torch.Tensor:
    """Per (output row, input group) clipping bound max|w| * (1 - i/n) minimising that group's output error.

    weight [out, in] and x [tokens, in] are already scaled. The error llm-awq measures, the mean over
    tokens of ((W_clipped - W) x)^2 per row and group, is the quadratic form d^T C d of the weight change d
    with the group's input second moment C = X X^T / tokens: computed once, it scores every candidate with
    a gs x gs product instead of a pass over the tokens (the same objective, and no cancellation).
    """
    out_f, in_f = weight.shape
    gs, groups = settings.group_size, in_f // settings.group_size
    step = max(1, x.shape[0] // settings.clip_tokens)
    xg = x[::step].float().reshape(-1, groups, gs).permute(1, 2, 0)  # [groups, gs, tokens]
    moment = torch.bmm(xg, xg.transpose(1, 2)) / xg.shape[-1]  # [groups, gs, gs]
    w = weight.float().reshape(out_f, groups, gs)
    w_min, w_max = torch.aminmax(w, dim=-1)  # [out, groups]
    org_max = torch.maximum(-w_min, w_max)
    best_max, best_err = org_max.clone(), torch.full_like(org_max, float("inf"))
    for i in range(int(settings.max_shrink * settings.n_grid)):
        max_val = org_max * (1 - i / settings.n_grid)
        bound = max_val.unsqueeze(-1)
        # clamping is monotonic, so the clipped groups' min and max are the clamped min and max
        clipped = fake_quantize_groups(torch.clamp(w, -bound, bound), torch.clamp(w_min, -max_val, max_val),
                                       torch.clamp(w_max, -max_val, max_val))
        d = (clipped - w).transpose(0, 1)  # [groups, out, gs]
        err = (torch.bmm(d, moment) * d).sum(dim=-1).t()  # [out, groups]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_max = torch.where(better, max_val, best_max)
    return best_max


def search_clips(block: nn.Module, index: int, scales: Sequence[ScaleResult], calls: dict[str, list[Call]],
                 batches: Sequence[Batch], settings: SearchSettings) -> list[ClipResult]:
    """Clip search for every linear except q/k, on the weights as apply.py will leave them scaled.

    A linear's input columns carry its group's s; when it is also a group's prev op (up_proj before
    down_proj), its output rows carry 1/s of that group too: both change each group's max|w|.
    """
    col_scale = {name: r.scales for r in scales for name in r.linears}
    row_scale = {r.prev: r.scales for r in scales}
    results = []
    for name, module in block.named_modules():
        if not isinstance(module, nn.Linear) or name.endswith(NO_CLIP_SUFFIXES):
            continue
        s_in = col_scale.get(name, torch.ones(module.in_features))
        s_out = row_scale.get(name, torch.ones(module.out_features))
        weight = module.weight.float() * s_in / s_out.unsqueeze(-1)
        x = real_rows(calls[name], batches).float() / s_in
        results.append(ClipResult(index, name, search_clip(weight, x, settings)))
    return results


def applicable_groups(block: nn.Module, groups: Sequence[ScaleGroup] = QWEN3_GROUPS) -> list[ScaleGroup]:
    """The groups whose prev op's output width equals the linears' input width (drops v->o under GQA)."""
    def width(name: str) -> int:
        module = block.get_submodule(name)
        return module.out_features if isinstance(module, nn.Linear) else module.weight.shape[0]

    return [g for g in groups
            if all(width(g.prev) == block.get_submodule(n).in_features for n in g.linears)]


def linear_names(block: nn.Module) -> list[str]:
    return [name for name, m in block.named_modules() if isinstance(m, nn.Linear)]


def search_block(block: nn.Module, index: int, batches: Sequence[Batch], settings: SearchSettings
                 ) -> tuple[list[ScaleResult], list[ClipResult], list[Batch]]:
    """Scales and clips for one block, and its outputs (the next block's inputs) in the search dtype.

    The forward passes run through a copy of the block in the search dtype; the block itself (whose float
    weights are fake-quantised for every candidate) is never modified.
    """
    dtype = settings.torch_dtype()
    work = block if next(block.parameters()).dtype == dtype else copy.deepcopy(block).to(dtype)
    groups = applicable_groups(block)
    watch = sorted(set(linear_names(block)) | {g.inspect for g in groups})
    outputs, calls = run_block(work, batches, watch)
    subset = search_subset(batches, settings.search_tokens)
    masks = [batches[i].mask for i in subset]
    scales = []
    for group in groups:
        x_mean = real_rows(calls[group.linears[0]], batches).float().abs().mean(dim=0)
        sub_calls = [calls[group.inspect][i] for i in subset]
        scales.append(search_scale(block, work, index, group, x_mean, sub_calls, masks, settings))
    clips = search_clips(block, index, scales, calls, batches, settings) if settings.clip else []
    return scales, clips, [replace(b, hidden=h) for b, h in zip(batches, outputs)]


def to_device(value: Any, device: str) -> Any:
    """Tensors (also inside tuples, lists, dicts and Batches) moved to `device`; everything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Batch):
        return Batch(to_device(value.hidden, device), to_device(value.kwargs, device), value.mask.to(device))
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def search(decoder: nn.Module, sequences: Sequence[Sequence[int]], pad_id: int,
           settings: SearchSettings = SearchSettings(), progress: bool = True,  # noqa: B008
           device: str = "cpu") -> AWQResult:
    """Run the AWQ search over every decoder block of a float Qwen3 decoder (left unchanged).

    On a GPU (`device` "cuda") one block at a time is copied there, so a model larger than the card
    still searches; the calibration activations live on the device, the results come back to the CPU.
    """
    result = AWQResult(settings)
    with torch.inference_mode():
        batches = capture_block_inputs(decoder, sequences, pad_id, settings.batch_tokens, settings.torch_dtype())
        batches = to_device(batches, device)
        for index, block in enumerate(tqdm(decoder.layers, desc="AWQ search", disable=not progress)):
            here = block if device == "cpu" else copy.deepcopy(block).to(device)
            scales, clips, batches = search_block(here, index, batches, settings)
            result.scales.extend(replace(r, scales=r.scales.cpu()) for r in scales)
            result.clips.extend(replace(c, max_val=c.max_val.cpu()) for c in clips)
            for r in scales:
                log.debug("block %d %s: alpha %.2f, error %.3g (s=1: %.3g)", index, r.prev, r.alpha,
                          r.loss, r.loss_rtn)
    return result
