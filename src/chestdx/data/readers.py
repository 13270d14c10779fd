"""Pick the right reader for a dataset path: NIH, Kaggle-style folders, or a generic CSV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from chestdx.data.archives import find_archives, is_archive
from chestdx.data.folders import read_folders
from chestdx.data.index import IndexReport
from chestdx.data.nih import find_entry_csv, read_nih
from chestdx.data.table import read_table_dataset

KINDS = ("auto", "nih", "folders", "csv")


def detect_kind(path: Path) -> str:
    """'nih' when a Data_Entry CSV is present (next to an archive given as ``path``), 'csv' for a CSV file
    (or a folder with labels.csv), else 'folders'."""
    if path.is_file() and is_archive(path.name):
        if find_entry_csv(path.parent) is None:
            raise ValueError(f"{path}: an image archive is indexed with the Data_Entry_2017*.csv next to it; "
                             f"none found in {path.parent}")
        return "nih"
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    if find_entry_csv(path) is not None:
        return "nih"
    if (path / "labels.csv").is_file():
        return "csv"
    if path.is_dir() and find_archives(path) and not any(p.is_dir() for p in path.iterdir()):
        raise ValueError(f"{path}: holds image archives but no Data_Entry_2017*.csv (only NIH archives are "
                         "indexed from .tar.gz; extract other datasets)")
    return "folders"


def build_index(path: str | Path | Sequence[str | Path], kind: str = "auto", report: IndexReport | None = None,
                **options) -> pd.DataFrame:
    """Index any supported dataset into the one Index schema (see ``chestdx.data.index``).

    NIH images may come packed: ``path`` a folder holding ``images_0XX.tar.gz`` next to
    ``Data_Entry_2017*.csv``, one such archive, or a list of archives of one folder. Archive members get
    the path ``<archive>::<member>`` (``chestdx.data.archives``) and are never extracted.
    """
    if not isinstance(path, (str, Path)):
        archives = [Path(p) for p in path]
        if not archives or not all(is_archive(p.name) and p.is_file() for p in archives):
            raise ValueError(f"a list of dataset paths must name existing .tar.gz archives, got {path}")
        if len({p.resolve().parent for p in archives}) != 1:
            raise ValueError("archives given together must lie in one folder (next to Data_Entry_2017*.csv)")
        detect_kind(archives[0])
        report = report if report is not None else IndexReport()
        return read_nih(archives[0].parent, report=report, archives=archives)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset path does not exist")
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {KINDS}")
    kind = detect_kind(path) if kind == "auto" else kind
    report = report if report is not None else IndexReport()
    if kind == "nih":
        if path.is_file() and is_archive(path.name):
            return read_nih(path.parent, report=report, archives=[path])
        return read_nih(path, report=report)
    if kind == "folders":
        return read_folders(path, report=report)
    csv = path if path.is_file() else path / "labels.csv"
    return read_table_dataset(csv, report=report, **options)
