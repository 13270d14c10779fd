"""Train, calibrate (thresholds) and evaluate the input quality gate; export it as package data.

  nice -n 10 python scripts/train_quality_gate.py                 # ship: trains on all sources, + leave-one-out
  python scripts/train_quality_gate.py --epochs 1 --no-loso --out /tmp/qg   # smoke run (no asset written)

Writes ``src/chestdx/inference/assets/quality_gate.{onnx,json}`` (unless --no-export) and
``<out>/eval.{json,md}`` (confusion matrices per source and corruption with Wilson CIs, held-out negative
kinds, leave-one-source-out). Seeded; CPU only. Sources: /work/shared/data (or $CHESTDX_DATA) nih-sample,
nih-fullres, kermany; negatives: see scripts/qg_data.py. Optional evaluation-only photos come from a
scikit-image wheel: ``pip download scikit-image==0.26.0 --no-deps -d /tmp/skdl`` (pass --skimage-wheel).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import qg_data as D
import qg_eval as E
import torch
from torch import nn

from chestdx.inference.quality import CARD_FORMAT, CLASSES, model_input

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "chestdx" / "inference" / "assets"
NIH = ("nih-sample", "nih-fullres")
NEG_TRAIN = ("dicom", "photo", "text", "synthetic", "cxr_miss")
CLS_P = np.array([0.4, 0.15, 0.15, 0.15, 0.15])  # frontal, rot90, rot180, rot270, inverted for CXR draws


class GateNet(nn.Module):
    """64 px grayscale -> 6 logits: stride-2 conv stages 64->32->16->8->4 px (16-32-64-64 channels, one more conv
    at 4 px), then a small MLP on the flattened 4x4 map so that position (where the lung apices are) is kept
    for the orientation call. Normalization is in the graph; ~0.16 M parameters."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(*block(1, w, 2), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2),
                                      *block(4 * w, 4 * w, 2), *block(4 * w, 4 * w, 1))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w * 16, 64), nn.ReLU(inplace=True),
                                  nn.Linear(64, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B,1,64,64) in [0,1]
        return self.head(self.features((x - 0.5) / 0.25))


