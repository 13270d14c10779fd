"""Synthetic chest-like phantoms with planted findings and known boxes (offline demo, tests).

SYNTHETIC DATA, NOT REAL PATIENTS. Every table row carries ``source="phantom-synthetic"`` and every
file name starts with ``phantom_``. A phantom is a cartoon: dark background, bright body outline, two
dark lung fields with rib and vessel texture, heart, spine, clavicles and noise. Findings:

- Nodule: small bright round blob inside a lung (upper/mid zone).
- Mass: larger lobulated bright blob inside a lung.
- Effusion: opaque band with a meniscus at one lung base (blunts the costophrenic angle).
- Cardiomegaly: heart about 1.35-1.55x wider (cardiothoracic ratio ~0.6 instead of ~0.4).
- Pneumothorax: dark rim without texture at one lung apex, bounded by a thin pleural line.

Rendering is vectorized over images; every random number comes from ``seed`` (patients, images and
noise use separate streams keyed by index, so ``generate_phantom(n)`` is a prefix of a larger ``n``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chestdx.labels import canonical_label

SOURCE = "phantom-synthetic"
FILE_PREFIX = "phantom_"
SUPPORTED_FINDINGS: tuple[str, ...] = ("Effusion", "Nodule", "Cardiomegaly", "Pneumothorax", "Mass")
DEFAULT_LABELS: tuple[str, ...] = ("Effusion", "Nodule", "Cardiomegaly", "Pneumothorax")
BOX_COLUMNS = ["image_index", "image_id", "label", "x", "y", "w", "h"]
NIH_BOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],Unnamed: 6,Unnamed: 7,Unnamed: 8"

_CHUNK = 64  # images rendered at once (bounds memory; results do not depend on it)
_IMG_COLS = 40  # uniforms drawn per image (fixed so streams stay index-aligned)
_PAT_COLS = 16  # uniforms drawn per patient


@dataclass
class PhantomSet:
    """Generated phantoms. ``boxes`` columns: image_index, image_id, label, x, y, w, h (pixels of
    ``images``, top-left origin, NIH convention)."""

    images: np.ndarray  # uint8 (n, size, size)
    labels: np.ndarray  # float32 (n, len(label_names)), 0/1
    label_names: tuple[str, ...]
    boxes: pd.DataFrame
    image_ids: list[str]  # file names, e.g. "phantom_000007.png"
    patient_ids: list[str]  # "P0001", ~2 images per patient
    ages: np.ndarray  # float32 years
    sexes: list[str]  # "M" / "F"
    views: list[str]  # "PA" / "AP"
    seed: int = 0
    size: int = 128

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def frame(self) -> pd.DataFrame:
        """Index-like table: image_id, patient_id, <label columns>, age, sex, view, source (no path)."""
        df = pd.DataFrame({"image_id": self.image_ids, "patient_id": self.patient_ids})
        for j, name in enumerate(self.label_names):
            df[name] = self.labels[:, j].astype(float)
        df["age"] = self.ages.astype(float)
        df["sex"] = self.sexes
        df["view"] = self.views
        df["source"] = SOURCE
        return df


def generate_phantom(
    n: int,
    size: int = 128,
    seed: int = 0,
    labels: Sequence[str] = DEFAULT_LABELS,
    prevalence: float = 0.35,
    plant_findings: bool = True,
) -> PhantomSet:
    """Generate ``n`` phantoms of ``size`` x ``size`` pixels; each label present with ``prevalence``,
    independently. ``plant_findings=False`` renders the very same images without any finding (labels
    all 0, no boxes): a control for tests."""
    names = _check_labels(labels)
    if n < 0 or size < 32 or not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"need n >= 0, size >= 32 and 0 <= prevalence <= 1, got {n}, {size}, {prevalence}")
    pat_of_img, n_pat = _assign_patients(n, seed)
    pat_u = np.random.default_rng([seed, 2]).random((max(n_pat, 1), _PAT_COLS))
    img_u = np.random.default_rng([seed, 1]).random((n, _IMG_COLS))
    present = np.zeros((n, len(SUPPORTED_FINDINGS)), dtype=bool)
    if plant_findings:
        for name in names:
            k = SUPPORTED_FINDINGS.index(name)
            present[:, k] = img_u[:, k] < prevalence

    images = np.empty((n, size, size), dtype=np.uint8)
    box_rows: list[tuple[int, str, float, float, float, float]] = []
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        params = _params(img_u[start:stop], pat_u[pat_of_img[start:stop]], present[start:stop])
        rngs = [np.random.default_rng([seed, 3, i]) for i in range(start, stop)]
        img, masks = _render(params, size, rngs)
        images[start:stop] = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
        for name in names:
            k = SUPPORTED_FINDINGS.index(name)
            if not present[start:stop, k].any():
                continue
            boxes = _bboxes(masks[name])
            for i in np.flatnonzero(present[start:stop, k]):
                if boxes[i] is None:  # finding fell outside the image: it is not there
                    present[start + i, k] = False
                    continue
                box_rows.append((start + int(i), name, *boxes[i]))

    image_ids = [f"{FILE_PREFIX}{i:06d}.png" for i in range(n)]
    box_rows.sort(key=lambda r: (r[0], names.index(r[1])))
    boxes_df = pd.DataFrame(
        [(i, image_ids[i], lab, x, y, w, h) for i, lab, x, y, w, h in box_rows], columns=BOX_COLUMNS
    ).astype({"image_index": int, "x": float, "y": float, "w": float, "h": float})
    label_arr = present[:, [SUPPORTED_FINDINGS.index(m) for m in names]].astype(np.float32)
    ages = np.round(20 + 65 * pat_u[pat_of_img, 0]).astype(np.float32) if n else np.zeros(0, np.float32)
    return PhantomSet(
        images=images,
        labels=label_arr,
        label_names=names,
        boxes=boxes_df,
        image_ids=image_ids,
        patient_ids=[f"P{p + 1:04d}" for p in pat_of_img],
        ages=ages,
        sexes=["M" if pat_u[p, 1] < 0.5 else "F" for p in pat_of_img],
        views=["PA" if u < 0.7 else "AP" for u in img_u[:, 39]],
        seed=seed,
        size=size,
    )


def write_phantom_dataset(
    out_dir: str | PathLike[str],
    n: int = 200,
    size: int = 256,
    seed: int = 0,
    labels: Sequence[str] = DEFAULT_LABELS,
    prevalence: float = 0.35,
) -> Path:
    """Write ``images/phantom_*.png``, ``labels.csv`` (path, patient_id, age, sex, view, <labels>,
    source), ``boxes.csv`` (NIH BBox_List_2017 layout, pixels of the written images) and README.txt.
    Returns ``out_dir``."""
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for stale in img_dir.glob(f"{FILE_PREFIX}*.png"):  # only our own files, from an earlier run
        stale.unlink()
    ph = generate_phantom(n, size=size, seed=seed, labels=labels, prevalence=prevalence)
    for image_id, img in zip(ph.image_ids, ph.images, strict=True):
        Image.fromarray(img).save(img_dir / image_id, compress_level=1)

    table = pd.DataFrame(
        {
            "path": [f"images/{i}" for i in ph.image_ids],
            "patient_id": ph.patient_ids,
            "age": ph.ages.astype(int),
            "sex": ph.sexes,
            "view": ph.views,
        }
    )
    for j, name in enumerate(ph.label_names):
        table[name] = ph.labels[:, j].astype(int)
    table["source"] = SOURCE
    table.to_csv(out / "labels.csv", index=False)
    write_nih_boxes(ph.boxes, out / "boxes.csv")
    (out / "README.txt").write_text(_readme(ph, prevalence), encoding="utf-8")
    return out


def write_nih_boxes(boxes: pd.DataFrame, path: str | PathLike[str]) -> Path:
    """Write ``boxes`` (image_id, label, x, y, w, h) in the exact NIH BBox_List_2017.csv layout."""
    lines = [NIH_BOX_HEADER]
    for r in boxes.itertuples(index=False):
        lines.append(f"{r.image_id},{r.label},{r.x:g},{r.y:g},{r.w:g},{r.h:g},,,")
    out = Path(path)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------- internals


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        labels = (labels,)
    names = tuple(canonical_label(x) for x in labels)
    unknown = [x for x in names if x not in SUPPORTED_FINDINGS]
    if unknown:
        raise ValueError(f"phantom cannot plant {unknown}; supported: {', '.join(SUPPORTED_FINDINGS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate labels in {list(labels)}")
    return names


def _assign_patients(n: int, seed: int) -> tuple[np.ndarray, int]:
    """1-3 images per patient (mean 2), in order: image i -> patient index."""
    counts = 1 + np.searchsorted([0.3, 0.7], np.random.default_rng([seed, 4]).random(max(n, 1)))
    pat = np.repeat(np.arange(counts.size), counts)[:n]
    return pat, int(pat[-1]) + 1 if n else 0


def _col(u: np.ndarray, j: int, lo: float, hi: float) -> np.ndarray:
    return (lo + (hi - lo) * u[:, j]).astype(np.float32)[:, None, None]


def _params(iu: np.ndarray, pu: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image parameters (shape (c, 1, 1)) from uniforms: anatomy per patient, jitter per image."""
    f = {name: present[:, k].astype(np.float32)[:, None, None] for k, name in enumerate(SUPPORTED_FINDINGS)}
    scale = _col(pu, 2, 0.94, 1.04) * _col(iu, 5, 0.98, 1.02)
    p = {
        "scale": scale,
        "dx": _col(iu, 6, -0.02, 0.02),
        "dy": _col(iu, 7, -0.02, 0.02),
        "tissue": _col(pu, 3, 0.50, 0.60) + _col(iu, 8, -0.03, 0.03),
        "lung": _col(pu, 4, 0.15, 0.24) + _col(iu, 9, -0.02, 0.02),
        "lung_sep": _col(pu, 5, 0.17, 0.20),
        "lung_hw": _col(pu, 6, 0.125, 0.145),
        "lung_hh": _col(pu, 7, 0.27, 0.31),
        "heart_hw": _col(pu, 8, 0.12, 0.14) * (1 + f["Cardiomegaly"] * _col(iu, 10, 0.35, 0.55)),
        "heart_hh": _col(pu, 9, 0.12, 0.14) * (1 + f["Cardiomegaly"] * _col(iu, 11, 0.08, 0.16)),
        "rib_period": _col(pu, 10, 0.065, 0.085),
        "rib_phase": _col(pu, 11, 0.0, 1.0),
        "noise": _col(iu, 12, 0.012, 0.028),
        # findings: side (+1 = image right), position, size
        "nod_side": np.where(iu[:, 13] < 0.5, -1.0, 1.0).astype(np.float32)[:, None, None],
        "nod_xi": _col(iu, 14, -0.55, 0.55),
        "nod_eta": _col(iu, 15, -0.60, 0.10),
        "nod_r": _col(iu, 16, 0.022, 0.036),
        "eff_side": np.where(iu[:, 17] < 0.5, -1.0, 1.0).astype(np.float32)[:, None, None],
        "eff_frac": _col(iu, 18, 0.22, 0.40),
        "ptx_side": np.where(iu[:, 19] < 0.5, -1.0, 1.0).astype(np.float32)[:, None, None],
        "ptx_shrink": _col(iu, 20, 0.70, 0.82),
        "mass_side": np.where(iu[:, 21] < 0.5, -1.0, 1.0).astype(np.float32)[:, None, None],
        "mass_xi": _col(iu, 22, -0.35, 0.35),
        "mass_eta": _col(iu, 23, -0.45, 0.05),
        "mass_r": _col(iu, 24, 0.055, 0.075),
        "mass_phi": _col(iu, 25, 0.0, 2 * np.pi),
    }
    p.update({f"has_{k}": v for k, v in f.items()})
    return p


