"""Label vocabulary: the 14 NIH ChestX-ray14 findings in CheXNet order, plus aliases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

NO_FINDING = "No Finding"

# Spellings seen in NIH, CheXpert, MIMIC-CXR, PadChest exports and Kaggle folders -> canonical name.
ALIASES: dict[str, str] = {
    "infiltrate": "Infiltration",
    "infiltrates": "Infiltration",
    "pleural effusion": "Effusion",
    "effusions": "Effusion",
    "pleural thickening": "Pleural_Thickening",
    "pleural_thickening": "Pleural_Thickening",
    "pleural-thickening": "Pleural_Thickening",
    "enlarged heart": "Cardiomegaly",
    "pneumonia": "Pneumonia",
    "nofinding": NO_FINDING,
    "no finding": NO_FINDING,
    "no_finding": NO_FINDING,
    "normal": NO_FINDING,
}


def canonical_label(name: str) -> str:
    """Return the canonical spelling of a label (aliases and case folded); unknown names pass through."""
    cleaned = name.strip()
    key = cleaned.lower()
    if key in ALIASES:
        return ALIASES[key]
    for label in NIH_LABELS:
        if label.lower() == key or label.lower().replace("_", " ") == key:
            return label
    return cleaned


def label_column(label: str) -> str:
    """Name of the probability column for ``label`` in predictions tables."""
    return f"prob_{label}"


def predictions_table(rows: Any, labels: Sequence[str], logits: Any) -> Any:
    """The predictions table of docs/contracts.md (``predictions.csv``, ``oof.csv``): ``image_id, patient_id,
    split, [fold,]`` from ``rows`` (a DataFrame), the true label columns (NaN where ``rows`` lacks one), then
    ``prob_<Label>`` = sigmoid of ``logits`` (N, L) in float64 (invertible to a logit far into the tails)."""
    import numpy as np

    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    out = rows[[c for c in ("image_id", "patient_id", "split", "fold") if c in rows.columns]].reset_index(drop=True)
    for label in labels:
        out[label] = rows[label].to_numpy() if label in rows.columns else np.nan
    for j, label in enumerate(labels):
        out[label_column(label)] = probs[:, j]
    return out
