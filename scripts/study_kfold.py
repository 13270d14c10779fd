"""K-fold ensemble vs single model study (issue 11) on nih-sample; writes a section of docs/results.md.

  .venv/bin/python scripts/study_kfold.py train   [--out runs/kfold] [--folds 5] [--sets epochs=8 ...]
  .venv/bin/python scripts/study_kfold.py analyze [--out runs/kfold] [--write-docs]

``train`` fits the ``default`` preset twice on the same patient-grouped split as scripts/study.py (seed 0,
patients with radiologist boxes forced into test): K = 1 (train/val) and K = 5 (folds over train+val). An
interrupted run resumes where it stopped. ``analyze`` predicts the untouched test split with each run
(ensemble = mean logit of the members), fits calibration + operating points on each run's OOF / validation
predictions only (``calibrate_run``), and reports: paired AUROC comparison with CIs (evaluate.compare), ECE per
label before/after calibration, findings called per image vs truth, training time.

Default-K rule, stated before looking at any test number: K = 5 becomes the default when the OOF macro AUROC
of the K = 5 run is >= the validation macro AUROC of the K = 1 run minus 0.01, and its training time is
<= 45 min here; otherwise K stays 1. (Test numbers are reported, never used to choose.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CHESTDX_DATA", REPO.parent / "shared" / "data")).resolve()
NIH = DATA / "nih-sample"
BOXES = NIH / "BBox_List_2017.csv"
RUNS = {"single": 1, "kfold5": 5}


def split_csv(out: Path) -> Path:
    """The study split (same recipe as scripts/study.py)."""
    from chestdx.data.nih import read_nih
    from chestdx.data.splits import audit_split, make_split

    path = out / "nih_split.csv"
    if not path.exists():
        boxed = pd.read_csv(BOXES)["Image Index"].tolist()
        split = make_split(read_nih(NIH), seed=0, force_test=boxed)
        assert audit_split(split).ok
        out.mkdir(parents=True, exist_ok=True)
        split.to_csv(path, index=False)
    return path


def train(out: Path, folds: int, sets: list[str]) -> None:
    from chestdx.train.config import load_config
    from chestdx.train.fit import fit

    split = split_csv(out)
    for name, k in (("single", 1), (f"kfold{folds}", folds)):
        run = out / name
        t = time.perf_counter()
        if (run / "model.json").exists():
            print(f"{name}: done earlier", flush=True)
            continue
        if (run / "config.yaml").exists():
            fit({}, run, resume=True)
        else:
            config = load_config("default", ["progress=false", *sets])
            config["folds"] = k
            fit(config, run, split_csv=split)
        print(f"{name}: trained in {time.perf_counter() - t:.0f} s", flush=True)


def analyze(out: Path, folds: int, n_boot: int = 1000) -> dict:
    raise NotImplementedError


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["train", "analyze"])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "kfold")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--sets", nargs="*", default=[])
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    if args.stage == "train":
        train(args.out, args.folds, args.sets)
    else:
        result = analyze(args.out, args.folds, n_boot=args.n_boot)
        print(json.dumps(result["summary"], indent=1))
        if args.write_docs:
            result["write"]()


if __name__ == "__main__":
    main()
