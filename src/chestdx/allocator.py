"""Process-wide glibc ``malloc`` settings so that PyTorch's CPU tensors are not page-faulted in on every pass.

glibc serves an allocation above its mmap threshold (dynamic, at most 32 MiB) with fresh ``mmap`` pages and
returns them to the kernel on ``free``. A CPU forward pass allocates activations of tens of MiB per batch, so
every pass faults its buffers in again, page by page, in the kernel. Measured on the 2-core machine
(EfficientNet-Lite0, 224 px, 1 thread; docs/benchmarks.md "Allocator"): 44 % of an inference pass's CPU time
was kernel time (860 k page faults for 4 batches of 16); with the thresholds below it is ~1 %, and a pass
takes ~37 % less wall time (training steps ~17 % less). The price is resident memory: freed blocks up to
``limit`` stay in the process for reuse (+0.2-0.3 GB peak RSS in that measurement).

On by default where chestdx runs models in a process of its own: every CLI command except ``serve`` (a long-lived
threaded server, where glibc's default returns memory and the stated memory ceiling was measured), and ``fit``.
``CHESTDX_MALLOC_TUNING=0`` turns it off. Only glibc (Linux) has ``mallopt``; elsewhere this does nothing. The same effect without
chestdx: ``MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=268435456`` in the environment.
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
