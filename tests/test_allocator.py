"""chestdx.allocator: glibc mallopt tuning, on by default, off by environment, harmless where unsupported."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import resource, sys, numpy as np
from chestdx.allocator import tune_malloc
ok = tune_malloc()
a = np.ones(1)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a 64 MiB buffer allocated, touched and freed again and again (what a forward pass does)
    a = np.ones(8 << 20)
    del a
print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _run(env_value: str) -> tuple[bool, int]:
    import os

    env = {**os.environ, "CHESTDX_MALLOC_TUNING": env_value}
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    ok, faults = out.stdout.split()
    return ok == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_buffers_are_reused_not_faulted_in_again() -> None:
    on, faults_on = _run("1")
    off, faults_off = _run("0")
    assert on and not off
    # off: every 64 MiB buffer is fresh mmap'd memory, faulted in again (>= 32 faults even with 2 MiB huge
    # pages); on: the same pages come back
    assert faults_off >= 20 * 32 and faults_on * 5 < faults_off, (faults_on, faults_off)


def test_idempotent() -> None:
    from chestdx.allocator import tune_malloc

    assert tune_malloc() == tune_malloc()
