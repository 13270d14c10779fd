"""End-to-end check of the SHIPPED gate (package data, onnxruntime, QualityGate.assess on decoded files).

  python scripts/eval_quality_gate.py [--out runs/quality_gate] [--max-per-source 400] [--skimage-wheel W ...]

Held-out test-split CXRs (same patient-grouped split and seed as scripts/train_quality_gate.py) are decoded
from their files with chestdx.io.read_image and judged upright, as np.rot90(img, k) for k = 1..3 and as
1 - img; every confident correction is undone with QualityGate.correct and compared with the original array.
Writes <out>/eval_shipped.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import qg_eval as E
from qg_pools import Pools

from chestdx.inference.quality import CLASSES, QualityGate
from chestdx.io import read_image

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {  # whole-file changes a different hospital might make; the gate should still say "ok"
    "crop to 0.8 aspect (portrait)": lambda a: a[:, int(a.shape[1] * 0.1): a.shape[1] - int(a.shape[1] * 0.1)],
    "crop to landscape ~1.3": lambda a: a[int(a.shape[0] * 0.12): a.shape[0] - int(a.shape[0] * 0.12), :],
    "black bars top/bottom (1.24)": lambda a: np.pad(a, ((int(a.shape[0] * 0.12),) * 2, (0, 0))),
    "white bars left/right": lambda a: np.pad(a, ((0, 0), (int(a.shape[1] * 0.1),) * 2), constant_values=1.0),
    "gamma 0.5 (brighter)": lambda a: a ** 0.5,
    "low contrast (0.3-0.7)": lambda a: 0.3 + 0.4 * a,
}


def variants_table(gate: QualityGate, imgs: dict[str, list[np.ndarray]]) -> str:
    """Markdown: per source and variant, share ok (upright) and share of np.rot90(variant, 1) corrected right."""
    rows = ["| source | variant | n | upright: ok | upright: refused or corrected | rot90: corrected right |",
            "|---|---|---|---|---|---|"]
    for src, ims in imgs.items():
        for name, fn in VARIANTS.items():
            up = gate.assess_batch([fn(a) for a in ims])
            rot = gate.assess_batch([np.rot90(fn(a), 1) for a in ims])
            n = len(ims)
            bad = sum(r.action in ("refused", "corrected") for r in up)
            right = sum(r.action == "corrected" and r.corrected == "rot90" for r in rot)
            rows.append(f"| {src} | {name} | {n} | {E.fmt_rate(E.rate(sum(r.action == 'ok' for r in up), n))} | "
                        f"{E.fmt_rate(E.rate(bad, n))} | {E.fmt_rate(E.rate(right, n))} |")
    return "\n".join(rows)


def real_negatives_table(gate: QualityGate, pools: Pools) -> str:
    """Markdown: real non-CXR images as stored (no augmentation, upright and in each quarter turn), judged by
    QualityGate.assess on the full-size float image: share refused / uncertain / corrected / ok per kind."""
    kinds = {"scikit-image photos etc. (held out)": [a.mean(-1) if a.ndim == 3 else a for _, a in pools.skimage],
             "scikit-image LFW faces 25 px (held out)": [np.asarray(f, np.float32) / max(float(np.max(f)), 1e-6)
                                                       for f in pools.faces],
             "nibabel MRI/EPI slices (held out)": pools.nibabel,
             "pydicom frames, test split": pools.dicom["test"], "MNI brain MRI slices, test split": pools.mri["test"]}
    rows = ["| non-CXR kind (as stored, 4 quarter turns) | n | refused | uncertain | corrected | passed as ok |",
            "|---|---|---|---|---|---|"]
    for name, ims in kinds.items():
        if not ims:
            continue
        res = gate.assess_batch([np.rot90(a, k) for a in ims for k in range(4)])
        n = len(res)
        cells = [E.fmt_rate(E.rate(sum(r.action == a for r in res), n)) for a in ("refused", "uncertain", "corrected",
                                                                                 "ok")]
        rows.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CHESTDX_DATA", REPO.parent / "shared/data")))
    ap.add_argument("--cache", type=Path, default=REPO / ".chestdx-cache" / "quality_gate")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "quality_gate")
    ap.add_argument("--max-per-source", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    for w in ("skimage", "nilearn", "nibabel"):
        ap.add_argument(f"--{w}-wheel", type=Path, default=None, help="real non-CXR images (see the training script)")
    ap.add_argument("--gate-onnx", type=Path, default=None,
                    help="judge with this asset (its card: the same path with .json) instead of the shipped gate")
    args = ap.parse_args(argv)
    gate = (QualityGate.from_files(args.gate_onnx, args.gate_onnx.with_suffix(".json"), threads=2) if args.gate_onnx
            else QualityGate.default(threads=2))
    pools = Pools(args.data, args.cache, args.seed,
                  {"skimage": args.skimage_wheel, "nilearn": args.nilearn_wheel, "nibabel": args.nibabel_wheel})
    t0 = time.perf_counter()
    probs, true, groups, restored = [], [], [], {"exact": 0, "n": 0}
    decoded: dict[str, list[np.ndarray]] = {}
    for src, s in pools.cxr.items():
        names = s["name"][s["split"] == "test"][: args.max_per_source]
        for name in names:
            img = read_image(args.data / name)
            decoded.setdefault(src, []).append(img)
            variants = [img, np.rot90(img, 1), np.rot90(img, 2), np.rot90(img, 3), 1 - img]
            for c, (var, r) in enumerate(zip(variants, gate.assess_batch(variants), strict=True)):
                probs.append([r.probs[k] for k in CLASSES])
                true.append(c)
                groups.append(f"{src}/file/{CLASSES[c]}")
                if r.action == "corrected" and r.corrected == CLASSES[c]:
                    back = gate.correct(var, r)
                    restored["n"] += 1
                    restored["exact"] += int(np.array_equal(back, img) if c < 4 else np.abs(back - img).max() < 1e-6)
    p, y, g = np.array(probs), np.array(true), np.array(groups)
    res = {"thresholds": gate.thresholds, "n": len(y), "outcomes": E.outcome_table(p, y, g, gate.thresholds),
           "confusion": E.confusion(p, y, gate.thresholds), "restored_exactly": restored,
           "seconds": time.perf_counter() - t0, "gate_version": gate.version, "onnx_sha256": gate.card["onnx_sha256"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_shipped.json").write_text(json.dumps(res, indent=1))
    md = (f"Command: `python scripts/eval_quality_gate.py {' '.join(argv)}`\n\nthresholds {gate.thresholds}; "
          f"corrections undone exactly: {restored['exact']}/{restored['n']}\n\n{E.md_outcomes(res['outcomes'])}\n\n"
          f"{E.md_confusion(res['confusion'])}\n\nAspect, framing and exposure changes of the same files:\n\n"
          f"{variants_table(gate, {k: v[:150] for k, v in decoded.items()})}\n\n"
          f"Real non-CXR images as stored (end to end):\n\n{real_negatives_table(gate, pools)}\n")
    (args.out / "eval_shipped.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main(sys.argv[1:])
