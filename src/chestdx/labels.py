"""Label vocabulary: the 14 NIH ChestX-ray14 findings in CheXNet order, plus aliases."""

from __future__ import annotations

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