def _soft(signed: np.ndarray, px: float) -> np.ndarray:
    """Signed distance-like value (>0 inside, in image units) -> mask with a ~1.5 px soft edge."""
    return np.clip(0.5 + signed * (px / 1.5), 0.0, 1.0)


def _inside(u, v, cx, cy, a, b, power: float = 2.0) -> np.ndarray:
    """Superellipse "depth": > 0 inside, < 0 outside, ~ (1 - radius) near the boundary.

    Uses (1 - r**p) / p, so the powers are taken on the separable (c, 1, S) / (c, S, 1) terms only."""
    level = np.abs((u - cx) / a) ** power + np.abs((v - cy) / b) ** power
    return (1.0 - level) * (1.0 / power)


def _lowpass_noise(rngs: list[np.random.Generator], size: int, coarse: int = 10) -> np.ndarray:
    """Smooth noise: coarse Gaussian grid, bilinearly upsampled (two matrix products)."""
    small = np.stack([r.standard_normal((coarse, coarse), dtype=np.float32) for r in rngs])
    pos = np.clip((np.arange(size, dtype=np.float32) + 0.5) * coarse / size - 0.5, 0, coarse - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, coarse - 1)
    w = pos - lo
    m = np.zeros((size, coarse), dtype=np.float32)
    m[np.arange(size), lo] += 1 - w
    m[np.arange(size), hi] += w
    return m @ small @ m.T


