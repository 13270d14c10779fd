"""The Index: one table schema whatever the source dataset."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from chestdx.labels import NIH_LABELS

log = logging.getLogger(__name__)

ID_COLUMNS = ("image_id", "path", "patient_id")
META_COLUMNS = ("age", "sex", "view", "source")
OPTIONAL_COLUMNS = ("official_split", "split", "fold")
NON_LABEL_COLUMNS = frozenset(ID_COLUMNS + META_COLUMNS + OPTIONAL_COLUMNS)


@dataclass
class IndexReport:
    """What a reader found: images indexed, listed-but-missing, files skipped, warnings."""

    n_indexed: int = 0
    n_missing: int = 0
    missing_examples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.n_indexed} images indexed"
        if self.n_missing:
            text += f"; {self.n_missing} listed images not found (e.g. {', '.join(self.missing_examples[:3])})"
        return text


def label_columns(df: pd.DataFrame) -> list[str]:
    """Label columns of an Index/Split table, NIH labels first in canonical order, then any extras."""
    extras = [c for c in df.columns if c not in NON_LABEL_COLUMNS and c not in NIH_LABELS and not
              str(c).startswith(("prob_", "cal_", "_"))]
    return [c for c in NIH_LABELS if c in df.columns] + extras


def finalize_index(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Order and type the columns of a reader's output into the Index schema."""
    out = df.copy()
    for col in NIH_LABELS:
        if col not in out.columns:
            out[col] = np.nan
    if "age" not in out.columns:
        out["age"] = np.nan
    out["age"] = pd.to_numeric(out["age"], errors="coerce").astype("float64")
    for col in ("sex", "view"):
        if col not in out.columns:
            out[col] = pd.Series(pd.NA, index=out.index, dtype="object")
    if "source" not in out.columns or out["source"].isna().all():
        out["source"] = source
    out["image_id"] = out["image_id"].astype(str)
    out["patient_id"] = out["patient_id"].astype(str)
    out["path"] = out["path"].astype(str)
    labels = label_columns(out)
    out[labels] = out[labels].astype("float32")
    first = list(ID_COLUMNS) + labels + list(META_COLUMNS)
    rest = [c for c in out.columns if c not in first]
    out = out[first + rest].reset_index(drop=True)
    dup = out["image_id"].duplicated()
    if dup.any():
        raise ValueError(f"duplicate image ids in {source} index, e.g. {out.loc[dup, 'image_id'].head(3).tolist()}")
    return out


def read_table(path) -> pd.DataFrame:
    """Read an Index or Split CSV with the right dtypes."""
    df = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "path": str})
    labels = label_columns(df)
    df[labels] = df[labels].astype("float32")
    return df
