"""Peak-RSS helpers for benchmark workers that run in other venvs (onnxruntime-genai, llm-compressor), where
rerank_export is not installed: the standard library only, as rerank_export.memory reads the same files."""

from __future__ import annotations


def status_bytes(key: str) -> int:
    """A /proc/self/status field (VmRSS, VmHWM) in bytes; 0 where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0; nothing elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
