"""Decode-once pixel cache: a memory-mapped uint8 store plus an append-only manifest.

Layout of ``<root>/s<size>/``:
- ``pixels.u8``  fixed-size slots of size*size bytes (one image each), read through ``np.memmap``;
- ``manifest.csv`` one line per stored slot: ``slot,mtime_ns,nbytes,path``. A line is appended only
  after its pixels are flushed, so a killed build leaves at most unreferenced bytes, never a bad entry;
- ``lock``  an fcntl lock held while writing (parallel DDP ranks build one after the other).
Entries are keyed by (path, mtime, size): a changed file gets a new slot, an unchanged one is reused.
"""

from __future__ import annotations

import csv
import fcntl
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chestdx.data.transforms import to_uint8_square
from chestdx.io import ImageReadError, read_image

log = logging.getLogger(__name__)

def default_cache_root() -> Path:
    """$CHESTDX_CACHE, else ~/.cache/chestdx."""
    return Path(os.environ.get("CHESTDX_CACHE", Path.home() / ".cache" / "chestdx"))


def _file_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


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

    def lookup(self, path: str) -> int | None:
        """Slot of ``path`` if cached and unchanged on disk, else None."""
        entry = self._entries.get(os.path.abspath(path))
        if entry is None:
            return None
        try:
            if _file_key(path) != entry[1:]:
                return None
        except OSError:
            return None
        return entry[0]

    @contextmanager
    def _locked(self):
        with open(self.dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load_manifest()  # another process may have added entries
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def build(self, paths: Sequence[str], strict: bool = False, workers: int = 2,
              progress: Callable[[int], None] | None = None) -> CacheBuildReport:
        """Decode and store every path not already cached; bad files are reported (or raised if ``strict``)."""
        report = CacheBuildReport()
        with self._locked():
            todo = []
            for p in dict.fromkeys(os.path.abspath(p) for p in paths):
                if self.lookup(p) is None:
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

            def decode(path: str) -> tuple[str, np.ndarray | None, str | None, tuple[int, int] | None]:
                try:
                    key = _file_key(path)
                    return path, to_uint8_square(read_image(path), self.size), None, key
                except (ImageReadError, OSError) as err:
                    return path, None, str(err), None

            with open(self.data_path, "ab") as data, open(self.manifest_path, "a", newline="") as man, \
                    ThreadPoolExecutor(max(1, workers)) as pool:
                writer = csv.writer(man)
                for i, (path, pix, error, key) in enumerate(pool.map(decode, todo)):
                    if pix is None:
                        if strict:
                            raise ImageReadError(error)
                        report.failures.append((path, error))
                    else:
                        data.write(pix.tobytes())
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
                data.flush()
                os.fsync(data.fileno())
                man.flush()
                os.fsync(man.fileno())
        self._pixels = None
        return report

    def slots(self, paths: Sequence[str]) -> np.ndarray:
        """Slot index per path (all must be cached)."""
        out = np.empty(len(paths), dtype=np.int64)
        for i, p in enumerate(paths):
            slot = self.lookup(p)
            if slot is None:
                raise KeyError(f"{p} is not in the cache {self.dir} (build it first)")
            out[i] = slot
        return out
