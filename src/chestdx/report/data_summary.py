"""Data summary of a run: split sizes, patients, label prevalence, sources (synthetic or not), EDA plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SYNTHETIC_SOURCE = "phantom-synthetic"
SPLIT_ORDER = ("train", "val", "test")


def read_split(run_dir: str | Path) -> pd.DataFrame:
    """``RUN_DIR/split.csv`` with the right dtypes."""
    from chestdx.data.index import read_table

    path = Path(run_dir) / "split.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a chestdx run directory?")
    return read_table(path)


def data_summary(split: pd.DataFrame, labels: list[str]) -> dict[str, Any]:
    """Images and patients per split, positives / graded / prevalence per label and split, sources, demographics."""
    names = [s for s in SPLIT_ORDER if s in set(split["split"])] + sorted(set(split["split"]) - set(SPLIT_ORDER))
    splits = {s: {"images": int((split["split"] == s).sum()),
                  "patients": int(split.loc[split["split"] == s, "patient_id"].nunique())} for s in names}
    prevalence: dict[str, dict[str, dict[str, float]]] = {}
    for lb in labels:
        prevalence[lb] = {}
        for s in names:
            col = split.loc[split["split"] == s, lb] if lb in split.columns else pd.Series(dtype=float)
            graded = int(col.notna().sum())
            pos = int(np.nansum(col.to_numpy(dtype=float))) if graded else 0
            prevalence[lb][s] = {"positives": pos, "graded": graded, "prevalence": pos / graded if graded else None}
    sources = split["source"].fillna("unknown").astype(str).value_counts().to_dict() if "source" in split else {}
    ages = split["age"].dropna() if "age" in split else pd.Series(dtype=float)
    return {
        "n_images": len(split), "n_patients": int(split["patient_id"].nunique()), "splits": splits,
        "prevalence": prevalence, "sources": sources, "synthetic": SYNTHETIC_SOURCE in sources,
        "age": {"median": float(ages.median()) if len(ages) else None,
                "min": float(ages.min()) if len(ages) else None, "max": float(ages.max()) if len(ages) else None},
        "sex": split["sex"].fillna("unknown").value_counts().to_dict() if "sex" in split else {},
        "view": split["view"].fillna("unknown").value_counts().to_dict() if "view" in split else {},
    }


def ensure_eda(run_dir: str | Path, split: pd.DataFrame) -> dict[str, Any]:
    """``RUN_DIR/eda/`` (runs ``chestdx.data.eda.run_eda`` when missing); returns its eda.json summary."""
    from chestdx.data.eda import run_eda

    out = Path(run_dir) / "eda"
    if not (out / "eda.json").is_file():
        return run_eda(split, out)
    return json.loads((out / "eda.json").read_text())
