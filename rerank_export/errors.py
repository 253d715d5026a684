"""One small hierarchy of the errors a user can cause; the CLI maps them to one-line messages."""

from __future__ import annotations


class RerankExportError(Exception):
    """A known failure with a message fit to show the user as one line."""

    exit_code = 1


class UsageError(RerankExportError):
    """The command line or a request asked for something impossible (exit 2)."""

    exit_code = 2


class ModelError(RerankExportError):
    """A model folder or hub id is missing, unreachable, or not a Qwen3 reranker."""


class ContractError(RerankExportError):
    """Input that the reranker contract cannot encode (empty query, no room for the document...)."""


class EvalSetError(RerankExportError):
    """An eval or calibration file is missing, malformed, or empty."""


class ArtifactError(RerankExportError):
    """An artifact folder is incomplete, corrupted, or of an unknown format."""


class RecipeError(RerankExportError):
    """A recipe file is malformed or names unknown keys."""


class NoArtifactFits(RerankExportError):
    """No verified artifact fits the device's memory."""


class MissingExtra(RerankExportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'rerank-export[{extra}]'")
        self.package = package
        self.extra = extra


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (or its type's name): libraries put pages in their messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