def _render(
    p: dict[str, np.ndarray], size: int, rngs: list[np.random.Generator]
) -> tuple[np.ndarray, dict[str, np.ndarray | None]]:
    """Render a chunk: float32 images (c, S, S) (clip later) and finding masks by label (zero where absent;
    None when absent from the whole chunk)."""
    px = float(size)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    # patient-centred coordinates (jitter = shift + zoom about the image centre)
    u = (grid[None, None, :] - 0.5 - p["dx"]) / p["scale"] + 0.5
    v = (grid[None, :, None] - 0.5 - p["dy"]) / p["scale"] + 0.5
    pxs = px * p["scale"]  # pixels per unit of patient coordinates

    bg = 0.04
    body_d = _inside(u, v, 0.5, 0.60, 0.44, 0.60, power=2.6)
    body = _soft(body_d, pxs * 0.44)
    outline = np.exp(-(((body_d - 0.035) / 0.03) ** 2))  # bright skin line / soft-tissue rim
    img = bg + body * (p["tissue"] - bg) + body * outline * 0.18

    # lungs: superellipses cut by diaphragm domes; left/right = image left/right
    lung_cy = np.float32(0.49)
    lungs, lung_masks = np.zeros_like(img), {}
    for side in (-1.0, 1.0):
        cx = 0.5 + side * p["lung_sep"]
        d = _inside(u, v, cx, lung_cy, p["lung_hw"], p["lung_hh"], power=2.3)
        q = (u - cx) / p["lung_hw"]
        dome = lung_cy + p["lung_hh"] * (0.92 - 0.28 * np.clip(1.0 - q**2, 0.0, 1.0)) + (0.015 if side > 0 else 0)
        m = _soft(d, pxs * p["lung_hw"]) * _soft(dome - v, pxs)
        lung_masks[side] = m
        lungs = np.maximum(lungs, m)

    rib_phase = (v + 0.55 * (u - 0.5) ** 2) / p["rib_period"] + p["rib_phase"]
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * rib_phase)) ** 2
    ribs = ribs * ribs * ribs  # narrow bright bands
    vessels = _lowpass_noise(rngs, size) * 0.035
    hila = np.exp(-(((v - 0.52) / 0.09) ** 2)) * sum(
        np.exp(-(((u - 0.5 - s * (p["lung_sep"] - 0.06)) / 0.06) ** 2)) for s in (-1.0, 1.0)
    )
    texture = ribs * 0.11 + vessels + hila * 0.10
    lung_img = p["lung"] + texture
    masks: dict[str, np.ndarray | None] = {}

    # pneumothorax: apical rim between the lung edge and a shrunken (collapsed) lung, no texture
    side = p["ptx_side"]
    cx = 0.5 + side * p["lung_sep"]
    anchor_x, anchor_y = cx - side * 0.25 * p["lung_hw"], lung_cy + 0.55 * p["lung_hh"]
    k = p["ptx_shrink"]
    out_col = -_inside(
        u,
        v,
        anchor_x + (cx - anchor_x) * k,
        anchor_y + (lung_cy - anchor_y) * k,
        p["lung_hw"] * k,
        p["lung_hh"] * k,
        power=2.3,
    )  # > 0 outside the collapsed lung
    side_mask = np.where(side > 0, lung_masks[1.0], lung_masks[-1.0])
    upper = _soft(lung_cy + 0.25 * p["lung_hh"] - v, pxs)
    ptx = side_mask * upper * _soft(out_col, pxs * p["lung_hw"] * k) * p["has_Pneumothorax"]
    pleural_line = side_mask * upper * np.exp(-((out_col * px * p["lung_hw"] * k / 0.8) ** 2))
    lung_img = lung_img * (1 - ptx) + ptx * (p["lung"] - 0.09) + pleural_line * p["has_Pneumothorax"] * 0.12
    masks["Pneumothorax"] = ptx

    img = img * (1 - lungs) + lungs * lung_img

    # effusion: opaque fluid at one lung base, meniscus rising laterally
    side = p["eff_side"]
    cx = 0.5 + side * p["lung_sep"]
    q_lat = np.clip((u - cx) * side / p["lung_hw"], 0.0, 1.0)
    level = lung_cy + p["lung_hh"] * (1.0 - 2.0 * p["eff_frac"]) - q_lat**2 * p["lung_hh"] * p["eff_frac"] * 0.8
    side_mask = np.where(side > 0, lung_masks[1.0], lung_masks[-1.0])
    eff = side_mask * np.clip(0.5 + (v - level) * pxs / 3.0, 0.0, 1.0) * p["has_Effusion"]
    img = img * (1 - eff) + eff * (p["tissue"] * 0.95)
    masks["Effusion"] = eff

    # heart (enlarged for cardiomegaly), then spine and clavicles over everything
    heart_cx = 0.5 + 0.035 + 0.25 * (p["heart_hw"] - 0.13)
    heart_cy = lung_cy + p["lung_hh"] * 0.95 - p["heart_hh"] * 0.95
    heart = _soft(_inside(u, v, heart_cx, heart_cy, p["heart_hw"], p["heart_hh"]), pxs * 0.1)
    heart = heart * _soft(lung_cy + p["lung_hh"] * 0.95 - v, pxs) * body
    img = img * (1 - heart) + heart * (p["tissue"] + 0.05)
    masks["Cardiomegaly"] = heart * p["has_Cardiomegaly"]

    vert = 0.5 + 0.5 * np.cos(2 * np.pi * v / 0.045)
    spine = _soft(0.035 - np.abs(u - 0.5), pxs) * body * _soft(v - 0.08, pxs)
    img = img + spine * (0.10 + 0.05 * vert)
    d = np.abs(u - 0.5)
    clav_v = 0.19 - 0.10 * (d - 0.05)
    clav = np.exp(-(((v - clav_v) / 0.012) ** 2)) * _soft(d - 0.04, pxs) * _soft(0.30 - d, pxs)
    img = img + clav * 0.14

    # nodule and mass: bright blobs inside a lung
    for name, prefix in (("Nodule", "nod"), ("Mass", "mass")):
        if not p[f"has_{name}"].any():
            masks[name] = None
            continue
        side = p[f"{prefix}_side"]
        bx = 0.5 + side * p["lung_sep"] + p[f"{prefix}_xi"] * p["lung_hw"]
        by = lung_cy + p[f"{prefix}_eta"] * p["lung_hh"]
        r = p[f"{prefix}_r"]
        if name == "Mass":
            ang = np.arctan2(v - by, u - bx)
            r = r * (1 + 0.15 * np.cos(3 * ang + p["mass_phi"]))
        dist = np.sqrt((u - bx) ** 2 + (v - by) ** 2) / r
        blob = np.sqrt(np.clip(1.0 - dist**2, 0.0, 1.0)) * p[f"has_{name}"]
        img = img + blob * (0.30 if name == "Nodule" else 0.24)
        masks[name] = blob

    img = img + np.stack([r.standard_normal((size, size), dtype=np.float32) for r in rngs]) * p["noise"]
    return img.astype(np.float32), masks


