"""Point a saved split table at a dataset's new location (a run dir shared to another machine)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from chestdx.data.readers import build_index


def relocate(table: pd.DataFrame, data_dir: str | Path) -> pd.DataFrame:
    """``table`` with ``path`` re-pointed into ``data_dir`` (matched by image_id); every image must be there."""
    new = build_index(data_dir).set_index("image_id")["path"]
    missing = ~table["image_id"].isin(new.index)
    if missing.any():
        raise FileNotFoundError(f"{data_dir}: {int(missing.sum())} images of the split are not there "
                                f"(e.g. {table.loc[missing, 'image_id'].iloc[0]})")
    out = table.copy()
    out["path"] = out["image_id"].map(new)
    return out
