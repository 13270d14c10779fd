"""Read many images without crashing on the bad ones: a bad-file report."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from chestdx.io.errors import ImageReadError
from chestdx.io.reader import read_image

log = logging.getLogger(__name__)


@dataclass
class BadFileReport:
    """Unreadable files seen so far, as (path, reason) pairs, plus how many files were tried."""

    failures: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0

    def add(self, path: str | PathLike[str], reason: str) -> None:
        self.failures.append((str(path), reason))

    def __len__(self) -> int:
        return len(self.failures)

    def __bool__(self) -> bool:  # a report object is truthy only when something failed
        return bool(self.failures)

    def summary(self, examples: int = 5) -> str:
        """One line count plus up to ``examples`` examples, for logs and CLI output."""
        if not self.failures:
            return f"all {self.total} images readable"
        lines = [f"{len(self.failures)} of {self.total} images unreadable, e.g.:"]
        lines += [f"  {path}: {reason}" for path, reason in self.failures[:examples]]
        return "\n".join(lines)

    def write_csv(self, path: str | PathLike[str]) -> Path:
        """Write ``path,reason`` rows (CSV with proper quoting)."""
        import csv

        out = Path(path)
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "reason"])
            writer.writerows(self.failures)
        return out


def iter_images(
    paths: Iterable[str | PathLike[str]],
    strict: bool = False,
    report: BadFileReport | None = None,
    max_pixels: int | None = None,
) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield ``(path, image)`` for each readable file; unreadable ones go to ``report`` (and the log).

    With ``strict=True`` the first :class:`ImageReadError` is raised instead.
    """
    for p in paths:
        if report is not None:
            report.total += 1
        try:
            img = read_image(p, max_pixels=max_pixels)
        except ImageReadError as exc:
            if strict:
                raise
            log.warning("%s", exc)
            if report is not None:
                report.add(p, exc.reason)
            continue
        yield Path(p), img


def read_images(
    paths: Iterable[str | PathLike[str]], strict: bool = False, max_pixels: int | None = None
) -> tuple[list[tuple[Path, np.ndarray]], BadFileReport]:
    """Eager version of :func:`iter_images`: ``(good, report)``."""
    report = BadFileReport()
    good = list(iter_images(paths, strict=strict, report=report, max_pixels=max_pixels))
    return good, report
