"""Data for the quality gate (used by scripts/train_quality_gate.py): CXR cache, augmentation, negatives.

Everything is offline and seeded. CXRs are decoded once with ``chestdx.io.read_image`` and kept as
``to_uint8_square`` arrays: ``base`` (128 px, the augmentation source) and ``clean`` (64 px, exactly what the
gate sees for the untouched file). Negatives made here (not a chest X-ray): scikit-learn's sample photos,
scikit-image's bundled images and faces (evaluation-only), rendered text, synthetic textures/shapes/scenes and
CXR crops that miss the lungs; the real medical and photo negatives read from packages are in qg_real.py.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from chestdx.data.transforms import to_uint8_square

SIZE = 64  # gate input
BASE = 128  # augmentation source
HALF_CROPS = [True]  # include "one half of a CXR" negatives (set by the training script)
REFLECT_PAD = [0.0]  # share of zoom-outs padded by reflection instead of a flat border (set by the training script)
GEOM = {"crop_min": 0.72, "pad_p": 0.35, "pad_max": 0.2}  # crop keeps >= crop_min of a side; zoom-out pads
CLASSES = ("frontal", "rot90", "rot180", "rot270", "inverted", "not_cxr")
WORDS = ("PA AP L R LEFT RIGHT PORTABLE SUPINE ERECT UPRIGHT CHEST 1 2 3 4 5 6 7 8 9 0 mAs kV DR CR ID "
         "patient report radiograph findings impression normal heart lungs no acute date time").split()
_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype(_FONT, size)
    except OSError:
        return ImageFont.load_default(size)


# -- CXR cache -------------------------------------------------------------------------------------------------
def _cxr_files(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """source -> [(path, patient_id)]; NIH patients are the file-name prefix, Kermany's its naming scheme."""
    from chestdx.data.folders import patient_from_filename

    out: dict[str, list[tuple[Path, str]]] = {}
    for src in ("nih-sample", "nih-fullres"):
        files = sorted((root / src / "images").glob("*.png"))
        out[src] = [(f, "nih:" + f.name.split("_")[0]) for f in files]
    files = sorted((root / "kermany" / "train").rglob("*.jpeg"))
    out["kermany"] = [(f, "kermany:" + (patient_from_filename(f.name) or f.name)) for f in files]
    return {k: v for k, v in out.items() if v}


def load_cxr_cache(root: Path, cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """Decode every CXR once (cached as npz under ``cache``): base (N,BASE,BASE), clean (N,SIZE,SIZE), patient, name."""
    from chestdx.io import read_image

    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for src, files in _cxr_files(root).items():
        tag = "" if (BASE, SIZE) == (128, 64) else f"-{BASE}-{SIZE}"  # v3 gate: other sizes, own files
        f = cache / f"{src}-{len(files)}{tag}.npz"
        if not f.exists():
            base, clean = [], []
            for path, _ in files:
                img = read_image(path)
                base.append(to_uint8_square(img, BASE))
                clean.append(to_uint8_square(img, SIZE))
            np.savez(f, base=np.stack(base), clean=np.stack(clean), patient=np.array([p for _, p in files]),
                     name=np.array([str(p.relative_to(root)) for p, _ in files]))
        with np.load(f, allow_pickle=False) as z:
            out[src] = {k: z[k] for k in z.files}
    return out


def patient_split(patients: np.ndarray, seed: int, frac=(0.7, 0.15, 0.15)) -> np.ndarray:
    """'train'/'val'/'test' per row, grouped by patient (no patient in two splits)."""
    uniq = np.unique(patients)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n_tr, n_va = int(frac[0] * len(uniq)), int(frac[1] * len(uniq))
    which = np.empty(len(uniq), dtype=object)
    which[order[:n_tr]], which[order[n_tr:n_tr + n_va]], which[order[n_tr + n_va:]] = "train", "val", "test"
    lookup = dict(zip(uniq, which, strict=True))
    return np.array([lookup[p] for p in patients])


# -- augmentation ----------------------------------------------------------------------------------------------
def _pil(a01: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(a01 * 255), 0, 255).astype(np.uint8))


