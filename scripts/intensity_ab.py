"""The intensity-augmentation A/B of docs/robustness.md: train one arm, then decide by the rule fixed before.

  python scripts/intensity_ab.py train {base,int} --seed 100 --out runs/seed100/base
  chestdx calibrate runs/seed100/base && chestdx robustness runs/seed100/base      # each run
  python scripts/intensity_ab.py decide --baseline runs/kfold/kfold5 runs/seed100/base \
      --candidate runs/kfold_int/kfold5 runs/seed100/int

``train`` is K = 5 on the study split (runs/kfold/nih_split.csv, folds from split.seed 0), 1 thread; ``int`` adds
the candidate's intensity settings to ``default_geometric`` (the recipe it was compared against), ``base`` is that
recipe alone. ``decide`` applies rules (a)-(c) to the per-arm means over the given runs' robustness.json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

UNTRAINED = {"sharpen", "jpeg", "lowres", "equalize"}  # families the candidate never trained on
CANDIDATE = ["augment.gamma=0.5", "augment.contrast=0.3", "augment.noise_std=0.03", "augment.blur_sigma=1.0"]


def train(arm: str, seed: int, out: str, split: str) -> None:
    from chestdx.train.config import load_config
    from chestdx.train.fit import fit

    sets = ["progress=false", f"seed={seed}", "folds=5", "threads=1"] + (CANDIDATE if arm == "int" else [])
    fit(load_config("default_geometric", sets), out, split_csv=split)


def facts(run: str) -> dict[str, float]:
    d = json.load(open(f"{run}/robustness.json"))
    deltas = [s["delta_auroc"] for s in d["settings"]]
    untrained = [s["delta_auroc"] for s in d["settings"] if s["corruption"] in UNTRAINED]
    if d["split"] != "oof" or len(deltas) != 24:
        raise ValueError(f"{run}/robustness.json: need all 24 settings on the oof split")
    return {"clean": d["clean"]["macro_auroc"], "all24": float(np.mean(deltas)),
            "untrained12": float(np.mean(untrained)),
            "corrupted_mean": float(np.mean([s["macro_auroc"] for s in d["settings"]]))}


def decide(baseline: list[str], candidate: list[str]) -> dict:
    out: dict = {}
    for arm, runs in (("baseline", baseline), ("candidate", candidate)):
        per = {r: facts(r) for r in runs}
        out[arm] = {"per_run": per, "mean": {k: float(np.mean([p[k] for p in per.values()])) for k in per[runs[0]]}}
    b, c = out["baseline"]["mean"], out["candidate"]["mean"]
    out["rules"] = {"a_clean": c["clean"] >= b["clean"] - 0.01, "b_all24": c["all24"] > b["all24"],
                    "c_untrained12": c["untrained12"] >= b["untrained12"]}
    out["adopt"] = all(out["rules"].values())
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("arm", choices=("base", "int"))
    t.add_argument("--seed", type=int, default=100)
    t.add_argument("--out", required=True)
    t.add_argument("--split", default="runs/kfold/nih_split.csv")
    d = sub.add_parser("decide")
    d.add_argument("--baseline", nargs="+", required=True)
    d.add_argument("--candidate", nargs="+", required=True)
    a = ap.parse_args()
    if a.cmd == "train":
        train(a.arm, a.seed, a.out, a.split)
    else:
        print(json.dumps(decide(a.baseline, a.candidate), indent=1))
