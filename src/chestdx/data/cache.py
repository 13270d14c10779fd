"""Decode-once pixel cache: a memory-mapped uint8 store plus an append-only manifest.

Layout of ``<root>/s<size>/``:
- ``pixels.u8``  fixed-size slots of size*size bytes (one image each), read through ``np.memmap``;
- ``manifest.csv`` one line per stored slot: ``slot,mtime_ns,nbytes,path``. A line is appended only
  after its pixels are flushed, so a killed build leaves at most unreferenced bytes, never a bad entry;
- ``lock``  an fcntl lock held while writing (parallel DDP ranks build one after the other).
Entries are keyed by (path, mtime, size): a changed file gets a new slot, an unchanged one is reused.
A member of a tar archive (path ``<archive>::<member>``, see ``chestdx.data.archives``) is keyed by its
archive's mtime and size.

Decoding runs in ``workers`` processes (default: every CPU this process may use); the parent stays the
single writer and stores results in input order (archive order for archive members), so a build is
deterministic whatever the number of workers. Archives are streamed once each, never extracted.
"""

from __future__ import annotations

import csv
import fcntl
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chestdx.data.archives import iter_members
from chestdx.data.decoding import DecodeItem, decoded_in_order, default_workers
from chestdx.io.archive_member import split_member_path

log = logging.getLogger(__name__)

__all__ = ["CacheBuildReport", "PixelCache", "default_cache_root", "default_workers"]


def default_cache_root() -> Path:
    """$CHESTDX_CACHE, else ~/.cache/chestdx."""
    return Path(os.environ.get("CHESTDX_CACHE", Path.home() / ".cache" / "chestdx"))


def _file_key(path: str) -> tuple[int, int]:
    """(mtime_ns, size) of a file, or of the archive holding an archive member."""
    parts = split_member_path(path)
    st = os.stat(parts[0] if parts else path)
    return st.st_mtime_ns, st.st_size


def _normalize(path: str) -> str:
    parts = split_member_path(path)
    return f"{os.path.abspath(parts[0])}::{parts[1]}" if parts else os.path.abspath(path)


@dataclass
class CacheBuildReport:
    """What a build did: images decoded, reused, and files that failed with their reason."""

    decoded: int = 0
    reused: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


