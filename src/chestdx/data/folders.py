"""Folder datasets in the Kaggle "chest_xray" layout: ``[<split>/]<CLASS>/<image>``."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from chestdx.data.files import list_images
from chestdx.data.index import IndexReport, finalize_index
from chestdx.labels import NIH_LABELS, NO_FINDING, canonical_label

log = logging.getLogger(__name__)

SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
              "test": "test", "testing": "test"}

# Known file-name conventions that carry a patient id (Kermany et al. 2018 and similar exports).
PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+"),  # person123_bacteria_456.jpeg
    re.compile(r"^(NORMAL\d*-IM-\d+)-\d+"),  # NORMAL2-IM-1427-0001.jpeg
    re.compile(r"^(IM-\d+)-\d+"),  # IM-0001-0001.jpeg, IM-0429-0001-0002.jpeg
)


def patient_from_filename(name: str) -> str | None:
    """Patient id parsed from a file name by a known pattern, else None."""
    for pattern in PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return None


def class_to_label(name: str) -> str:
    """Folder class name -> canonical label (NORMAL -> 'No Finding')."""
    return canonical_label(name.replace("_", " ") if name.isupper() else name)


def read_folders(root: str | Path, report: IndexReport | None = None) -> pd.DataFrame:
    """Index ``root/[split/]CLASS/*``. 'No Finding' classes (NORMAL) are negative for every label; a
    finding class is positive for its label, negative for the other folder classes (they are mutually
    exclusive) and unknown (NaN) for the labels the dataset did not grade."""
    root = Path(root)
    report = report if report is not None else IndexReport()
    files = list_images(root)
    if not files:
        raise FileNotFoundError(f"{root}: no image files found")
    rows = []
    base = Path(os.path.abspath(root))
    for path in files:
        rel = Path(path).relative_to(base)
        parts, name = rel.parts[:-1], rel.as_posix()
        if not parts:
            raise ValueError(f"{path}: image directly under {root}; expected <CLASS>/ or <split>/<CLASS>/ folders")
        rows.append((name, path, parts[-1], SPLIT_DIRS.get(parts[0].lower()) if len(parts) > 1 else None))
    df = pd.DataFrame(rows, columns=["image_id", "path", "class_name", "official_split"])
    classes = sorted(df["class_name"].unique())
    labels = {c: class_to_label(c) for c in classes}
    finding_labels = sorted({v for v in labels.values() if v != NO_FINDING})
    all_labels = list(dict.fromkeys(list(NIH_LABELS) + finding_labels))
    for label in all_labels:
        df[label] = np.nan
    for cls, label in labels.items():
        rows_c = df["class_name"] == cls
        if label == NO_FINDING:
            df.loc[rows_c, all_labels] = 0.0
        else:
            df.loc[rows_c, label] = 1.0
            others = [f for f in finding_labels if f != label]
            if others:  # mutually exclusive classes in this layout
                df.loc[rows_c, others] = 0.0
    parsed = df["image_id"].map(lambda rel: patient_from_filename(rel.rsplit("/", 1)[-1]))
    unparsed = parsed.isna()
    if unparsed.any():
        msg = (f"{int(unparsed.sum())} file names match no known patient-id pattern "
               f"(e.g. {df.loc[unparsed, 'image_id'].iloc[0]}); each is treated as its own patient")
        report.warnings.append(msg)
        log.warning(msg)
    df["patient_id"] = parsed.fillna("img:" + df["image_id"])
    if df["official_split"].isna().all():
        df = df.drop(columns="official_split")
    report.n_indexed = len(df)
    log.info("%s: %d images in classes %s", root, len(df), classes)
    return finalize_index(df.drop(columns="class_name"), source=f"folders:{root.name}")
