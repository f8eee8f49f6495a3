"""Process-level tuning for CPU evaluation.

``tune_malloc()``: glibc returns large freed blocks (≥ 128 KiB … 32 MiB, adaptive) to the OS with
``munmap``/trim, so every model call page-faults its per-edge temporaries in again (a [75, 10⁴] float64
buffer is 6 MB, 1,500 pages).  On the 2-core benchmark VM this cost 25–40 % of an energy+forces call.
Raising the mmap and trim thresholds keeps freed memory in the heap for reuse (docs/performance.md).
It changes the whole process (memory is not handed back to the OS while it runs), so it is opt-in: the
benchmark scripts and the CLI call it; call it yourself before MD in a long-running Python process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Set glibc's M_MMAP_THRESHOLD / M_TRIM_THRESHOLD (bytes); True if applied (Linux glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) or bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    return ok and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