def _norm(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    return (a - a.min()) / max(float(np.ptp(a)), 1e-6)


# -- data ------------------------------------------------------------------------------------------------------
class Pools:
    """Everything samples are drawn from, with the patient-grouped (CXR) / file-grouped (DICOM) splits."""

    def __init__(self, data: Path, cache: Path, seed: int, skimage_wheel: Path | None):
        self.cxr = D.load_cxr_cache(data, cache)
        groups = {p: "nih" if p.startswith("nih:") else "kermany" for s in self.cxr.values() for p in s["patient"]}
        patients = np.array(sorted(groups))
        split = dict(zip(patients, D.patient_split(patients, seed), strict=True))
        for s in self.cxr.values():
            s["split"] = np.array([split[p] for p in s["patient"]])
        dicom = D.dicom_images()
        files = sorted({n.split("#")[0] for n, _ in dicom})
        fsplit = dict(zip(files, D.patient_split(np.array(files), seed + 1, (0.6, 0.2, 0.2)), strict=True))
        self.dicom = {sp: [a for n, a in dicom if fsplit[n.split("#")[0]] == sp] for sp in ("train", "val", "test")}
        self.photos = D.sklearn_photos()
        self.skimage = D.skimage_images(skimage_wheel)
        self.faces = D.lfw_faces(skimage_wheel)

    def cxr_rows(self, sources, split: str | None) -> list[tuple[str, int]]:
        return [(s, i) for s in sources if s in self.cxr for i in np.flatnonzero(
            (self.cxr[s]["split"] == split) if split else np.ones(len(self.cxr[s]["split"]), bool))]

    def negative(self, kind: str, split: str, rng: np.random.Generator, cxr_rows) -> tuple[str, np.ndarray]:
        """(kind label, 64 px uint8) of one non-CXR image."""
        if kind == "dicom":
            a = self.dicom[split][int(rng.integers(len(self.dicom[split])))]
            a = D.random_crop(a, rng, 0.6, 1.0) if rng.random() < 0.5 else a
            return "dicom " + split, D.finish_negative(a, rng)
        if kind == "photo":
            a = D._gray(D.random_crop(self.photos[int(rng.integers(len(self.photos)))], rng, 0.15, 1.0), rng)
            return "sklearn photo", D.finish_negative(a, rng)
        if kind == "text":
            return "text page", D.finish_negative(D.text_page(rng), rng)
        if kind == "synthetic":
            return "synthetic texture/shape", D.finish_negative(D.synthetic(rng), rng)
        if kind == "cxr_miss":
            s, i = cxr_rows[int(rng.integers(len(cxr_rows)))]
            label, a = D.cxr_miss(self.cxr[s]["base"][i], rng)
            return label, D.finish_negative(a, rng, 0.7)
        if kind == "skimage":
            name, a = self.skimage[int(rng.integers(len(self.skimage)))]
            a = D._gray(D.random_crop(a, rng, 0.4, 1.0) if rng.random() < 0.7 else a, rng)
            return "skimage image (held out)", D.finish_negative(a, rng, 0.5)
        if kind == "faces":
            a = self.faces[int(rng.integers(len(self.faces)))]
            return "lfw face (held out)", D.finish_negative(_norm(a), rng, 0.5)
        if kind == "scene":
            return "synthetic scene (held out)", D.finish_negative(D.scene(rng), rng, 0.5)
        raise ValueError(kind)


TRANSFORM = ["none"]  # network input transform (set from --transform)
LABEL_SMOOTHING = [0.05]
NEG_WEIGHTS = {"dicom": 1, "photo": 1, "text": 1, "synthetic": 1, "cxr_miss": 2}
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


def make_pool(pools: Pools, sources, n_per_source: int, seed: int, log) -> tuple[np.ndarray, np.ndarray]:
    """Training images drawn once (2 processes): ``n_per_source`` upright augmented CXRs per source and
    0.35 x as many negatives in total -> (u8 (N,64,64), is_cxr (N,)). Orientation classes are drawn per epoch."""
    global _POOLS
    import multiprocessing as mp

    _POOLS = pools
    srcs = [NIH if s == "nih" else (s,) for s in sources]
    allsrc = tuple(x for s in srcs for x in s)
    chunk = 500
    jobs = [(s, "cxr", c, chunk) for s in srcs for c in range(n_per_source // chunk)]
    n_neg = int(0.35 * n_per_source * len(srcs))
    wsum = sum(NEG_WEIGHTS.values())
    jobs += [(allsrc, k, 0, chunk) for k, w in NEG_WEIGHTS.items() for _ in range(max(1, n_neg * w // wsum // chunk))]
    jobs = [(w, k, int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), n) for i, (w, k, _, n) in
            enumerate(jobs)]
    t = time.perf_counter()
    with mp.get_context("fork").Pool(2) as p:
        parts = p.map(_draw, jobs)
    x = np.concatenate(parts)
    is_cxr = np.concatenate([np.full(len(part), j[1] == "cxr") for part, j in zip(parts, jobs, strict=True)])
    log(f"  pool: {int(is_cxr.sum())} CXR + {int((~is_cxr).sum())} negatives ({time.perf_counter() - t:.0f} s)")
    return x, is_cxr


def epoch_batches(x: np.ndarray, is_cxr: np.ndarray, rng: np.random.Generator, batch: int):
    """Shuffled batches; each CXR gets an orientation/inversion class drawn afresh, every image a random mirror
    (mirroring keeps a CXR upright) and each negative a random quarter turn."""
    cls = np.where(is_cxr, rng.choice(5, size=len(x), p=CLS_P), 5)
    turn = np.where(is_cxr, 0, rng.integers(0, 4, size=len(x)))
    flip = rng.random(len(x)) < 0.5
    order = rng.permutation(len(x))
    for k in range(0, len(order), batch):
        idx = order[k:k + batch]
        xb = x[idx].copy()
        xb[flip[idx]] = xb[flip[idx]][:, :, ::-1]
        for r in (1, 2, 3):
            m = ((cls[idx] == r) | (turn[idx] == r))
            xb[m] = np.rot90(xb[m], r, axes=(1, 2))
        inv = cls[idx] == 4
        xb[inv] = 255 - xb[inv]
        yield torch.from_numpy(model_input(xb, TRANSFORM[0])), torch.from_numpy(cls[idx])


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


# -- training --------------------------------------------------------------------------------------------------
def predict(model: nn.Module, u8: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(u8), batch):
            x = torch.from_numpy(model_input(u8[k:k + batch], TRANSFORM[0]))
            out.append(torch.softmax(model(x), 1).numpy())
    return np.concatenate(out).astype(np.float64)


def train(pools: Pools, sources, epochs: int, n_per_source: int, seed: int, log) -> nn.Module:
    torch.manual_seed(seed)
    x, is_cxr = make_pool(pools, sources, n_per_source, seed, log)
    model = GateNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING[0])
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        model.train()
        t, tot, n = time.perf_counter(), 0.0, 0
        for xb, yb in epoch_batches(x, is_cxr, rng, 128):
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot, n = tot + float(loss.detach()) * len(yb), n + len(yb)
        log(f"  {'+'.join(sources)} epoch {epoch + 1}/{epochs}: loss {tot / n:.4f} ({time.perf_counter() - t:.0f} s)")
    return model.eval()


def fit_and_evaluate(pools: Pools, sources, args, log) -> tuple[nn.Module, dict, dict]:
    """Train on ``sources``' train split, choose thresholds on their validation split."""
    model = train(pools, sources, args.epochs, args.n_cxr, args.seed, log)
    srcs = [s for src in sources for s in (NIH if src == "nih" else (src,))]
    neg = {k: args.n_neg_val for k in NEG_WEIGHTS}  # the kinds trained on
    xv, yv, gv = eval_set(pools, srcs, "val", args.seed + 11, neg)
    pv = predict(model, xv)
    thr = E.choose_thresholds(pv, yv, target=args.target)
    val = {"thresholds": thr, "n": len(yv), "outcomes": E.outcome_table(pv, yv, gv, thr),
           "confusion": E.confusion(pv, yv, thr)}
    log(f"  thresholds {thr} (validation n={len(yv)})")
    return model, thr, val


def test_examples(pools: Pools) -> list[str]:
    """A few held-out (test-split) CXRs by path under the data root, for tests/test_quality_gate.py."""
    out = []
    for src, n in (("nih-sample", 10), ("nih-fullres", 2), ("kermany", 6)):
        if src in pools.cxr:
            names = pools.cxr[src]["name"][pools.cxr[src]["split"] == "test"]
            out += [str(x) for x in names[np.linspace(0, len(names) - 1, n).astype(int)]]
    return out


def export(model: nn.Module, thr: dict, args, pools: Pools, cross: dict) -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    onnx_path = ASSETS / "quality_gate.onnx"
    x = torch.zeros(1, 1, D.SIZE, D.SIZE)
    torch.onnx.export(model, (x,), str(onnx_path), dynamo=False, opset_version=17, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    import onnxruntime as ort

    xs = np.random.default_rng(0).random((16, 1, D.SIZE, D.SIZE)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    diff = float(np.abs(sess.run(None, {"image": xs})[0] - model(torch.from_numpy(xs)).detach().numpy()).max())
    card = {
        "format": CARD_FORMAT, "version": args.version, "classes": list(CLASSES), "input_size": D.SIZE,
        "input": "image (B,1,64,64) float32 = model_input(to_uint8_square(img01, 64), input_transform); "
                 "output logits (B,6)", "input_transform": TRANSFORM[0],
        "rotation_convention": "rotK = upright image turned as np.rot90(img, K) (K x 90 degrees counter-clockwise)",
        "thresholds": thr, "threshold_rule": (
            f"ok/correct: smallest thresholds (>= 0.5) with <= {args.target:.2%} of validation upright CXRs corrected "
            f"and <= {args.target:.2%} of other validation images passed as ok; refuse: the largest of the "
            f"validation choice and, for each leave-one-source-out model, the smallest threshold with <= "
            f"{args.cross_target:.1%} of the unseen source's upright CXRs refused"),
        "cross_source_refuse_thresholds": cross,
        "training_sources": {"cxr": ["nih-sample", "nih-fullres", "kermany"], "negatives": list(NEG_TRAIN)},
        "seed": args.seed, "epochs": args.epochs, "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "onnx_vs_torch_max_abs_logit_diff": diff, "script": "scripts/train_quality_gate.py",
        "test_examples": test_examples(pools), "summary": {},
    }
    (ASSETS / "quality_gate.json").write_text(json.dumps(card, indent=1) + "\n")


def report(evaluation: dict, out_dir: Path, argv: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(evaluation, indent=1))
    lines = [f"Command: `python scripts/train_quality_gate.py {' '.join(argv)}`\n"]
    for name, res in evaluation["results"].items():
        lines.append(f"### {name}\n\nthresholds: {res['thresholds']}\n\n{E.md_outcomes(res['outcomes'])}\n\n"
                     f"Confusion (all rows of this block):\n\n{E.md_confusion(res['confusion'])}\n")
    (out_dir / "eval.md").write_text("\n".join(lines))


ARRAYS: dict[str, np.ndarray] = {}  # every evaluated probability, saved to <out>/probs.npz


def evaluate_block(model, thr, pools, sources, split, seed, negatives) -> dict:
    x, y, g = eval_set(pools, sources, split, seed, negatives)
    return block(predict(model, x), y, g, thr)


def block(p: np.ndarray, y: np.ndarray, g: np.ndarray, thr: dict) -> dict:
    k = len(ARRAYS) // 3
    ARRAYS.update({f"probs{k}": p, f"true{k}": y, f"group{k}": g})
    return {"arrays": k, "thresholds": thr, "n": len(y), "outcomes": E.outcome_table(p, y, g, thr),
            "confusion": E.confusion(p, y, thr)}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CHESTDX_DATA", REPO.parent / "shared/data")))
    ap.add_argument("--cache", type=Path, default=REPO / ".chestdx-cache" / "quality_gate")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "quality_gate")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--n-cxr", type=int, default=8000, help="augmented CXRs per source in the training pool")
    ap.add_argument("--n-neg-val", type=int, default=200, help="validation negatives per kind")
    ap.add_argument("--n-neg-test", type=int, default=200, help="test negatives per kind")
    ap.add_argument("--target", type=float, default=0.0025, help="max validation rate of each false action")
    ap.add_argument("--cross-target", type=float, default=0.01,
                    help="max false refusals of the unseen source's upright CXRs (leave-one-source-out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--version", default="1")
    ap.add_argument("--skimage-wheel", type=Path, default=None)
    ap.add_argument("--no-loso", action="store_true")
    ap.add_argument("--transform", choices=["none", "equalize"], default="none")
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--no-half-crops", action="store_true", help="no 'one half of a CXR' negatives")
    ap.add_argument("--loso-only", action="store_true", help="experiments: skip the shipped model (no export)")
    ap.add_argument("--neg-kinds", nargs="+", default=list(NEG_WEIGHTS), help="negative kinds to train on")
    ap.add_argument("--no-export", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    pools = Pools(args.data, args.cache, args.seed, args.skimage_wheel)
    log(f"data: {[(s, len(v['patient'])) for s, v in pools.cxr.items()]}, dicom frames "
        f"{ {k: len(v) for k, v in pools.dicom.items()} }, skimage images {len(pools.skimage)}")
    held_out = ["scene", *(["skimage"] if pools.skimage else []), *(["faces"] if pools.faces else [])]
    neg_test = {k: args.n_neg_test for k in (*NEG_TRAIN, *held_out)}
    TRANSFORM[0], LABEL_SMOOTHING[0], D.HALF_CROPS[0] = args.transform, args.label_smoothing, not args.no_half_crops
    for k in [k for k in NEG_WEIGHTS if k not in args.neg_kinds]:
        del NEG_WEIGHTS[k]
    results: dict[str, dict] = {}
    model, loso, cross = None, {}, {}
    if not args.no_loso:  # leave-one-source-out first: it sets the cross-source refusal threshold
        for train_src, test_srcs in (("nih", ["kermany"]), ("kermany", list(NIH))):
            m, t, _ = fit_and_evaluate(pools, [train_src], args, log)
            x, y, g = eval_set(pools, test_srcs, None, args.seed + 31, neg_test)
            loso[train_src] = (t, predict(m, x), y, g, test_srcs)
            cross[train_src] = E.refuse_threshold(loso[train_src][1], loso[train_src][2], args.cross_target)
            log(f"leave-one-out {train_src} -> {test_srcs}: refusal threshold for <= {args.cross_target:.1%} "
                f"false refusals on the unseen source: {cross[train_src]}")
        for train_src, (t, p, y, g, test_srcs) in loso.items():
            other = cross["kermany" if train_src == "nih" else "nih"]  # cross-fitted: chosen on the other direction
            t = dict(t, refuse=max(t["refuse"], other))
            results[f"leave-one-source-out: trained on {train_src} only, tested on all of {'+'.join(test_srcs)} "
                    f"(refusal threshold from the other direction)"] = block(p, y, g, t)
    if not args.loso_only:
        model, thr, val = fit_and_evaluate(pools, ["nih", "kermany"], args, log)
        thr["refuse"] = max([thr["refuse"], *cross.values()])
        log(f"shipped thresholds {thr} (refuse: max of validation and cross-source {cross})")
        results["shipped model: validation split (ok/correct thresholds chosen here)"] = val
        results["shipped model: test split (held-out patients, held-out negative kinds)"] = evaluate_block(
            model, thr, pools, [*NIH, "kermany"], "test", args.seed + 21, neg_test)
        log("shipped model evaluated")
        if not args.no_export:
            export(model, thr, args, pools, cross)
    evaluation = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": time.perf_counter() - t0,
                  "results": results}
    report(evaluation, args.out, argv)
    np.savez_compressed(args.out / "probs.npz", **ARRAYS)
    if model is not None:
        torch.save(model.state_dict(), args.out / "quality_gate.pt")
    if model is not None and not args.no_export:
        card_path = ASSETS / "quality_gate.json"
        card = json.loads(card_path.read_text())
        card["summary"] = E.summary(results)
        card_path.write_text(json.dumps(card, indent=1) + "\n")
    log(f"done -> {args.out / 'eval.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
