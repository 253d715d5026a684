"""Loading an ONNX artifact: check the graph and its external data, open an onnxruntime session, score."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ArtifactError, MissingExtra, UsageError, first_line
from ...manifest import Manifest
from ...scoring import MIN_PREFIX_TOKENS, OutOfMemory, common_prefix_length
from .graph import INPUTS, KV_POSITIONS, MODEL_FILE, OUTPUT, PADDING_KEY, require

log = logging.getLogger(__name__)

PREFIXES_KEPT = 4  # distinct query prefixes whose keys/values stay between batches (~16 MB each, 0.6B fp32)


def check_graph(path: Path) -> None:
    """Refuse a missing/truncated model.onnx, a missing external data file, or unexpected inputs."""
    onnx = require("onnx")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the ONNX artifact is incomplete; rebuild it")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors share no base class
        raise ArtifactError(f"{path} is not a readable ONNX model (truncated or corrupted?): {first_line(exc)}; "
                            "rebuild it") from exc
    _check_io(path, model)
    _check_external_data(path, model)


def _check_io(path: Path, model: Any) -> None:
    int64 = 7  # onnx.TensorProto.INT64
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    defaults = {t.name for t in model.graph.initializer}
    # The prefix inputs are optional (each has a default), so a session fed only INPUTS scores.
    optional = [n for n, _ in inputs[len(INPUTS):] if n in defaults and (n == KV_POSITIONS or n.startswith("past."))]
    if inputs[:len(INPUTS)] != [(name, int64) for name in INPUTS] or len(optional) != len(inputs) - len(INPUTS):
        raise ArtifactError(f"{path} has inputs {[n for n, _ in inputs][:6]} (element types "
                            f"{[t for _, t in inputs][:6]}), expected int64 {list(INPUTS)}: not a rerank-export "
                            "ONNX scorer; rebuild it")
    outputs = [o.name for o in model.graph.output]
    if outputs[:1] != [OUTPUT] or not all(o.startswith("present.") for o in outputs[1:]):
        raise ArtifactError(f"{path} has outputs {outputs[:6]}, expected ['{OUTPUT}']: not a rerank-export ONNX "
                            "scorer; rebuild it")


def _check_external_data(path: Path, model: Any) -> None:
    for tensor in model.graph.initializer:
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        info = {e.key: e.value for e in tensor.external_data}
        data = path.parent / info.get("location", "")
        if not data.is_file():
            raise ArtifactError(f"{data} is missing: {path.name} keeps its weights there; copy it beside "
                                f"{path.name} or rebuild the artifact")
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        if data.stat().st_size < end:
            raise ArtifactError(f"{data} is truncated ({data.stat().st_size} bytes, tensor '{tensor.name}' "
                                f"ends at {end}); rebuild the artifact")


def providers_for(device: str) -> list[str]:
    """Execution providers: CUDA when asked for ("cuda") or available ("auto"), else CPU."""
    ort = require("onnxruntime")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise MissingExtra("onnxruntime-gpu", "gpu")
    if device not in ("cpu", "cuda", "auto"):
        raise UsageError(f"unknown device '{device}' for onnxruntime; use cpu, cuda or auto")
    if device == "cuda" or (device == "auto" and has_cuda):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int | None = None, optimization: str = "all") -> Any:
    """Thread count (None = onnxruntime's default, one per physical core) and graph optimisation level."""
    ort = require("onnxruntime")
    if optimization not in OPTIMIZATION_LEVELS:
        raise UsageError(f"unknown optimisation level '{optimization}'; use one of {OPTIMIZATION_LEVELS}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{optimization.upper()}",
                                            ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: ORT warns about every unused initializer otherwise
    # onnxruntime's buffer reuse plan hands a freed buffer only to a later tensor of the same shape and
    # keeps it until that tenant is gone, so a layer's many shapes each hold their own buffers: 156 KiB
    # per token on the 0.6B shape at 8,192 tokens. Without it every tensor goes back to the arena after its
    # last reader: 53-66 KiB per token (PyTorch fp32: 56), at the same speed (benchmarks/RESULTS.md).
    opts.enable_mem_reuse = False
    return opts


def make_session(path: Path, device: str = "cpu", threads: int | None = None,
                 optimization: str = "all") -> Any:
    """A checked onnxruntime session for an artifact's model.onnx."""
    ort = require("onnxruntime")
    check_graph(Path(path))
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads, optimization),
                                    providers=providers_for(device))
    except (RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
        raise ArtifactError(f"onnxruntime cannot load {path}: {first_line(exc)}") from exc


class OnnxBackend:
    """Scores with an onnxruntime session over the single-logit graph (parity gate and runtime).

    Graphs with prefix inputs (gqa attention) reuse prefixes, as the PyTorch backends do: each row is split
    after its first `split_marker` (the contract's "<Document>:", so the prefix is the system prompt,
    instruction and query), the prefix's keys/values are computed once (and kept for later batches), and
    the row's tail runs alone against them. The split depends on the row alone, so a pair's score never
    depends on its batch-mates, even where activations are quantized per run (onnx-int8). Without a marker,
    a batch's longest common prefix is the split. onnxruntime's GroupQueryAttention continues a past for one
    row at a time only; on the CPU one row of a few hundred tokens keeps the MatMuls as busy as a batch.
    """

    def __init__(self, session: Any, name: str = "onnx", prefix_reuse: bool = True,
                 split_marker: Sequence[int] | None = None, min_prefix: int = MIN_PREFIX_TOKENS) -> None:
        self.session = session
        self.name = name
        self.providers = session.get_providers()
        # Graphs record the padding they read: "any" (today's), "right" (gqa graphs from before
        # export.real_tokens_first, re-padded here), none (from before the fused attention: any padding).
        self.right_padded = session.get_modelmeta().custom_metadata_map.get(PADDING_KEY) == "right"
        # Inputs with a default are listed apart, as overridable initializers.
        optional = [i.name for i in session.get_overridable_initializers()]
        self.past_inputs = [name for name in optional if name.startswith("past.")]
        self.prefix_reuse = prefix_reuse and bool(self.past_inputs)
        self.split_marker = list(split_marker) if split_marker else None
        self.min_prefix = min_prefix
        self._prefixes: OrderedDict[tuple[int, ...], dict[str, np.ndarray]] = OrderedDict()
        self.stats = {"batches": 0, "reused": 0, "prefix_tokens_saved": 0}

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.stats["batches"] += 1
        if not self.prefix_reuse:
            return self._run_whole(input_ids, attention_mask)
        rows = [ids[mask.astype(bool)].tolist() for ids, mask in zip(input_ids, attention_mask)]
        splits = self._splits(rows)
        out = np.empty(len(rows), dtype=np.float32)
        whole = [i for i, split in enumerate(splits) if not split]
        if whole:
            out[whole] = self._run_whole(input_ids[whole], attention_mask[whole])
        computed = 0
        for i, split in enumerate(splits):
            if split:
                past, fresh = self._prefix_kv(tuple(rows[i][:split]))
                computed += split if fresh else 0
                out[i] = self._run(np.asarray([rows[i][split:]]), None, past)[0]
        if len(whole) < len(rows):
            self.stats["reused"] += 1
            self.stats["prefix_tokens_saved"] += sum(splits) - computed
        return out

    def _splits(self, rows: list[list[int]]) -> list[int]:
        """Each row's prefix length (0: run whole)."""
        if self.split_marker is None:  # no marker from the tokenizer: the batch's common prefix
            shared = common_prefix_length(rows) if len(rows) > 1 else 0
            return [shared if shared >= self.min_prefix else 0] * len(rows)
        return [self._split_after_marker(row) for row in rows]

    def _split_after_marker(self, row: list[int]) -> int:
        marker = self.split_marker
        for i in range(len(row) - len(marker)):
            if row[i:i + len(marker)] == marker:
                end = i + len(marker)
                return end if self.min_prefix <= end < len(row) else 0
        return 0

    def _run_whole(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.right_padded:
            input_ids, attention_mask = to_right_padding(input_ids, attention_mask)
        return self._run(input_ids, attention_mask)

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray | None, extra: dict[str, np.ndarray] | None = None,
             outputs: list[str] | None = None) -> Any:
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        feed = {INPUTS[0]: np.ascontiguousarray(input_ids, dtype=np.int64),
                INPUTS[1]: np.ascontiguousarray(mask, dtype=np.int64), **(extra or {})}
        try:
            out = self.session.run(outputs or [OUTPUT], feed)
        except Exception as exc:  # onnxruntime raises its own classes, not MemoryError
            if "allocate" in str(exc).lower() or "out of memory" in str(exc).lower():
                raise OutOfMemory(str(exc)) from exc
            raise
        return out if outputs else np.asarray(out[0], dtype=np.float32).reshape(-1)

    def _prefix_kv(self, prefix: tuple[int, ...]) -> tuple[dict[str, np.ndarray], bool]:
        """Every layer's keys/values for `prefix` as the past inputs' feed, and whether they were computed
        now (the last few prefixes are kept)."""
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
            return self._prefixes[prefix], False
        ids = np.asarray([prefix], dtype=np.int64)
        presents = ["present." + name[len("past."):] for name in self.past_inputs]
        values = self._run(ids, None, {KV_POSITIONS: np.arange(len(prefix), dtype=np.int64)}, presents)
        self._prefixes[prefix] = dict(zip(self.past_inputs, values))
        while len(self._prefixes) > PREFIXES_KEPT:
            self._prefixes.popitem(last=False)
        return self._prefixes[prefix], True

    def release_memory(self) -> None:
        """Hand onnxruntime's cached activation memory back. Its arena stays at its high-water mark (on the
        tiny int8 model one 4,096-token document leaves 1.4 GiB behind; the 0.6B shape 5.5 GB after 8,192),
        and shrinks only at the end of a run that asks for it: a one-token run does, in about 0.1 s. Kept
        out of every batch: a shrunk arena is rebuilt by the next run (a 4,096-token pass took 1.9x as long)."""
        ort = require("onnxruntime")
        devices = "cpu:0" + (";gpu:0" if "CUDAExecutionProvider" in self.providers else "")
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", devices)
        one = np.zeros((1, 1), dtype=np.int64)
        self.session.run([OUTPUT], {INPUTS[0]: one, INPUTS[1]: np.ones_like(one)}, options)


def to_right_padding(input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's real tokens moved to its front, in order (GroupQueryAttention reads rows that way)."""
    order = np.argsort(np.asarray(attention_mask) == 0, axis=1, kind="stable")
    return np.take_along_axis(np.asarray(input_ids), order, 1), np.take_along_axis(np.asarray(attention_mask), order, 1)


def load(folder: Path, manifest: Manifest, device: str = "cpu", threads: int | None = None,
         optimization: str = "all") -> OnnxBackend:
    """The onnxruntime backend of an ONNX artifact folder."""
    session = make_session(Path(folder) / MODEL_FILE, device, threads, optimization)
    log.info("loaded %s on %s", folder, session.get_providers()[0])
    return OnnxBackend(session, manifest.format, split_marker=_split_marker(folder))


def _split_marker(folder: Path) -> list[int] | None:
    """The artifact tokenizer's ids for the contract's document marker (None: no per-row split)."""
    from ...contract import Contract, load_tokenizer

    return Contract(load_tokenizer(folder)).document_marker_ids
