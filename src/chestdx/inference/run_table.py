"""Open a run dir for work on its images: manifest, resolved config, split table (optionally relocated)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from chestdx.data.index import read_table
from chestdx.data.relocate import relocate
from chestdx.rundir import RunDir, RunDirError


@dataclass
class RunTable:
    """What evaluate, OOD fitting, explain, localize and the report read from a run dir."""

    run: RunDir
    manifest: dict[str, Any]
    config: dict[str, Any]
    table: pd.DataFrame  # split.csv (+ fold), paths relocated when ``data`` was given

    @property
    def cache_root(self) -> str | None:
        return self.config.get("cache_root")

    def rows(self, *splits: str) -> pd.DataFrame:
        return self.table[self.table["split"].isin(splits)]


def open_run_table(run_dir: str | Path, data: str | Path | None = None) -> RunTable:
    """Read manifest, config.yaml and split.csv of a run dir; ``data`` points the split at a moved dataset."""
    run = RunDir(run_dir)
    manifest = run.manifest()
    if not run.split.is_file():
        raise RunDirError(f"{run.split}: missing (the run dir is incomplete)")
    config = yaml.safe_load(run.config.read_text()) if run.config.is_file() else {}
    table = read_table(run.split)
    if data is not None:
        table = relocate(table, data)
    return RunTable(run, manifest, config or {}, table)
