"""Inference benchmarks: latency/throughput torch vs onnxruntime, and the OOD gate's AUROC (CXR vs non-CXR).

Run:
  .venv/bin/python bench/bench_inference.py latency [--arch densenet121] [--size 224] [--threads 2]
  .venv/bin/python bench/bench_inference.py ood --run runs/nih-default [--n 200]
Prints JSON. ``latency`` uses UNTRAINED weights (timing only). ``ood`` fits the gate on the run's training
split in memory when the run has no ood.npz (the run dir is never written).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from common import data_root, machine, timings

LABELS_14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
             "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


# -- latency / throughput -------------------------------------------------------------------------------------
def _untrained_run(arch: str, size: int, folder: str | Path, members: int = 1) -> Path:
    """A chestdx-run/2 dir of ``members`` untrained models (timing only)."""
    import torch

    from chestdx.models import build_model
    from chestdx.rundir import RunDir

    run = RunDir(Path(folder) / "run")
    entries = []
    for k in range(members):
        torch.manual_seed(k)
        model = build_model(arch, len(LABELS_14), pretrained=None, input_size=size)
        entries.append(run.write_member(k, model.state_dict(), fold=k))
    run.write_manifest({"arch": arch, "labels": LABELS_14, "input_size": size, "mean": list(model.mean),
                        "std": list(model.std), "metadata": [], "pretrained": None, "freeze": "none"}, entries)
    return run.path


def _timed(fn, repeat: int) -> dict:
    times = timings(fn, repeat)
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "repeat": repeat}


def bench_latency(arch: str, size: int, threads: int, repeat: int, batch: int, members: int = 1) -> dict:
    import torch

    import chestdx
    from chestdx.serve.onnx_export import export_onnx

    torch.set_num_threads(threads)
    png = sorted((data_root() / "nih-fullres" / "images").glob("*.png"))
    one = png[0]
    top = [0]
    with tempfile.TemporaryDirectory() as tmp:
        run = _untrained_run(arch, size, tmp, members)
        pred = chestdx.load(run)
        parity = export_onnx(run, Path(tmp) / "m.onnx")["check"]
        ort = chestdx.load(Path(tmp) / "m.onnx", threads=threads)
        res = {
            "torch_probs": _timed(lambda: pred.predict([one]), repeat),
            "torch_probs_gradcam": _timed(lambda: pred.predict([one], heatmaps=[LABELS_14[top[0]]]), repeat),
            "onnx_probs": _timed(lambda: ort.predict([one]), repeat),
        }
        from chestdx.io import read_image

        t = time.perf_counter()
        imgs = [pred.preprocess(read_image(p)) for p in png[:batch * 2]]
        decode_s = (time.perf_counter() - t) / len(imgs)
        u8 = np.stack(imgs)
        res["decode_resize_s_per_image"] = decode_s
        t_torch = _timed(lambda: pred.logits(u8, batch_size=batch), max(1, repeat // 2))
        t_ort = _timed(lambda: ort.logits(u8, batch_size=batch), max(1, repeat // 2))
        res["batch_torch_img_per_s"] = len(u8) / t_torch["median_s"]
        res["batch_onnx_img_per_s"] = len(u8) / t_ort["median_s"]
        t = time.perf_counter()
        rows = ort.predict([str(p) for p in png], batch_size=batch)
        res["end_to_end_onnx_img_per_s"] = len(rows) / (time.perf_counter() - t)
        res["onnx_parity"] = parity
    return {"bench": "inference latency", "arch": arch, "input_size": size, "weights": "untrained (timing only)",
            "members": members,
            "threads": threads, "batch_size": batch, "image": f"{one.name} (1024 px PNG, nih-fullres)",
            "machine": machine(), "results": res, "target_s_per_image": 0.5}


# -- OOD negatives -----------------------------------------------------------------------------------------------
def _enc(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _lowpass(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    small = rng.random((max(2, size // scale), max(2, size // scale)))
    im = Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(im, np.float32) / 255.0


def _photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """A synthetic colour 'photo': sky/ground gradient, sun, coloured shapes, texture, blur."""
    h = w = size
    yy = np.linspace(0, 1, h)[:, None, None]
    sky = np.array(rng.uniform([40, 90, 150], [140, 190, 255]))
    ground = np.array(rng.uniform([30, 60, 20], [150, 160, 90]))
    horizon = rng.uniform(0.4, 0.7)
    img = np.where(yy < horizon, sky * (0.7 + 0.3 * yy), ground * (1.1 - 0.4 * yy)) * np.ones((1, w, 1))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 9)):
        x, y = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(size // 20, size // 5))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x - r, y - r, x + r, y + r], fill=colour)
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5))), np.float32)
    arr += rng.normal(0, 6, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _text_page(rng: np.random.Generator, size: int) -> np.ndarray:
    im = Image.new("L", (size, size), int(rng.integers(215, 255)))
    d = ImageDraw.Draw(im)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", int(rng.integers(12, 22)))
    except OSError:
        font = ImageFont.load_default()
    words = "patient report chest radiograph findings impression normal heart lungs clear no acute".split()
    y = int(rng.integers(5, 30))
    while y < size - 20:
        line = " ".join(rng.choice(words, int(rng.integers(3, 9))))
        d.text((int(rng.integers(5, 40)), y), line, fill=int(rng.integers(0, 60)), font=font)
        y += int(rng.integers(18, 32))
    return np.asarray(im)


def make_negatives(cxr_paths: list[Path], n_per_kind: int, seed: int = 0, size: int = 512) -> list[tuple[str, bytes]]:
    """(kind, encoded bytes) for natural-image-like non-CXRs and CXR-derived failure cases."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bytes]] = []
    for i in range(n_per_kind):
        tex = _lowpass(rng, size, int(rng.choice([4, 16, 64]))) * rng.uniform(0.4, 1)
        tex += rng.normal(0, 0.05, (size, size))
        out.append(("texture", _enc((np.clip(tex, 0, 1) * 255).astype(np.uint8))))
        yy, xx = np.mgrid[0:size, 0:size] / size
        a = rng.uniform(0, 2 * np.pi)
        grad = (np.cos(a) * xx + np.sin(a) * yy) if i % 2 else np.hypot(xx - 0.5, yy - 0.5) * 1.4
        out.append(("gradient", (_enc((np.clip(grad, 0, 1) * 255).astype(np.uint8)))))
        photo = _photo(rng, size)
        out.append(("colour photo", _enc(photo, "JPEG")))
        out.append(("grayscale photo", _enc(np.asarray(Image.fromarray(photo).convert("L")), "JPEG")))
        out.append(("text page", _enc(_text_page(rng, size))))
        level = rng.uniform(0, 1)
        out.append(("blank", _enc((np.clip(level + rng.normal(0, 0.003, (size, size)), 0, 1) * 255).astype(np.uint8))))
        src = np.asarray(Image.open(cxr_paths[i % len(cxr_paths)]).convert("L"))
        out.append(("rotated CXR (90°)", _enc(np.ascontiguousarray(np.rot90(src, 1 if i % 2 else 3)))))
        h, w = src.shape
        side = int(rng.uniform(0.3, 0.45) * h)
        y0, x0 = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        out.append(("lateral-like crop", _enc(src[y0:y0 + side, x0:x0 + side])))
        out.append(("inverted CXR", _enc(255 - src)))
    return out


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(pos)), np.ones(len(neg))]  # OOD = positive class of the detector
    return float(roc_auc_score(y, np.r_[pos, neg]))


