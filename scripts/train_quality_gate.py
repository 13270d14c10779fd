"""Quality gate v2 (64 px CNN from scratch): train, calibrate, evaluate, export. Superseded by v3 (scripts/qg_v3.py,
the shipped gate); kept to reproduce v2 and its tables.

  nice -n 10 python scripts/train_quality_gate.py --skimage-wheel W --nilearn-wheel W --nibabel-wheel W
        # ship: leave-one-source-out models first (cross-source refusal thresholds), then the shipped model
  python scripts/train_quality_gate.py --epochs 1 --no-loso --no-export --out /tmp/qg   # smoke run

Writes ``src/chestdx/inference/assets/quality_gate.{onnx,json}`` (unless --no-export) and
``<out>/eval.{json,md}`` + ``<out>/probs.npz`` (confusion matrices per source and corruption with Wilson CIs,
held-out negative kinds, leave-one-source-out). Seeded; CPU only. Sources: /work/shared/data (or
$CHESTDX_DATA) nih-sample, nih-fullres, kermany; negatives: scripts/qg_data.py (synthetic, CXR crops) and
scripts/qg_real.py (real images read from installed packages or downloaded wheels, never committed):

  pip download scikit-image==0.26.0 nilearn==0.14.1 nibabel==5.4.2 --no-deps -d /tmp/qgw

nilearn's MNI brain MRI slices are trained on; scikit-image's photos and faces and nibabel's test volumes are
evaluation-only (never trained on). A missing wheel skips its images with a warning.
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
import qg_pools as P
import torch
from qg_pools import NIH, Pools, eval_set
from torch import nn

from chestdx.inference.quality import CLASSES, model_input

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "chestdx" / "inference" / "assets"
MIRROR = [0, 3, 2, 1, 4, 5]  # class of the left-right mirror: a mirrored rot90 CXR is a rot270 one


class GateNet(nn.Module):
    """64 px grayscale -> 6 logits: stride-2 conv stages 64->32->16->8->4 px (w-2w-4w-4w channels, one more conv
    at 4 px), then a small MLP on the flattened 4x4 map so that position (where the lung apices are) is kept
    for the orientation call. Normalization is in the graph; ~0.16 M parameters at width 16."""

    def __init__(self, width: int = 16, hidden: int = 64):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(*block(1, w, 2), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2),
                                      *block(4 * w, 4 * w, 2), *block(4 * w, 4 * w, 1))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w * 16, hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B,1,64,64) in [0,1]
        return self.head(self.features((x - 0.5) / 0.25))


class MirrorTTA(nn.Module):
    """Test-time mirror averaging, inside the exported graph: the class probabilities of the image and of its
    left-right mirror (rot90 <-> rot270 swapped) are averaged; the output is their log (softmax of it gives the
    average back), so the gate's code is the same with or without it."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("perm", torch.tensor(MIRROR))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.net(x), 1)
        q = torch.softmax(self.net(torch.flip(x, dims=[3])), 1).index_select(1, self.perm)
        return torch.log(((p + q) / 2).clamp_min(1e-12))


def epoch_batches(x: np.ndarray, is_cxr: np.ndarray, rng: np.random.Generator, batch: int):
    """Shuffled batches; each CXR gets an orientation/inversion class drawn afresh, every image a random mirror
    (mirroring keeps a CXR upright) and each negative a random quarter turn."""
    cls = np.where(is_cxr, rng.choice(5, size=len(x), p=P.CLS_P), 5)
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


TRANSFORM = ["none"]  # network input transform (set from --transform)
LABEL_SMOOTHING = [0.05]


# -- training --------------------------------------------------------------------------------------------------
def predict(model: nn.Module, u8: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(u8), batch):
            x = torch.from_numpy(model_input(u8[k:k + batch], TRANSFORM[0]))
            out.append(torch.softmax(model(x), 1).numpy())
    return np.concatenate(out).astype(np.float64)


