"""Encoding of patient metadata (age, sex, view) for the metadata-fusion head: 2 numbers per field.

- ``age``  -> (clip(age, 0, 100) / 100, missing flag); ages that are not numbers, negative or > 120
  (NIH has a few data-entry errors such as 412) count as missing: (0, 1).
- ``sex``  -> (is_M, is_F); "M"/"MALE", "F"/"FEMALE" (any case); anything else: (0, 0).
- ``view`` -> (is_PA, is_AP); first word of the value, so "AP SUPINE" is AP; anything else: (0, 0).

All zeros (and the age flag) mean "unknown", so a model can be used when the metadata is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["METADATA_FIELDS", "encode_metadata", "metadata_dim", "missing_metadata", "validate_fields"]

METADATA_FIELDS: tuple[str, ...] = ("age", "sex", "view")
MAX_VALID_AGE = 120.0


def validate_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """Check field names (known, no duplicates) and return them as a tuple."""
    if isinstance(fields, str):
        fields = (fields,)
    out = tuple(str(f).strip().lower() for f in fields)
    unknown = [f for f in out if f not in METADATA_FIELDS]
    if unknown:
        raise ValueError(f"unknown metadata field(s) {unknown}; choose from {list(METADATA_FIELDS)}")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate metadata fields in {list(out)}")
    return out


def metadata_dim(fields: Sequence[str]) -> int:
    """Width of the encoded metadata vector: 2 per field."""
    return 2 * len(validate_fields(fields))


def _text(values: pd.Series) -> pd.Series:
    """Upper-case, stripped first word of each value; missing -> ""."""
    s = values.astype("object").where(values.notna(), "")
    return s.map(lambda v: (str(v).strip().upper().split() or [""])[0])


def _encode_age(values: pd.Series) -> np.ndarray:
    age = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(age) | (age < 0) | (age > MAX_VALID_AGE)
    scaled = np.where(bad, 0.0, np.clip(np.nan_to_num(age), 0.0, 100.0) / 100.0)
    return np.stack([scaled, bad.astype(np.float64)], axis=1)


def _encode_pair(values: pd.Series, first: set[str], second: set[str]) -> np.ndarray:
    t = _text(values)
    return np.stack([t.isin(first).to_numpy(), t.isin(second).to_numpy()], axis=1).astype(np.float64)


def encode_metadata(df: pd.DataFrame | Mapping[str, Any], fields: Sequence[str]) -> np.ndarray:
    """float32 (N, 2*len(fields)) in the field order given; a column absent from ``df`` is all-unknown."""
    fields = validate_fields(fields)
    frame = df if isinstance(df, pd.DataFrame) else pd.DataFrame(dict(df))
    n = len(frame)
    parts = []
    for field in fields:
        col = frame[field] if field in frame.columns else pd.Series([np.nan] * n, index=frame.index)
        if field == "age":
            parts.append(_encode_age(col))
        elif field == "sex":
            parts.append(_encode_pair(col, {"M", "MALE"}, {"F", "FEMALE"}))
        else:
            parts.append(_encode_pair(col, {"PA"}, {"AP"}))
    if not parts:
        return np.zeros((n, 0), np.float32)
    return np.concatenate(parts, axis=1).astype(np.float32)


def missing_metadata(n: int, fields: Sequence[str]) -> np.ndarray:
    """The encoding of ``n`` rows whose metadata is entirely unknown."""
    fields = validate_fields(fields)
    return encode_metadata(pd.DataFrame({f: [np.nan] * n for f in fields}, dtype=object), fields)
