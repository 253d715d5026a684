"""Every check loading an artifact makes before it reads weights, in one place: `pick` runs the same ones
as `load()` and `serve`, so what `pick` chooses loads, and a root with one bad artifact serves the next."""

from __future__ import annotations

from pathlib import Path

from .errors import ArtifactError, RerankExportError
from .manifest import Manifest, verify_files


def preflight(folder: str | Path, manifest: Manifest) -> None:
    """Files against the manifest, the format's own folder checks, and the tokenizer's yes/no ids against
    the manifest's; ArtifactError names the first that fails."""
    from .formats import FORMATS

    folder = Path(folder)
    verify_files(folder, manifest)
    spec = FORMATS.get(manifest.format)
    if spec is None:
        raise ArtifactError(f"{folder}: format '{manifest.format}' is not one this rerank-export knows")
    if spec.dtype != manifest.dtype:
        raise ArtifactError(f"{folder}: manifest says format {manifest.format} with dtype '{manifest.dtype}', "
                            f"but {manifest.format} is {spec.dtype}; re-export the artifact")
    try:
        if spec.check is not None:
            spec.check(folder, manifest)
        check_contract(folder, manifest)
    except RerankExportError as exc:
        raise ArtifactError(str(exc)) from exc


def check_contract(folder: Path, manifest: Manifest) -> None:
    """The folder's tokenizer gives the manifest's yes/no ids (else every score reads the wrong logits)."""
    from .contract import Contract, load_tokenizer

    contract = Contract(load_tokenizer(folder))
    if (contract.yes_id, contract.no_id) != (manifest.yes_id, manifest.no_id):
        raise ArtifactError(f"{folder}: tokenizer's yes/no ids {(contract.yes_id, contract.no_id)} differ from "
                            f"the manifest's {(manifest.yes_id, manifest.no_id)}; re-export the artifact")
