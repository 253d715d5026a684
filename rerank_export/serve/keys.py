"""The server's API key: from a file, the environment or (with a warning) the command line; never logged."""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from ..errors import UsageError

log = logging.getLogger(__name__)

API_KEY_ENV = "RERANK_EXPORT_API_KEY"
MAX_KEY_BYTES = 4096  # a key file is one short line; a bound keeps a wrong path (a device, a log) from being read


def resolve_api_key(key_file: str | None, key: str | None) -> str | None:
    """The key from --api-key-file, --api-key (with a warning: argv is public) or $RERANK_EXPORT_API_KEY.

    No message, here or later, ever holds the key itself.
    """
    if key_file is not None:
        return _checked(_read_key_file(Path(key_file)), f"--api-key-file {key_file}")
    if key is not None:
        log.warning("--api-key puts the key in this process's command line, which `ps` shows to every user of "
                    "this machine: pass it with --api-key-file PATH or $%s instead", API_KEY_ENV)
        return _checked(key, "--api-key")
    key = os.environ.get(API_KEY_ENV)
    return _checked(key, f"${API_KEY_ENV}") if key else None  # set but empty: no key, as if unset


def _read_key_file(path: Path) -> str:
    try:
        with path.open("rb") as file:
            raw, mode = file.read(MAX_KEY_BYTES + 1), os.fstat(file.fileno()).st_mode
    except OSError as exc:
        raise UsageError(f"cannot read --api-key-file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_KEY_BYTES:
        raise UsageError(f"--api-key-file {path} is over {MAX_KEY_BYTES} bytes: put only the key in it")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("--api-key-file %s can be read by other users (mode %o): chmod 600 it", path, mode & 0o777)
    return raw.decode("ascii", "replace").strip()  # non-ASCII bytes become U+FFFD, which _checked refuses


def _checked(key: str, source: str) -> str:
    """`key` if it can travel in an Authorization header: one line of printable ASCII."""
    if not key:
        raise UsageError(f"{source} holds no key: put the key in it, or leave it out to serve without one")
    if not re.fullmatch(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?", key):
        raise UsageError(f"{source}: the key must be one line of printable ASCII (it travels in an HTTP header; "
                         "a client could never send it otherwise)")
    return key
