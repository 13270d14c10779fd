"""NIH ChestX-ray14 reader: Data_Entry CSV (2017 and v2020 layouts), boxes, official lists."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from chestdx.data.archives import archive_listing, find_archives
from chestdx.data.files import list_images
from chestdx.data.index import IndexReport, finalize_index
from chestdx.labels import NIH_LABELS, NO_FINDING, canonical_label

log = logging.getLogger(__name__)

ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
BOX_FILE = "BBox_List_2017.csv"
OFFICIAL_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
NIH_IMAGE_SIZE = 1024  # BBox_List_2017 coordinates refer to the original 1024 px PNGs


def find_entry_csv(data_dir: Path) -> Path | None:
    """The NIH Data_Entry CSV in ``data_dir`` (v2020 preferred), or None."""
    for name in ENTRY_FILES:
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def _parse_age(col: pd.Series) -> pd.Series:
    """Ages are ints in v2020 and strings like '058Y' / '011M' in the 2017 release."""
    plain = pd.to_numeric(col, errors="coerce").astype("float64")
    odd = plain.isna() & col.notna()
    if odd.any():
        text = col[odd].astype(str).str.strip()
        num = pd.to_numeric(text.str.extract(r"^(\d+)")[0], errors="coerce")
        unit = text.str.extract(r"([YMD])$")[0].fillna("Y")
        plain[odd] = num / unit.map({"Y": 1.0, "M": 12.0, "D": 365.0})
    return plain


def _finding_matrix(finding: pd.Series) -> pd.DataFrame:
    """'A|B' strings -> one 0/1 column per finding, canonical names (Infiltrate -> Infiltration).

    Parsed once per distinct string (~800 in NIH's 112k rows), then broadcast: 10x faster than str ops.
    """
    codes, uniques = pd.factorize(finding, use_na_sentinel=False)
    parsed = [{canonical_label(t) for t in str(u).split("|") if t.strip()} for u in uniques]
    names = sorted(set().union(*parsed)) if parsed else []
    table = np.array([[n in row for n in names] for row in parsed], dtype=bool).reshape(len(parsed), len(names))
    return pd.DataFrame(table[codes], columns=names, index=finding.index)


def _clean_upper(col: pd.Series) -> pd.Series:
    """Strip + upper-case through the distinct values only."""
    codes, uniques = pd.factorize(col, use_na_sentinel=False)
    cleaned = np.array([None if pd.isna(u) else str(u).strip().upper() for u in uniques], dtype=object)
    return pd.Series(cleaned[codes], index=col.index, dtype=object)


def parse_entries(entries: pd.DataFrame) -> pd.DataFrame:
    """Data_Entry rows -> Index columns (without paths)."""
    cols = {c.strip(): c for c in entries.columns}
    finding = entries[cols["Finding Labels"]].astype(str)
    dummies = _finding_matrix(finding)
    unknown = sorted(set(dummies.columns) - set(NIH_LABELS) - {NO_FINDING})
    if unknown:
        log.warning("NIH CSV has unknown finding labels %s; they are ignored", unknown)
    out = pd.DataFrame({
        "image_id": entries[cols["Image Index"]].astype(str),
        "patient_id": entries[cols["Patient ID"]].astype(str),
    })
    for label in NIH_LABELS:
        out[label] = (dummies[label].to_numpy(np.float32) if label in dummies.columns
                      else np.zeros(len(out), np.float32))
    out["age"] = _parse_age(entries[cols["Patient Age"]])
    out.loc[(out["age"] < 0) | (out["age"] > 120), "age"] = np.nan  # NIH has a few ages like 413
    out["sex"] = _clean_upper(entries[cols["Patient Gender"]]).where(lambda s: s.isin(["M", "F"]))
    out["view"] = _clean_upper(entries[cols["View Position"]])
    return out


def read_official_lists(data_dir: Path) -> pd.Series | None:
    """image_id -> 'train_val' / 'test' from the official list files, or None when absent."""
    parts = []
    for split, name in OFFICIAL_LISTS.items():
        path = data_dir / name
        if path.is_file():
            ids = [s.strip() for s in path.read_text().splitlines() if s.strip()]
            parts.append(pd.Series(split, index=ids, dtype="object"))
    if not parts:
        return None
    both = pd.concat(parts)
    dup = both.index.duplicated(keep=False)
    if dup.any():
        raise ValueError(f"{data_dir}: images in both official lists, e.g. {list(both.index[dup][:3])}")
    return both


def read_nih(data_dir: str | Path, listing: dict[str, str] | None = None,
             report: IndexReport | None = None, archives: list[Path] | None = None) -> pd.DataFrame:
    """Index the NIH images actually present under ``data_dir`` (flat or images_XXX/images/ layout, and
    the members of the ``images_0XX.tar.gz`` archives lying in ``data_dir``).

    ``listing`` (file name -> path) replaces the directory scan, e.g. to benchmark a full listing.
    ``archives`` restricts the source to these archives (no folder scan). An image present both as a file
    and inside an archive is read from the file; archive members get ``<archive>::<member>`` paths.
    """
    data_dir = Path(data_dir)
    report = report if report is not None else IndexReport()
    csv = find_entry_csv(data_dir)
    if csv is None:
        raise FileNotFoundError(f"{data_dir}: no {' or '.join(ENTRY_FILES)} found")
    entries = pd.read_csv(csv, dtype=str, engine="c")
    try:
        table = parse_entries(entries)
    except KeyError as err:
        raise ValueError(f"{csv}: missing NIH column {err}") from err
    if listing is None:
        listing = {}
        if archives is None:
            for path in list_images(data_dir, frozenset({".png"})):
                listing.setdefault(os.path.basename(path), path)
        for name, path in archive_listing(find_archives(data_dir) if archives is None else archives,
                                          warnings=report.warnings).items():
            listing.setdefault(name, path)
    files = listing
    table["path"] = table["image_id"].map(files)
    present = table["path"].notna()
    report.n_missing = int((~present).sum())
    report.missing_examples = table.loc[~present, "image_id"].head(5).tolist()
    table = table[present]
    official = read_official_lists(data_dir)
    if official is not None:
        table["official_split"] = table["image_id"].map(official)
        unlisted = table["official_split"].isna().sum()
        if unlisted:
            report.warnings.append(f"{unlisted} images are in neither official list")
    report.n_indexed = len(table)
    if report.n_missing:
        log.info("%s: %d of %d listed images are not present (e.g. %s)", csv.name, report.n_missing,
                 len(entries), ", ".join(report.missing_examples[:3]))
    return finalize_index(table, source="nih")


def read_nih_boxes(path: str | Path) -> pd.DataFrame:
    """BBox_List_2017.csv -> image_id, label, x, y, w, h (pixels of the 1024 px original)."""
    path = Path(path)
    raw = pd.read_csv(path, header=None, skiprows=1, usecols=range(6), dtype=str)
    raw.columns = ["image_id", "label", "x", "y", "w", "h"]
    out = raw.dropna(subset=["image_id", "label"]).copy()
    out["label"] = out["label"].map(lambda s: canonical_label(str(s)))
    for c in ("x", "y", "w", "h"):
        out[c] = pd.to_numeric(out[c], errors="coerce")
    bad = out[["x", "y", "w", "h"]].isna().any(axis=1) | (out["w"] <= 0) | (out["h"] <= 0)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} boxes with missing or non-positive coordinates, "
                         f"e.g. row of {out.loc[bad, 'image_id'].iloc[0]}")
    out["reference_size"] = NIH_IMAGE_SIZE
    return out.reset_index(drop=True)
