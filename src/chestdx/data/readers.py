"""Pick the right reader for a dataset path: NIH, Kaggle-style folders, or a generic CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from chestdx.data.folders import read_folders
from chestdx.data.index import IndexReport
from chestdx.data.nih import find_entry_csv, read_nih
from chestdx.data.table import read_table_dataset

KINDS = ("auto", "nih", "folders", "csv")


def detect_kind(path: Path) -> str:
    """'nih' when a Data_Entry CSV is present, 'csv' for a CSV file (or a folder with labels.csv), else 'folders'."""
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    if find_entry_csv(path) is not None:
        return "nih"
    if (path / "labels.csv").is_file():
        return "csv"
    return "folders"


def build_index(path: str | Path, kind: str = "auto", report: IndexReport | None = None,
                **options) -> pd.DataFrame:
    """Index any supported dataset into the one Index schema (see ``chestdx.data.index``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset path does not exist")
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {KINDS}")
    kind = detect_kind(path) if kind == "auto" else kind
    report = report if report is not None else IndexReport()
    if kind == "nih":
        return read_nih(path, report=report)
    if kind == "folders":
        return read_folders(path, report=report)
    csv = path if path.is_file() else path / "labels.csv"
    return read_table_dataset(csv, report=report, **options)
