"""Glue used by the CLI and training: cache a split table with a progress bar, drop and list bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from chestdx.data.cache import CacheBuildReport, PixelCache

log = logging.getLogger(__name__)


def progress_bar(description: str, total: int, enabled: bool = True) -> Progress:
    """A rich progress bar (disabled = silent)."""
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def cache_table(df: pd.DataFrame, size: int, root: str | Path | None = None, strict: bool = False,
                show_progress: bool = True, workers: int | None = None
                ) -> tuple[PixelCache, pd.DataFrame, CacheBuildReport]:
    """Cache every image of ``df``; return the cache, ``df`` without the unreadable files, and the report.

    ``path`` may name files or archive members (``<archive>::<member>``); ``workers`` decoding processes
    (None = every usable CPU, 1 = in this process).
    """
    cache = PixelCache(root, size)
    paths = df["path"].tolist()
    with progress_bar(f"caching {size}px", len(paths), show_progress) as bar:
        task = bar.add_task("cache", total=len(paths))
        report = cache.build(paths, strict=strict, workers=workers, progress=lambda n: bar.advance(task, n))
    if report.failures:
        bad = {p for p, _ in report.failures}
        for path, reason in report.failures[:10]:
            log.warning("skipped unreadable image: %s", reason if path in reason else f"{path}: {reason}")
        df = df[~df["path"].isin(bad)].reset_index(drop=True)
    return cache, df, report


def write_bad_files(report: CacheBuildReport, path: str | Path) -> None:
    """Write the list of skipped files and reasons as CSV (always written, possibly empty)."""
    pd.DataFrame(report.failures, columns=["path", "error"]).to_csv(path, index=False)
