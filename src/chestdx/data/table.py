"""Generic CSV datasets (CheXpert-like): a path column, label columns, optional patient/age/sex/view."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from chestdx.data.index import IndexReport, finalize_index
from chestdx.labels import NIH_LABELS, NO_FINDING, canonical_label

log = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "Path", "image", "Image", "filename", "file", "Image Index", "image_path")
PATIENT_COLUMNS = ("patient_id", "Patient ID", "patient", "PatientID", "subject_id")
AGE_COLUMNS = ("age", "Age", "Patient Age")
SEX_COLUMNS = ("sex", "Sex", "gender", "Gender", "Patient Gender")
VIEW_COLUMNS = ("view", "View Position", "AP/PA", "ViewPosition")
UNCERTAIN_POLICIES = {"ignore": np.nan, "positive": 1.0, "negative": 0.0}
CHEXPERT_PATIENT = re.compile(r"(patient\d+)")


def _first(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in df.columns), None)


def _sex(col: pd.Series) -> pd.Series:
    s = col.astype(str).str.strip().str.upper().str[:1]
    return s.where(s.isin(["M", "F"]))


def read_table_dataset(csv_path: str | Path, image_root: str | Path | None = None,
                       path_column: str | None = None, label_names: list[str] | None = None,
                       patient_column: str | None = None, uncertain: str = "ignore", blank: str = "ignore",
                       report: IndexReport | None = None) -> pd.DataFrame:
    """Index a labels CSV. Paths are relative to ``image_root`` (default: the CSV's folder).

    ``uncertain`` maps CheXpert's -1 to NaN ("ignore"), 1 ("positive") or 0 ("negative");
    ``blank`` does the same for empty cells ("ignore" keeps them unknown, "negative" makes them 0).
    Label columns are the ones whose names are known labels after aliases ("Pleural Effusion" ->
    Effusion), or exactly ``label_names``.
    """
    csv_path = Path(csv_path)
    report = report if report is not None else IndexReport()
    if uncertain not in UNCERTAIN_POLICIES or blank not in ("ignore", "negative"):
        raise ValueError(f"uncertain must be one of {list(UNCERTAIN_POLICIES)}, blank 'ignore' or 'negative'")
    raw = pd.read_csv(csv_path)
    path_col = path_column or _first(raw, PATH_COLUMNS)
    if path_col is None or path_col not in raw.columns:
        raise ValueError(f"{csv_path}: no image path column (looked for {', '.join(PATH_COLUMNS)})")
    root = Path(image_root) if image_root is not None else csv_path.parent
    if label_names is None:
        label_cols = {c: canonical_label(c) for c in raw.columns
                      if canonical_label(c) in NIH_LABELS and c != path_col}
    else:
        missing = [n for n in label_names if n not in raw.columns]
        if missing:
            raise ValueError(f"{csv_path}: label columns {missing} not found")
        label_cols = {c: canonical_label(c) for c in label_names}
    if not label_cols:
        raise ValueError(f"{csv_path}: no label columns recognised; pass label_names")
    out = pd.DataFrame({"image_id": raw[path_col].astype(str)})
    out["path"] = [os.path.normpath(os.path.join(root, p)) for p in out["image_id"]]
    for col, label in label_cols.items():
        if label == NO_FINDING:
            continue
        values = pd.to_numeric(raw[col], errors="coerce").astype("float64")
        values = values.where(values != -1, UNCERTAIN_POLICIES[uncertain])
        if blank == "negative":
            values = values.where(raw[col].notna(), 0.0)
        out[label] = values if label not in out.columns else np.fmax(out[label], values)
    pcol = patient_column or _first(raw, PATIENT_COLUMNS)
    if pcol is not None:
        out["patient_id"] = raw[pcol].astype(str)
    else:
        parsed = out["image_id"].str.extract(CHEXPERT_PATIENT)[0]
        if parsed.isna().any():
            msg = f"{csv_path}: no patient column; {int(parsed.isna().sum())} images treated as one patient each"
            report.warnings.append(msg)
            log.warning(msg)
        out["patient_id"] = parsed.fillna("img:" + out["image_id"])
    for target, names in (("age", AGE_COLUMNS), ("view", VIEW_COLUMNS)):
        col = _first(raw, names)
        if col is not None:
            out[target] = raw[col]
    scol = _first(raw, SEX_COLUMNS)
    if scol is not None:
        out["sex"] = _sex(raw[scol])
    if "source" in raw.columns:  # e.g. "phantom-synthetic": keep the dataset's own provenance
        out["source"] = raw["source"].astype(str)
    exists = out["path"].map(os.path.isfile)
    report.n_missing = int((~exists).sum())
    report.missing_examples = out.loc[~exists, "image_id"].head(5).tolist()
    if report.n_missing:
        log.info("%s: %d listed images not found (e.g. %s)", csv_path, report.n_missing, report.missing_examples[:3])
    out = out[exists]
    report.n_indexed = len(out)
    return finalize_index(out, source=f"csv:{csv_path.name}")
