"""Score the built-in eval set with one artifact, as the parity gate does; print JSON with the CPU seen.

    python tests/e2e/_score_artifact.py ARTIFACT_DIR SOURCE_MODEL_DIR

Run under qemu-user by test_cpu_paths.py, so only the artifact's own kernels run emulated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rerank_export.evalsets import builtin_eval_set
from rerank_export.formats import get_format
from rerank_export.host import cpu_facts
from rerank_export.manifest import read_manifest
from rerank_export.parity import score_set
from rerank_export.reference import SourceModel


def main(folder: Path, model: str) -> None:
    manifest = read_manifest(folder)
    backend = get_format(manifest.format).loader(folder, manifest, "cpu")
    scores = score_set(backend, SourceModel(model), builtin_eval_set(False))
    print(json.dumps({"scores": scores, "cpu": cpu_facts()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