def photometric(u8: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Gamma, contrast/brightness, blur, noise and JPEG on a uint8 image (any size) -> uint8 same size."""
    x = u8.astype(np.float32) / 255
    if rng.random() < 0.8 * strength:
        x = x ** float(np.exp(rng.normal(0, 0.35)))
    if rng.random() < 0.7 * strength:
        lo, hi = rng.uniform(0, 0.25), rng.uniform(0.75, 1.0)
        x = lo + (hi - lo) * x + rng.normal(0, 0.05)
    if rng.random() < 0.1 * strength:  # histogram equalisation-like look
        ranks = np.argsort(np.argsort(x.ravel())).reshape(x.shape)
        x = 0.5 * x + 0.5 * ranks / ranks.size
    im = _pil(np.clip(x, 0, 1))
    if rng.random() < 0.3 * strength:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5)) * im.width / SIZE))
    if rng.random() < 0.15 * strength:
        im = im.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.integers(50, 200))))
    x = np.asarray(im, np.float32) / 255
    if rng.random() < 0.3 * strength:
        x = x + rng.normal(0, rng.uniform(0.005, 0.04), x.shape)
    out = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    if rng.random() < 0.3 * strength:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(15, 85)))
        out = np.asarray(Image.open(buf).convert("L"))
    return out


def _draw_marks(im: Image.Image, rng: np.random.Generator) -> None:
    """Burned-in text and markers (L/R letters, labels, rulers, boxes) in white or black."""
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 4))):
        x, y = int(rng.integers(0, im.width - 10)), int(rng.integers(0, im.height - 8))
        fill = int(rng.choice([255, 240, 0, 20]))
        if rng.random() < 0.7:
            text = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
            d.text((x, y), text, fill=fill, font=font(int(rng.integers(6, 20))))
        else:
            w, h = int(rng.integers(3, 20)), int(rng.integers(3, 20))
            d.rectangle([x, y, x + w, y + h], fill=fill)


def augment_cxr(base: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """An upright frontal CXR as another hospital might send it: crop/zoom/aspect/pad, tilt +-10 degrees,
    collimation, burned-in text, photometric changes, mirror. 128 px uint8 -> 64 px uint8."""
    s = base.shape[0]
    im = Image.fromarray(base)
    if rng.random() < 0.8 * strength:  # crop: each side keeps 72-100% by default (changes aspect and zoom)
        cw, ch = (int(s * rng.uniform(GEOM["crop_min"], 1.0)) for _ in range(2))
        x0, y0 = int(rng.integers(0, s - cw + 1)), int(rng.integers(0, s - ch + 1))
        im = im.crop((x0, y0, x0 + cw, y0 + ch))
    border = int(rng.choice([0, 0, 255, int(rng.integers(0, 256))]))
    if rng.random() < GEOM["pad_p"] * strength:  # zoom out / letterbox: pad each side 0-20% by default
        w, h = im.size
        pads = [int(rng.uniform(0, GEOM["pad_max"]) * (w if i % 2 == 0 else h)) for i in range(4)]
        if rng.random() < REFLECT_PAD[0]:  # more "body" around the thorax (wider field, e.g. pediatric films)
            a = np.pad(np.asarray(im), ((pads[1], pads[3]), (pads[0], pads[2])), mode="reflect")
            im = Image.fromarray(a).filter(ImageFilter.GaussianBlur(0.5))
        else:
            canvas = Image.new("L", (w + pads[0] + pads[2], h + pads[1] + pads[3]), border)
            canvas.paste(im, (pads[0], pads[1]))
            im = canvas
    if rng.random() < 0.6 * strength:
        im = im.rotate(float(rng.uniform(-10, 10)), Image.Resampling.BILINEAR, fillcolor=border)
    if rng.random() < 0.25 * strength:  # collimation: bars on some sides
        d = ImageDraw.Draw(im)
        fill = int(rng.choice([0, 255, int(rng.integers(0, 256))]))
        w, h = im.size
        for side in range(4):
            if rng.random() < 0.5:
                f = rng.uniform(0.02, 0.12)
                box = [(0, 0, f * w, h), (0, 0, w, f * h), ((1 - f) * w, 0, w, h), (0, (1 - f) * h, w, h)][side]
                d.rectangle(box, fill=fill)
    if rng.random() < 0.4 * strength:
        _draw_marks(im, rng)
    out = photometric(np.asarray(im), rng, strength)
    out = to_uint8_square(out.astype(np.float32) / 255, SIZE)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def apply_class(u8: np.ndarray, cls: int) -> np.ndarray:
    """Turn an upright image into class ``cls`` (0 frontal, 1-3 np.rot90 k=1..3, 4 inverted)."""
    if 1 <= cls <= 3:
        return np.ascontiguousarray(np.rot90(u8, cls))
    if cls == 4:
        return 255 - u8
    return u8


# -- negatives (not a chest X-ray) -----------------------------------------------------------------------------
def _norm01(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def sklearn_photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(im, np.float32) / 255 for im in load_sample_images().images]


def skimage_images(wheel: Path | None) -> list[tuple[str, np.ndarray]]:
    """scikit-image's bundled sample images (installed package, or read straight from a downloaded wheel)."""
    names: list[tuple[str, bytes]] = []
    try:
        import skimage

        d = Path(skimage.__file__).parent / "data"
        names = [(p.name, p.read_bytes()) for p in sorted(d.glob("*")) if p.suffix in (".png", ".jpg")]
    except ImportError:
        if wheel is not None and wheel.exists():
            with zipfile.ZipFile(wheel) as z:
                names = [(Path(n).name, z.read(n)) for n in sorted(z.namelist())
                         if re.match(r"skimage/data/[^/]+\.(png|jpg)$", n)]
    out = []
    for name, data in names:
        im = Image.open(io.BytesIO(data))
        if min(im.size) >= 32 and "chessboard" not in name:
            out.append((name, np.asarray(im.convert("RGB"), np.float32) / 255))
    return out


def lfw_faces(wheel: Path | None) -> list[np.ndarray]:
    """The 200 small face crops (25 x 25) bundled with scikit-image as ``lfw_subset.npy``."""
    try:
        import skimage

        return list(np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy"))
    except ImportError:
        if wheel is None or not wheel.exists():
            return []
        with zipfile.ZipFile(wheel) as z:
            return list(np.load(io.BytesIO(z.read("skimage/data/lfw_subset.npy"))))


def _gray(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb
    w = rng.dirichlet([2, 2, 2])
    return np.clip(rgb[..., :3] @ w, 0, 1).astype(np.float32)


def random_crop(a: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    h, w = a.shape[:2]
    ch, cw = max(8, int(h * rng.uniform(lo, hi))), max(8, int(w * rng.uniform(lo, hi)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return a[y:y + ch, x:x + cw]


def text_page(rng: np.random.Generator, size: int = BASE) -> np.ndarray:
    bg, fg = (int(rng.integers(200, 256)), int(rng.integers(0, 80)))
    if rng.random() < 0.3:
        bg, fg = fg, bg
    im = Image.new("L", (size, size), bg)
    d = ImageDraw.Draw(im)
    fnt = font(int(rng.integers(6, 18)))
    y = int(rng.integers(0, 15))
    while y < size:
        if rng.random() < 0.15:
            d.line([(0, y), (size, y)], fill=fg, width=1)
        d.text((int(rng.integers(0, 20)), y), " ".join(rng.choice(WORDS, int(rng.integers(2, 8)))), fill=fg, font=fnt)
        y += int(rng.integers(8, 22))
    return np.asarray(im, np.float32) / 255


def lowpass(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    small = rng.random((max(2, size // scale), max(2, size // scale)))
    return np.asarray(_pil(small).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255


def synthetic(rng: np.random.Generator, size: int = BASE) -> np.ndarray:
    """Noise, low-pass texture, gradient, blank, stripes/checkers or random shapes."""
    kind = int(rng.integers(0, 6))
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == 0:
        return rng.random((size, size)).astype(np.float32) * rng.uniform(0.3, 1)
    if kind == 1:
        return lowpass(rng, size, int(rng.choice([4, 8, 16, 32, 64])))
    if kind == 2:
        a = rng.uniform(0, 2 * np.pi)
        g = np.cos(a) * xx + np.sin(a) * yy if rng.random() < 0.5 else np.hypot(xx - rng.random(), yy - rng.random())
        return _norm01(g)
    if kind == 3:
        return np.full((size, size), rng.uniform(0, 1), np.float32) + rng.normal(0, 0.01, (size, size))
    if kind == 4:
        f = rng.uniform(2, 20)
        return (0.5 + 0.5 * np.sign(np.sin(f * xx * 6.28) * (np.sin(f * yy * 6.28) if rng.random() < 0.5 else 1)))
    im = Image.new("L", (size, size), int(rng.integers(0, 256)))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 10))):
        x, y, r = int(rng.integers(0, size)), int(rng.integers(0, size)), int(rng.integers(4, size // 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x - r, y - r, x + r, y + r], fill=int(rng.integers(0, 256)))
    return np.asarray(im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3)))), np.float32) / 255


def cxr_miss(base: np.ndarray, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A CXR view that misses the lung fields: corner, bottom (abdomen-like) or top (neck) band, extreme zoom,
    or one half (single lung; our proxy for lateral-like / badly cropped views)."""
    a = base.astype(np.float32) / 255
    s = a.shape[0]
    kind = int(rng.integers(0, 5 if HALF_CROPS[0] else 4))
    if kind == 0:  # corner
        c = int(s * rng.uniform(0.2, 0.4))
        y = 0 if rng.random() < 0.5 else s - c
        x = 0 if rng.random() < 0.5 else s - c
        return "cxr corner", a[y:y + c, x:x + c]
    if kind == 1:
        return "cxr bottom band", a[int(s * rng.uniform(0.65, 0.8)):, int(s * rng.uniform(0, 0.2)):]
    if kind == 2:
        return "cxr top band", a[: int(s * rng.uniform(0.15, 0.3)), :]
    if kind == 3:
        c = int(s * rng.uniform(0.15, 0.35))
        y, x = int(rng.integers(s // 5, s - c - s // 5)), int(rng.integers(s // 5, s - c - s // 5))
        return "cxr extreme zoom", a[y:y + c, x:x + c]
    w = int(s * rng.uniform(0.35, 0.5))
    return "cxr one half", (a[:, :w] if rng.random() < 0.5 else a[:, s - w:])


def scene(rng: np.random.Generator, size: int = BASE) -> np.ndarray:
    """Synthetic outdoor 'photo' (sky/ground, sun, shapes) in grey, as in bench/bench_inference.py."""
    yy = np.linspace(0, 1, size)[:, None]
    horizon = rng.uniform(0.3, 0.7)
    img = np.where(yy < horizon, rng.uniform(0.4, 0.9) * (0.7 + 0.3 * yy), rng.uniform(0.1, 0.6) * (1.1 - 0.4 * yy))
    im = _pil(np.clip(img * np.ones((1, size)), 0, 1))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        x, y, r = int(rng.integers(0, size)), int(rng.integers(0, size)), int(rng.integers(size // 20, size // 5))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x - r, y - r, x + r, y + r], fill=int(rng.integers(0, 256)))
    return np.asarray(im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5)))), np.float32) / 255


def finish_negative(a01: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Any [0,1] image -> gate input (64 px uint8): random aspect squash, photometric, any orientation."""
    u8 = to_uint8_square(np.clip(a01, 0, 1).astype(np.float32), BASE)
    out = to_uint8_square(photometric(u8, rng, strength).astype(np.float32) / 255, SIZE)
    if rng.random() < 0.3:
        out = 255 - out
    return np.ascontiguousarray(np.rot90(out, int(rng.integers(0, 4))))
