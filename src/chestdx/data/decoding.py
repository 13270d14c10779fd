"""Parallel decode + resize for the pixel cache: worker processes, results back in input order.

Pixels are ``to_uint8_square(read_image(path), size)``, computed without the float round trip as
``read_image_u8(path, size=size)`` (the same bytes, as the Predictor's model input). PNG/JPEG
decoding and the resize are CPU-bound and hold the GIL, so they run in processes. Work goes out in small chunks
with a bounded number in flight, so memory does not depend on the number of images; the caller consumes results
in input order and stays the only writer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import NamedTuple

#: (path, size*size uint8 pixels or None, error text or None, cache key (mtime_ns, nbytes) or None)
Decoded = tuple[str, bytes | None, str | None, tuple[int, int] | None]

CHUNK = 8  # images per task: amortizes inter-process overhead, keeps the window small
IN_FLIGHT_PER_WORKER = 3  # chunks queued per worker


class DecodeItem(NamedTuple):
    """One image to cache: a file path (``data`` None: the worker reads it) or in-memory bytes
    (an archive member, with its archive's ``key``); ``error`` set = already failed, passed through."""

    path: str
    data: bytes | None
    error: str | None
    key: tuple[int, int] | None


def default_workers() -> int:
    """Every CPU this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _decode_one(item: DecodeItem, size: int) -> Decoded:
    from chestdx.io import ImageReadError, decode_image_bytes_u8, read_image_u8

    if item.error is not None:
        return item.path, None, item.error, None
    try:
        if item.data is None:
            st = os.stat(item.path)  # before reading: a file changed meanwhile is redone next build
            img, key = read_image_u8(item.path, size=size), (st.st_mtime_ns, st.st_size)
        else:
            img, key = decode_image_bytes_u8(item.data, item.path, size=size), item.key
        return item.path, img.tobytes(), None, key
    except (ImageReadError, OSError, ValueError) as err:
        return item.path, None, str(err), None


def decode_chunk(items: list[DecodeItem], size: int) -> list[Decoded]:
    """Decode + resize a chunk (runs in a worker process)."""
    return [_decode_one(item, size) for item in items]


def _worker_init() -> None:
    """Die with the parent (a kill -9 of the build must not leave workers holding the cache lock)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent


def _chunks(items: Iterable[DecodeItem], n: int) -> Iterator[list[DecodeItem]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def decoded_in_order(items: Iterable[DecodeItem], size: int, workers: int) -> Iterator[Decoded]:
    """Decode ``items`` with ``workers`` processes (1 = in this process); yield results in input order.

    ``items`` is consumed lazily (at most ``workers * IN_FLIGHT_PER_WORKER`` chunks ahead of the consumer).
    Closing the generator cancels the queued work and stops the workers.
    """
    if workers <= 1:
        for chunk in _chunks(items, CHUNK):
            yield from decode_chunk(chunk, size)
        return
    pool = ProcessPoolExecutor(workers, initializer=_worker_init)
    pending: deque[Future[list[Decoded]]] = deque()
    try:
        for chunk in _chunks(items, CHUNK):
            pending.append(pool.submit(decode_chunk, chunk, size))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
