"""Process-wide glibc ``malloc`` settings so that PyTorch's CPU tensors are not page-faulted in on every pass.

glibc serves an allocation above its mmap threshold (dynamic, at most 32 MiB) with fresh ``mmap`` pages and
returns them to the kernel on ``free``. A CPU forward pass allocates activations of tens of MiB per batch, so
every pass faults its buffers in again, page by page, in the kernel. Measured on the 2-core machine
(``bench/bench_allocator.py``: EfficientNet-Lite0, 224 px, batch 16, 1 thread; docs/benchmarks.md "Allocator"):
37 % of an inference pass's CPU time was kernel time (189 k page faults per batch); with the thresholds below it
is 1.5 %, inference runs 1.48x faster and a training step 1.08x. The price is resident memory: freed blocks up to
``limit`` stay in the process for reuse (+147 MiB peak RSS there).

On by default where chestdx runs models in a process of its own: every CLI command except ``serve`` (a long-lived
threaded server, where glibc's default returns memory and the stated memory ceiling was measured), and ``fit``.
``CHESTDX_MALLOC_TUNING=0`` turns it off. Only glibc (Linux) has ``mallopt``; elsewhere this does nothing.
The same effect without chestdx: ``MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=268435456``.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["ENV", "tune_malloc"]

ENV = "CHESTDX_MALLOC_TUNING"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
_tuned = False


def tune_malloc(limit: int = 256 << 20) -> bool:
    """Keep freed blocks of up to ``limit`` bytes for reuse instead of unmapping them (glibc ``mallopt``:
    ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``). Idempotent; True when the setting is in effect."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get(ENV, "1").strip().lower() in ("0", "off", "false", "no") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = mallopt(_M_MMAP_THRESHOLD, int(limit)) == 1 and mallopt(_M_TRIM_THRESHOLD, int(limit)) == 1
    return _tuned
