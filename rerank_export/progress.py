"""Progress bars follow verbosity: they show when rerank_export's INFO lines do (the CLI's default; -q
hides both), so no function has to carry a `progress` flag through its options."""

from __future__ import annotations

import logging


def bars_enabled() -> bool:
    return logging.getLogger("rerank_export").isEnabledFor(logging.INFO)