def _bboxes(mask: np.ndarray, thr: float = 0.1) -> list[tuple[float, float, float, float] | None]:
    """Bounding box (x, y, w, h) in pixels of ``mask > thr`` for each image, None when empty."""
    m = mask > thr
    rows, cols = m.any(axis=2), m.any(axis=1)
    out: list[tuple[float, float, float, float] | None] = []
    for r, c in zip(rows, cols, strict=True):
        if not r.any():
            out.append(None)
            continue
        y0, y1 = int(np.argmax(r)), len(r) - int(np.argmax(r[::-1]))
        x0, x1 = int(np.argmax(c)), len(c) - int(np.argmax(c[::-1]))
        out.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
    return out


def _readme(ph: PhantomSet, prevalence: float) -> str:
    counts = ", ".join(f"{n}: {int(ph.labels[:, j].sum())}" for j, n in enumerate(ph.label_names))
    return f"""SYNTHETIC PHANTOM DATA - NOT REAL PATIENTS, NOT MEDICAL IMAGES, NOT FOR CLINICAL USE.

Generated by chestdx.data.phantom (cartoon chest-like images with planted findings) for offline demos
and tests with known ground truth. Nothing here says anything about real chest X-rays.

source: {SOURCE}
images: {len(ph)} ({ph.size}x{ph.size} 8-bit grayscale PNG, images/{FILE_PREFIX}*.png)
patients: {len(set(ph.patient_ids))} (ids P0001..., about 2 images each; anatomy shared per patient)
seed: {ph.seed}
labels: {", ".join(ph.label_names)} (each present independently with probability {prevalence})
positives: {counts}
box_reference_size: {ph.size}
  boxes.csv uses the NIH BBox_List_2017.csv layout (Image Index, Finding Label, x, y, w, h) with
  coordinates in pixels of the {ph.size}x{ph.size} images written here (NIH's own boxes refer to
  1024x1024 originals).
files: labels.csv (path relative to this folder, patient_id, age, sex, view, one 0/1 column per
  label, source), boxes.csv, images/
"""