def bench_ood(run: Path, n: int, seed: int) -> dict:
    import pandas as pd

    import chestdx
    from chestdx.inference.ood_fit import fit_run_ood
    from chestdx.inference.run_table import open_run_table

    pred = chestdx.load(run, gate=None)  # the feature-space OOD score alone (the quality gate has its own bench)
    fitted_here = pred.ood is None
    if fitted_here:
        rt = open_run_table(run)
        pred.ood = fit_run_ood(pred, rt.table, rt.cache_root, seed=seed)
    split = pd.read_csv(run / "split.csv")
    test_paths = [Path(p) for p in split.loc[split["split"] == "test", "path"]][:n]
    root = data_root()
    rng = np.random.default_rng(seed)
    kermany = sorted((root / "kermany" / "train").rglob("*.jpeg"))
    kermany = [kermany[i] for i in rng.choice(len(kermany), size=min(n, len(kermany)), replace=False)]
    nih_all = sorted((root / "nih-sample" / "images").glob("*.png"))
    real_source = str(split.loc[split["split"] == "test", "source"].iloc[0]) if "source" in split else "real"
    positives: dict[str, list[Path]] = {f"run test split ({real_source})": test_paths, "kermany (unseen)": kermany}
    negatives = make_negatives(nih_all[:50], n_per_kind=max(1, n // 5), seed=seed)

    def score(data: bytes, name: str) -> tuple[float, bool, float]:
        p, _ = pred.predict_bytes(data, name)
        image_check_fired = len(p.ood_reasons) > int(p.ood_score > 1)  # reasons beyond the feature-score one
        combined = p.ood_score + (1e3 if image_check_fired else 0.0)
        return float(p.ood_score), bool(p.ood_flag), float(combined)

    t = time.perf_counter()
    pos = {k: np.array([score(f.read_bytes(), f.name) for f in v]) for k, v in positives.items()}
    neg_rows = [(kind, *score(b, "neg.png")) for kind, b in negatives]
    seconds = time.perf_counter() - t
    neg = np.array([r[1:] for r in neg_rows])
    kinds = sorted({r[0] for r in neg_rows})
    all_pos = np.concatenate(list(pos.values()))
    res = {
        "auroc_feature_score_all": _auroc(all_pos[:, 0], neg[:, 0]),
        "auroc_gate_all": _auroc(all_pos[:, 2], neg[:, 2]),
        "auroc_gate_by_positive_source": {k: _auroc(v[:, 2], neg[:, 2]) for k, v in pos.items()},
        "flag_rate_cxr": {k: float(v[:, 1].mean()) for k, v in pos.items()},
        "flag_rate_negatives": {k: float(np.mean([r[2] for r in neg_rows if r[0] == k])) for k in kinds},
        "auroc_gate_by_negative_kind": {k: _auroc(all_pos[:, 2], np.array([r[3] for r in neg_rows if r[0] == k]))
                                        for k in kinds},
        "n_positive": {k: len(v) for k, v in pos.items()}, "n_negative": len(neg_rows),
        "seconds": seconds,
    }
    return {"bench": "ood gate", "run": str(run), "arch": pred.arch, "input_size": pred.input_size,
            "trained_on": (pred.payload.get("config") or {}).get("data"),
            "gate": pred.ood.to_dict(arrays=False), "gate_fitted_by_bench": fitted_here,
            "note": "gate score = feature Mahalanobis ratio, + large constant when an image-statistics check fires",
            "machine": machine(), "results": res}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--arch", default="densenet121")
    lat.add_argument("--size", type=int, default=224)
    lat.add_argument("--threads", type=int, default=2)
    lat.add_argument("--repeat", type=int, default=10)
    lat.add_argument("--batch", type=int, default=16)
    lat.add_argument("--members", type=int, default=1, help="ensemble members (K-fold run)")
    ood = sub.add_parser("ood")
    ood.add_argument("--run", type=Path, required=True)
    ood.add_argument("--n", type=int, default=200, help="CXRs per source; negatives: n/5 per kind")
    ood.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "latency":
        out = bench_latency(args.arch, args.size, args.threads, args.repeat, args.batch, args.members)
    else:
        out = bench_ood(args.run, args.n, args.seed)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