def train(pools: Pools, sources, args, log) -> nn.Module:
    """The network trained on ``sources``' train split (+ negatives); wrapped in MirrorTTA unless --no-tta."""
    torch.manual_seed(args.seed)
    x, is_cxr = P.make_pool(pools, sources, args.n_cxr, args.seed, log, args.neg_frac, P.NEG_WEIGHTS)
    model = GateNet(args.width, args.hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * ((len(x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING[0])
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        model.train()
        t, tot, n = time.perf_counter(), 0.0, 0
        for xb, yb in epoch_batches(x, is_cxr, rng, 128):
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot, n = tot + float(loss.detach()) * len(yb), n + len(yb)
        log(f"  {'+'.join(sources)} epoch {epoch + 1}/{args.epochs}: loss {tot / n:.4f} "
            f"({time.perf_counter() - t:.0f} s)")
    model.eval()
    return model if args.no_tta else MirrorTTA(model).eval()


def fit_and_evaluate(pools: Pools, sources, args, log) -> tuple[nn.Module, dict, dict]:
    """Train on ``sources``' train split, choose thresholds on their validation split."""
    model = train(pools, sources, args, log)
    srcs = [s for src in sources for s in (NIH if src == "nih" else (src,))]
    neg = {k: args.n_neg_val for k in P.NEG_WEIGHTS}  # the kinds trained on
    xv, yv, gv = eval_set(pools, srcs, "val", args.seed + 11, neg)
    pv = predict(model, xv)
    thr = E.choose_thresholds(pv, yv, target=args.target)
    log(f"  thresholds {thr} (validation n={len(yv)})")
    return model, thr, block(pv, yv, gv, thr)


def export_onnx_checked(model: nn.Module, size: int, path: Path, n: int = 16) -> float:
    """Export the gate graph (``image`` (B,1,S,S) -> ``logits``) to ``path``; max |onnxruntime - torch| on ``n``
    random images."""
    import onnxruntime as ort

    torch.onnx.export(model, (torch.zeros(1, 1, size, size),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True)
    xs = np.random.default_rng(0).random((n, 1, size, size)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        return float(np.abs(sess.run(None, {"image": xs})[0] - model(torch.from_numpy(xs)).numpy()).max())


def export(model: nn.Module, thr: dict, args, pools: Pools, cross: dict) -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    onnx_path = ASSETS / "quality_gate.onnx"
    diff = export_onnx_checked(model, D.SIZE, onnx_path, n=16)
    kinds = [k for k in P.NEG_WEIGHTS]
    card = {
        "format": "chestdx-quality-gate/2", "version": args.version, "classes": list(CLASSES), "input_size": D.SIZE,
        "input": "image (B,1,64,64) float32 = model_input(to_uint8_square(img01, 64), input_transform); "
                 "output logits (B,6) (log of class probabilities when test_time_mirror)",
        "input_transform": TRANSFORM[0], "test_time_mirror": not args.no_tta,
        "network": {"width": args.width, "hidden": args.hidden,
                    "parameters": sum(p.numel() for p in model.parameters())},
        "rotation_convention": "rotK = upright image turned as np.rot90(img, K) (K x 90 degrees counter-clockwise)",
        "thresholds": thr, "threshold_rule": (
            f"ok/correct: smallest thresholds (>= 0.5) with <= {args.target:.2%} of validation upright CXRs corrected "
            f"and <= {args.target:.2%} of other validation images passed as ok; refuse: the "
            f"largest of the validation choice and, for each leave-one-source-out model, the smallest threshold "
            f"with <= {args.cross_target:.2%} of the unseen source's upright CXRs refused"),
        "cross_source_refuse_thresholds": cross,
        "training_sources": {"cxr": ["nih-sample", "nih-fullres", "kermany"], "negatives": kinds,
                             "evaluation_only_negatives": list(pools.held_out())},
        "seed": args.seed, "epochs": args.epochs, "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "onnx_vs_torch_max_abs_logit_diff": diff, "script": "scripts/train_quality_gate.py",
        "test_examples": P.test_examples(pools), "summary": {},
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


def block(p: np.ndarray, y: np.ndarray, g: np.ndarray, thr: dict) -> dict:
    k = len(ARRAYS) // 3
    ARRAYS.update({f"probs{k}": p, f"true{k}": y, f"group{k}": g})
    return {"arrays": k, "thresholds": thr, "n": len(y), "outcomes": E.outcome_table(p, y, g, thr),
            "confusion": E.confusion(p, y, thr)}


def onnx_probs(path: Path, u8: np.ndarray) -> np.ndarray:
    """Class probabilities of another gate asset (e.g. the previous version) on the same 64 px images."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = np.concatenate([sess.run(None, {"image": model_input(u8[k:k + 512], "none")})[0]
                        for k in range(0, len(u8), 512)]).astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CHESTDX_DATA", REPO.parent / "shared/data")))
    ap.add_argument("--cache", type=Path, default=REPO / ".chestdx-cache" / "quality_gate")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "quality_gate")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--n-cxr", type=int, default=8000, help="augmented CXRs per source in the training pool")
    ap.add_argument("--neg-frac", type=float, default=0.5, help="negatives in the pool per CXR")
    ap.add_argument("--n-neg-val", type=int, default=200, help="validation negatives per kind")
    ap.add_argument("--n-neg-test", type=int, default=200, help="test negatives per kind")
    ap.add_argument("--target", type=float, default=0.0025, help="max validation rate of each false action")
    ap.add_argument("--cross-target", type=float, default=0.01,
                    help="max false refusals of the unseen source's upright CXRs (leave-one-source-out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--version", default="2")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--no-tta", action="store_true", help="no test-time mirror averaging in the graph")
    ap.add_argument("--skimage-wheel", type=Path, default=None)
    ap.add_argument("--nilearn-wheel", type=Path, default=None)
    ap.add_argument("--nibabel-wheel", type=Path, default=None)
    ap.add_argument("--compare-onnx", type=Path, default=None,
                    help="also evaluate this gate asset (the previous version) on the shipped model's test set")
    ap.add_argument("--no-loso", action="store_true")
    ap.add_argument("--transform", choices=["none", "equalize"], default="none")
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--reflect-pad", type=float, default=0.0,
                    help="share of the zoom-out augmentations padded by reflection (wider-field films)")
    ap.add_argument("--crop-min", type=float, default=0.72, help="augmentation: a crop keeps >= this of a side")
    ap.add_argument("--pad-p", type=float, default=0.35, help="augmentation: probability of a zoom-out")
    ap.add_argument("--pad-max", type=float, default=0.2, help="augmentation: zoom-out pads <= this per side")
    ap.add_argument("--no-half-crops", action="store_true", help="no 'one half of a CXR' negatives")
    ap.add_argument("--loso-only", action="store_true", help="experiments: skip the shipped model (no export)")
    ap.add_argument("--neg-kinds", nargs="+", default=list(P.NEG_WEIGHTS), help="negative kinds to train on")
    ap.add_argument("--no-export", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    pools = Pools(args.data, args.cache, args.seed,
                  {"skimage": args.skimage_wheel, "nilearn": args.nilearn_wheel, "nibabel": args.nibabel_wheel})
    log(f"data: {pools.describe()}")
    TRANSFORM[0], LABEL_SMOOTHING[0], D.HALF_CROPS[0] = args.transform, args.label_smoothing, not args.no_half_crops
    D.REFLECT_PAD[0] = args.reflect_pad
    D.GEOM.update(crop_min=args.crop_min, pad_p=args.pad_p, pad_max=args.pad_max)
    for k in [k for k in P.NEG_WEIGHTS if k not in args.neg_kinds]:
        del P.NEG_WEIGHTS[k]
    neg_test = {k: args.n_neg_test for k in (*P.NEG_WEIGHTS, *pools.held_out())}
    results: dict[str, dict] = {}
    model, loso, cross = None, {}, {}
    if not args.no_loso:  # leave-one-source-out first: it sets the cross-source refusal threshold
        for train_src, test_srcs in (("nih", ["kermany"]), ("kermany", list(NIH))):
            m, t, val = fit_and_evaluate(pools, [train_src], args, log)
            results[f"leave-one-source-out: trained on {train_src} only: validation split"] = val
            x, y, g = eval_set(pools, test_srcs, None, args.seed + 31, neg_test)
            loso[train_src] = (t, predict(m, x), y, g, test_srcs)
            cross[train_src] = E.refuse_threshold(loso[train_src][1], y, args.cross_target)
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
        x, y, g = eval_set(pools, [*NIH, "kermany"], "test", args.seed + 21, neg_test)
        results["shipped model: test split (held-out patients, held-out negative kinds)"] = block(
            predict(model, x), y, g, thr)
        if args.compare_onnx:
            card = json.loads(args.compare_onnx.with_suffix(".json").read_text())
            results[f"previous gate {args.compare_onnx.name} (version {card.get('version')}): same test split"] = \
                block(onnx_probs(args.compare_onnx, x), y, g, card["thresholds"])
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
