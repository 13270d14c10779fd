"""Cached trunk features for the v3 quality gate (scripts/qg_v3.py): every image once, never again.

A *CXR bank* is one upright view per CXR row of a source ("clean": the file as the gate sees it; "aug<k>": the
k-th hospital-style augmentation, seeded) with the features of all 5 orientations/inversions of the view and of
its left-right mirror: (N, 2, 5, D) per tap, [:, 0, c] = apply_class(u, c), [:, 1, c] = apply_class(mirror(u), c).
Because mirror(apply_class(u, c)) = apply_class(mirror(u), MIRROR5[c]), the test-time mirror average of any
orientation is read from the bank. A *negative bank* holds drawn non-CXR images and their mirrors: (N, 2, D).
Upright images (uint8) are kept beside the features (to run another gate on exactly the same images).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import qg_data as D
from qg_pools import Pools

MIRROR5 = [0, 3, 2, 1, 4]  # class of the mirror of a CXR in class c
CHUNK = 400


class Bank:
    def __init__(self, pools: Pools, extractor, root: Path, seed: int, log, max_rows: int = 0):
        self.pools, self.ex, self.root, self.seed, self.log = pools, extractor, root, seed, log
        self.max_rows = max_rows  # smoke runs: at most this many rows per split
        root.mkdir(parents=True, exist_ok=True)

    def _paths(self, name: str) -> dict:
        return {"u8": self.root / f"{name}.u8.npy", "meta": self.root / f"{name}.meta.npy",
                **{t: self.root / f"{name}.b{t}.npy" for t in self.ex.taps}}

    def _load(self, name: str) -> dict | None:
        p = self._paths(name)
        if not all(f.exists() for f in p.values()):
            return None
        return {k: np.load(f, mmap_mode="r" if k not in ("meta",) else None, allow_pickle=False)
                for k, f in p.items()}

    def _features(self, name: str, u8: np.ndarray, meta: np.ndarray, expand) -> dict:
        """Compute (chunk by chunk) and save the features of expand(u8 chunk) -> (n, K, S, S) images."""
        p = self._paths(name)
        t0 = time.perf_counter()
        lead = expand(u8[:1]).shape[1:-2]  # (2, 5) for CXR banks, (2,) for negatives
        k = int(np.prod(lead))
        out = {t: np.lib.format.open_memmap(str(p[t]) + ".tmp.npy", "w+", np.float16, (len(u8), *lead, d))
               for t, d in self.ex.dims.items()}
        for i in range(0, len(u8), CHUNK):
            imgs = expand(u8[i:i + CHUNK])
            f = self.ex(imgs.reshape(-1, *imgs.shape[-2:]))
            for t in out:
                out[t][i:i + CHUNK] = f[t].reshape(len(imgs), *lead, -1)
        for t, arr in out.items():
            arr.flush()
            del arr
            Path(str(p[t]) + ".tmp.npy").rename(p[t])
        np.save(p["u8"], u8)
        np.save(p["meta"], meta)
        self.log(f"  bank {name}: {len(u8)} x {k} images ({time.perf_counter() - t0:.0f} s)")
        return self._load(name)

    def cxr(self, src: str, view: str, split: str | None = None) -> dict:
        """Bank of one view of every CXR row of ``src`` (optionally of one split); meta = row indices."""
        name = f"cxr-{src}-{view}" + (f"-{split}" if split else "")
        got = self._load(name)
        if got is not None:
            return got
        s = self.pools.cxr[src]
        rows = np.flatnonzero(s["split"] == split) if split else np.arange(len(s["split"]))
        if self.max_rows:
            rows = np.concatenate([rows[s["split"][rows] == sp][: self.max_rows] for sp in ("train", "val", "test")])
        if view == "clean":
            u8 = s["clean"][rows]
        else:
            rng = np.random.default_rng([self.seed, int(view[3:]), sum(map(ord, src))])
            u8 = np.stack([D.augment_cxr(s["base"][r], rng) for r in rows])
        return self._features(name, u8, rows, _all_orientations)

    def negatives(self, name: str, kinds: dict[str, int], split: str, cxr_rows, seed: int) -> dict:
        """Bank of drawn non-CXR images (``kinds``: kind -> count, as qg_pools.Pools.negative draws them, incl.
        their random quarter turn/inversion); meta = the group label 'not_cxr/<kind label>'."""
        got = self._load(name)
        if got is not None:
            return got
        rng = np.random.default_rng([self.seed, seed])
        labels, imgs = [], []
        for kind, n in kinds.items():
            for _ in range(n):
                label, u8 = self.pools.negative(kind, split, rng, cxr_rows)
                labels.append(f"not_cxr/{label}")
                imgs.append(u8)
        return self._features(name, np.stack(imgs), np.array(labels), _with_mirror)


def _all_orientations(u8: np.ndarray) -> np.ndarray:
    """(n, S, S) -> (n, 2, 5, S, S): [apply_class(u, c) for c in 0..4], then the same for the mirror."""
    out = []
    for m in (u8, u8[:, :, ::-1]):
        out.append(np.stack([np.rot90(m, c, axes=(1, 2)) for c in (0, 1, 2, 3)] + [255 - m], 1))
    return np.ascontiguousarray(np.stack(out, 1))


def _with_mirror(u8: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([u8, u8[:, :, ::-1]], 1))


def cxr_eval(bank: dict, tap: int, src: str, view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Evaluation rows of a CXR bank: (features, mirror features, true class, group 'src/view/class')."""
    f = np.asarray(bank[tap])
    n = len(f)
    x = f[:, 0].reshape(n * 5, -1)
    xm = f[:, 1][:, MIRROR5].reshape(n * 5, -1)
    y = np.tile(np.arange(5), n)
    vname = "clean" if view == "clean" else "augmented"
    g = np.array([f"{src}/{vname}/{c}" for c in D.CLASSES[:5]] * n)
    return x, xm, y, g


def neg_eval(bank: dict, tap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    f = np.asarray(bank[tap])
    return f[:, 0], f[:, 1], np.full(len(f), 5), np.asarray(bank["meta"])
