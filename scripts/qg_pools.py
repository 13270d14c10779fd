"""Image pools of the quality gate (used by scripts/train_quality_gate.py and scripts/eval_quality_gate.py):
CXRs with their patient-grouped splits, negatives of every kind with their file/block-grouped splits, the
training pool drawn once (2 processes) and the fixed evaluation sets."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import qg_data as D
import qg_real as R

from chestdx.inference.quality import CLASSES

NIH = ("nih-sample", "nih-fullres")
CLS_P = np.array([0.4, 0.15, 0.15, 0.15, 0.15])  # frontal, rot90, rot180, rot270, inverted for CXR draws
# negative kinds trained on (relative weights in the pool); the evaluation-only kinds are HELD_OUT
NEG_WEIGHTS = {"dicom": 1.0, "photo": 1.5, "text": 1.0, "synthetic": 1.0, "cxr_miss": 2.0, "mri": 1.5}
HELD_OUT = ("scene", "skimage", "faces", "nibabel")


def _norm(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    return (a - a.min()) / max(float(np.ptp(a)), 1e-6)


def _split_named(items: list[tuple[str, np.ndarray]], seed: int, key) -> dict[str, list[np.ndarray]]:
    """60/20/20 train/val/test split of named images, grouped by ``key(name)`` (file, or slice block)."""
    if not items:
        return {sp: [] for sp in ("train", "val", "test")}
    groups = np.array([key(n) for n, _ in items])
    split = D.patient_split(groups, seed, (0.6, 0.2, 0.2))
    return {sp: [a for (_, a), s in zip(items, split, strict=True) if s == sp] for sp in ("train", "val", "test")}


class Pools:
    """Everything samples are drawn from, with the patient-grouped (CXR) / file-grouped (DICOM) / slice-block-
    grouped (MRI) splits. ``wheels``: {"skimage", "nilearn", "nibabel"} -> downloaded wheel (or None)."""

    def __init__(self, data: Path, cache: Path, seed: int, wheels: dict[str, Path | None] | None = None):
        wheels = wheels or {}
        self.cxr = D.load_cxr_cache(data, cache)
        groups = {p: "nih" if p.startswith("nih:") else "kermany" for s in self.cxr.values() for p in s["patient"]}
        patients = np.array(sorted(groups))
        split = dict(zip(patients, D.patient_split(patients, seed), strict=True))
        for s in self.cxr.values():
            s["split"] = np.array([split[p] for p in s["patient"]])
        self.dicom = _split_named(R.pydicom_all_frames(), seed + 1, lambda n: n.split("#")[0])
        # T1/GM/WM maps of one slice block share a group: no near-duplicate slice crosses splits
        self.mri = _split_named(R.nilearn_mni(wheels.get("nilearn")), seed + 2, lambda n: n.split("/", 1)[1])
        self.photos = D.sklearn_photos() + [a for _, a in R.matplotlib_samples()]
        self.skimage = D.skimage_images(wheels.get("skimage"))
        self.faces = D.lfw_faces(wheels.get("skimage"))
        self.nibabel = [a for _, a in R.nibabel_images(wheels.get("nibabel"))]

    def describe(self) -> dict:
        return {"cxr": {s: len(v["patient"]) for s, v in self.cxr.items()},
                "dicom frames": {k: len(v) for k, v in self.dicom.items()},
                "mni slices": {k: len(v) for k, v in self.mri.items()}, "photos": len(self.photos),
                "skimage": len(self.skimage), "faces": len(self.faces), "nibabel slices": len(self.nibabel)}

    def held_out(self) -> list[str]:
        """Evaluation-only kinds whose images are available."""
        have = {"scene": True, "skimage": bool(self.skimage), "faces": bool(self.faces),
                "nibabel": bool(self.nibabel)}
        return [k for k in HELD_OUT if have[k]]

    def cxr_rows(self, sources, split: str | None) -> list[tuple[str, int]]:
        return [(s, i) for s in sources if s in self.cxr for i in np.flatnonzero(
            (self.cxr[s]["split"] == split) if split else np.ones(len(self.cxr[s]["split"]), bool))]

    def negative(self, kind: str, split: str, rng: np.random.Generator, cxr_rows) -> tuple[str, np.ndarray]:
        """(kind label, 64 px uint8) of one non-CXR image."""
        if kind in ("dicom", "mri"):
            pool = (self.dicom if kind == "dicom" else self.mri)[split]
            if not pool:
                return self.negative("synthetic", split, rng, cxr_rows)
            a = pool[int(rng.integers(len(pool)))]
            a = D.random_crop(a, rng, 0.6, 1.0) if rng.random() < 0.5 else a
            label = "dicom" if kind == "dicom" else "mni brain mri"
            return f"{label} {split}", D.finish_negative(a, rng)
        if kind == "photo":
            a = D._gray(D.random_crop(self.photos[int(rng.integers(len(self.photos)))], rng, 0.15, 1.0), rng)
            return "photo/sample image", D.finish_negative(a, rng)
        if kind == "text":
            return "text page", D.finish_negative(D.text_page(rng), rng)
        if kind == "synthetic":
            return "synthetic texture/shape", D.finish_negative(D.synthetic(rng), rng)
        if kind == "cxr_miss":
            s, i = cxr_rows[int(rng.integers(len(cxr_rows)))]
            label, a = D.cxr_miss(self.cxr[s]["base"][i], rng)
            return label, D.finish_negative(a, rng, 0.7)
        if kind == "skimage":
            a = self.skimage[int(rng.integers(len(self.skimage)))][1]
            a = D._gray(D.random_crop(a, rng, 0.4, 1.0) if rng.random() < 0.7 else a, rng)
            return "skimage image (held out)", D.finish_negative(a, rng, 0.5)
        if kind == "faces":
            a = self.faces[int(rng.integers(len(self.faces)))]
            return "lfw face (held out)", D.finish_negative(_norm(a), rng, 0.5)
        if kind == "scene":
            return "synthetic scene (held out)", D.finish_negative(D.scene(rng), rng, 0.5)
        if kind == "nibabel":
            a = self.nibabel[int(rng.integers(len(self.nibabel)))]
            return "nibabel mri/epi (held out)", D.finish_negative(a, rng, 0.5)
        raise ValueError(kind)


_POOLS: Pools | None = None  # shared with forked pool workers


def _draw(job: tuple[tuple[str, ...], str, int, int]) -> np.ndarray:
    """One chunk of training images: CXR source(s) (upright, augmented) or a negative kind; seeded per chunk."""
    what, kind, seed, n = job
    pools = _POOLS
    rng = np.random.default_rng(seed)
    rows = pools.cxr_rows(list(what), "train")
    if kind == "cxr":
        return np.stack([D.augment_cxr(pools.cxr[s]["base"][j], rng) for s, j in
                         (rows[int(k)] for k in rng.integers(len(rows), size=n))])
    return np.stack([pools.negative(kind, "train", rng, rows)[1] for _ in range(n)])


def make_pool(pools: Pools, sources, n_per_source: int, seed: int, log, neg_frac: float,
              weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Training images drawn once (2 processes): ``n_per_source`` upright augmented CXRs per source and
    ``neg_frac`` x as many negatives in total -> (u8 (N,64,64), is_cxr (N,)). Orientations are drawn per epoch."""
    global _POOLS
    import multiprocessing as mp

    _POOLS = pools
    srcs = [NIH if s == "nih" else (s,) for s in sources]
    allsrc = tuple(x for s in srcs for x in s)
    chunk = 500
    jobs = [(s, "cxr", c, chunk) for s in srcs for c in range(n_per_source // chunk)]
    n_neg = neg_frac * n_per_source * len(srcs)
    wsum = sum(weights.values())
    jobs += [(allsrc, k, 0, chunk) for k, w in weights.items() for _ in range(max(1, int(n_neg * w / wsum / chunk)))]
    jobs = [(w, k, int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), n) for i, (w, k, _, n) in
            enumerate(jobs)]
    t = time.perf_counter()
    with mp.get_context("fork").Pool(2) as p:
        parts = p.map(_draw, jobs)
    x = np.concatenate(parts)
    is_cxr = np.concatenate([np.full(len(part), j[1] == "cxr") for part, j in zip(parts, jobs, strict=True)])
    log(f"  pool: {int(is_cxr.sum())} CXR + {int((~is_cxr).sum())} negatives ({time.perf_counter() - t:.0f} s)")
    return x, is_cxr


def eval_set(pools: Pools, sources, split: str | None, seed: int, negatives: dict[str, int],
             aug_per_image: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed evaluation images: every CXR clean (exact gate input) and augmented, each in all 5 orientations/
    inversions, plus negatives -> (u8 (N,64,64), true class (N,), group 'source/view/class' (N,))."""
    rng = np.random.default_rng(seed)
    xs, ys, gs = [], [], []
    for s, j in pools.cxr_rows(sources, split):
        views = [("clean", pools.cxr[s]["clean"][j])]
        views += [("augmented", D.augment_cxr(pools.cxr[s]["base"][j], rng)) for _ in range(aug_per_image)]
        for view, u8 in views:
            for c in range(5):
                xs.append(D.apply_class(u8, c))
                ys.append(c)
                gs.append(f"{s}/{view}/{CLASSES[c]}")
    rows = pools.cxr_rows(sources, split) or pools.cxr_rows(list(pools.cxr), split)
    for kind, n in negatives.items():
        for _ in range(n):
            label, u8 = pools.negative(kind, split or "test", rng, rows)
            xs.append(u8)
            ys.append(5)
            gs.append(f"not_cxr/{label}")
    return np.stack(xs), np.array(ys), np.array(gs)


def test_examples(pools: Pools) -> list[str]:
    """A few held-out (test-split) CXRs by path under the data root, for tests/test_quality_gate.py."""
    out = []
    for src, n in (("nih-sample", 10), ("nih-fullres", 2), ("kermany", 6)):
        if src in pools.cxr:
            names = pools.cxr[src]["name"][pools.cxr[src]["split"] == "test"]
            out += [str(x) for x in names[np.linspace(0, len(names) - 1, n).astype(int)]]
    return out
