"""Reading arrays out of a predictions table (``image_id, patient_id, split, <labels>, prob_<Label>``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chestdx.labels import NIH_LABELS, label_column

BASE_COLUMNS = ("image_id", "patient_id", "split")


@dataclass(frozen=True)
class SplitArrays:
    """One split of a predictions table as arrays, rows sorted by str(image_id)."""

    image_id: np.ndarray
    patient_id: np.ndarray
    y: np.ndarray  # (N, L) float 0/1/NaN
    p: np.ndarray  # (N, L) float raw probabilities


def infer_labels(pred: pd.DataFrame) -> list[str]:
    """Labels that have both a truth column and a ``prob_`` column (NIH order first, then others)."""
    found = [c[len("prob_") :] for c in pred.columns if c.startswith("prob_") and c[len("prob_") :] in pred]
    return [lab for lab in NIH_LABELS if lab in found] + [lab for lab in found if lab not in NIH_LABELS]


def check_table(pred: pd.DataFrame, labels: Sequence[str]) -> None:
    """Raise ValueError naming any missing column."""
    need = [*BASE_COLUMNS, *labels, *(label_column(lab) for lab in labels)]
    missing = [c for c in need if c not in pred.columns]
    if missing:
        raise ValueError(f"predictions table lacks columns {missing}")


def split_arrays(pred: pd.DataFrame, labels: Sequence[str], split: str) -> SplitArrays:
    """Rows of ``split`` as arrays sorted by str(image_id); raises on an empty split or duplicate ids."""
    check_table(pred, labels)
    part = pred[pred["split"] == split]
    # sort on the text form so int and str ids (e.g. after a CSV round trip) align the same way
    part = part.iloc[np.argsort(part["image_id"].astype(str).to_numpy(), kind="mergesort")]
    if part.empty:
        raise ValueError(f"predictions table has no rows with split == {split!r}")
    dup = part["image_id"][part["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{len(dup)} duplicated image_id in split {split!r}, e.g. {dup.head(3).tolist()}")
    return SplitArrays(
        image_id=part["image_id"].to_numpy(),
        patient_id=part["patient_id"].to_numpy(),
        y=part[list(labels)].to_numpy(dtype=np.float64),
        p=part[[label_column(lab) for lab in labels]].to_numpy(dtype=np.float64),
    )