class PixelCache:
    """Images of one size, decoded once. ``cache.slots(paths)`` -> slot indices; ``cache.pixels[slot]``."""

    def __init__(self, root: str | Path | None = None, size: int = 256):
        self.size = int(size)
        self.dir = Path(root or default_cache_root()) / f"s{self.size}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_path = self.dir / "pixels.u8"
        self.manifest_path = self.dir / "manifest.csv"
        self._entries: dict[str, tuple[int, int, int]] = {}  # path -> (slot, mtime_ns, nbytes)
        self._n_slots = 0
        self._pixels: np.memmap | None = None
        self._load_manifest()

    @property
    def slot_bytes(self) -> int:
        return self.size * self.size

    def _load_manifest(self) -> None:
        self._entries.clear()
        self._n_slots = 0
        if not self.manifest_path.exists():
            return
        data_slots = self.data_path.stat().st_size // self.slot_bytes if self.data_path.exists() else 0
        with open(self.manifest_path, newline="") as fh:
            for row in csv.reader(fh):
                if len(row) != 4 or not row[0].isdigit():
                    continue  # a line cut by a kill: ignore
                slot = int(row[0])
                if slot < data_slots:
                    self._entries[row[3]] = (slot, int(row[1]), int(row[2]))
                    self._n_slots = max(self._n_slots, slot + 1)

    @property
    def pixels(self) -> np.ndarray:
        """All slots as a read-only (n, size, size) uint8 memmap."""
        if self._pixels is None or self._pixels.shape[0] < self._n_slots:
            if self._n_slots == 0:
                return np.zeros((0, self.size, self.size), np.uint8)
            self._pixels = np.memmap(self.data_path, dtype=np.uint8, mode="r",
                                     shape=(self._n_slots, self.size, self.size))
        return self._pixels

    def lookup(self, path: str, _keys: dict[str, tuple[int, int]] | None = None) -> int | None:
        """Slot of ``path`` if cached and unchanged on disk (an archive member: its archive), else None."""
        entry = self._entries.get(_normalize(path))
        if entry is None:
            return None
        try:
            parts = split_member_path(path)
            if parts and _keys is not None:  # one stat per archive, not per member
                key = _keys.get(parts[0]) or _keys.setdefault(parts[0], _file_key(path))
            else:
                key = _file_key(path)
        except OSError:
            return None
        return entry[0] if key == entry[1:] else None

    @contextmanager
    def _locked(self):
        with open(self.dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load_manifest()  # another process may have added entries
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def build(self, paths: Sequence[str], strict: bool = False, workers: int | None = None,
              progress: Callable[[int], None] | None = None) -> CacheBuildReport:
        """Decode and store every path not already cached; bad files are reported (or raised if ``strict``).

        ``workers`` decoding processes (None: every usable CPU; 1: decode in this process). Archive members
        are read by streaming each archive once; a killed build resumes after the last stored member.
        """
        from chestdx.io import ImageReadError

        report = CacheBuildReport()
        workers = default_workers() if workers is None else max(1, int(workers))
        with self._locked():
            todo: list[str] = []
            keys: dict[str, tuple[int, int]] = {}
            for p in dict.fromkeys(_normalize(p) for p in paths):
                if self.lookup(p, keys) is None:
                    todo.append(p)
                else:
                    report.reused += 1
                    if progress:
                        progress(1)
            if not todo:
                return report
            # drop bytes past the last manifest slot (left by a killed build)
            with open(self.data_path, "ab") as fh:
                fh.truncate(self._n_slots * self.slot_bytes)
            with open(self.data_path, "ab") as data, open(self.manifest_path, "a", newline="") as man:
                writer = csv.writer(man)
                results = decoded_in_order(_work_items(todo), self.size, workers)
                try:
                    for i, (path, pix, error, key) in enumerate(results):
                        if pix is None or key is None:
                            if strict:
                                raise ImageReadError(error)
                            report.failures.append((path, error or "unknown error"))
                        else:
                            data.write(pix)
                            slot = self._n_slots
                            self._n_slots += 1
                            self._entries[path] = (slot, key[0], key[1])
                            data.flush()  # pixels reach the OS before the manifest line that points at them
                            if i % 256 == 255:
                                os.fsync(data.fileno())
                            writer.writerow([slot, key[0], key[1], path])
                            report.decoded += 1
                        if progress:
                            progress(1)
                finally:
                    results.close()  # stops the worker processes on an error
                    data.flush()
                    os.fsync(data.fileno())
                    man.flush()
                    os.fsync(man.fileno())
        self._pixels = None
        return report

    def slots(self, paths: Sequence[str]) -> np.ndarray:
        """Slot index per path (all must be cached)."""
        out = np.empty(len(paths), dtype=np.int64)
        keys: dict[str, tuple[int, int]] = {}
        for i, p in enumerate(paths):
            slot = self.lookup(p, keys)
            if slot is None:
                raise KeyError(f"{p} is not in the cache {self.dir} (build it first)")
            out[i] = slot
        return out


def _work_items(todo: Sequence[str]) -> Iterator[DecodeItem]:
    """Plain files in the given order, then each archive streamed once (its members in archive order)."""
    by_archive: dict[str, list[str]] = defaultdict(list)
    for path in todo:
        parts = split_member_path(path)
        if parts is None:
            yield DecodeItem(path, None, None, None)
        else:
            by_archive[parts[0]].append(parts[1])
    for archive, members in by_archive.items():
        try:
            key = _file_key(archive)
        except OSError as err:
            for m in members:
                yield DecodeItem(f"{archive}::{m}", None, f"{archive}: archive unreadable ({err})", None)
            continue
        for member, blob, error in iter_members(archive, members):
            yield DecodeItem(f"{archive}::{member}", blob, error, key)
