"""Tar archives (NIH ``images_0XX.tar.gz``) as a dataset source: member paths, listing, streaming.

An image inside an archive is named in the Index ``path`` column as

    <absolute archive path>::<member name>      e.g. /data/nih/images_001.tar.gz::images/00000001_000.png

(``MEMBER_SEP`` = ``"::"``). Nothing is ever extracted to disk: ``chestdx cache`` streams each archive once
(``tarfile`` stream mode) and decodes the members it needs. Listing an archive means reading it through once;
the listing is kept in ``<cache root>/archives/`` keyed by the archive's path, size and mtime, so indexing the
same archives again is instant. A truncated or corrupt archive lists the members before the damage (and says
where it stopped); a member that cannot be read or decoded becomes a bad file of the cache build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from chestdx.io.archive_member import MEMBER_SEP, is_archive, member_path

log = logging.getLogger(__name__)

#: What a damaged archive raises while being streamed.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def find_archives(folder: str | os.PathLike[str]) -> list[Path]:
    """The tar archives directly inside ``folder`` (sorted: images_001 ... images_012)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_archive(p.name))


def _mode(archive: str | os.PathLike[str]) -> str:
    return "r|" if str(archive).lower().endswith(".tar") else "r|gz"


def _listing_file(archive: Path, cache_root: Path) -> Path:
    st = archive.stat()
    key = f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return cache_root / "archives" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")


def _scan(archive: Path, suffixes: frozenset[str]) -> tuple[list[str], str | None]:
    """Member names with an image suffix, in archive order, and the error that stopped the scan (if any)."""
    names: list[str] = []
    try:
        with tarfile.open(archive, _mode(archive)) as tar:
            for info in tar:
                if info.isfile() and os.path.splitext(info.name)[1].lower() in suffixes:
                    names.append(info.name)
    except ARCHIVE_ERRORS as err:
        return names, f"{archive}: archive damaged after {len(names)} image members ({err or type(err).__name__})"
    return names, None


def list_members(archive: str | os.PathLike[str], suffixes: Iterable[str] = (".png",),
                 cache_root: str | os.PathLike[str] | None = None) -> tuple[list[str], str | None]:
    """Image member names of ``archive`` (archive order) and an error text when the archive is damaged.

    Reads the archive once, then answers from ``<cache_root>/archives/`` while the archive is unchanged.
    """
    from chestdx.data.cache import default_cache_root

    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive not found")
    wanted = frozenset(s.lower() for s in suffixes)
    store = _listing_file(archive, Path(cache_root or default_cache_root()))
    try:
        saved = json.loads(store.read_text())
        if saved.get("suffixes") == sorted(wanted):
            return list(saved["members"]), saved.get("error")
    except (OSError, ValueError, KeyError):
        pass
    names, error = _scan(archive, wanted)
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"archive": str(archive.resolve()), "suffixes": sorted(wanted),
                                   "members": names, "error": error}))
        os.replace(tmp, store)
    except OSError as err:  # a read-only cache only costs a rescan next time
        log.info("could not save the listing of %s: %s", archive, err)
    return names, error


def archive_listing(archives: Iterable[str | os.PathLike[str]], suffixes: Iterable[str] = (".png",),
                    warnings: list[str] | None = None) -> dict[str, str]:
    """File name -> member path over several archives (the first archive holding a name wins)."""
    out: dict[str, str] = {}
    for archive in archives:
        names, error = list_members(archive, suffixes)
        if error:
            log.warning(error)
            if warnings is not None:
                warnings.append(error)
        for name in names:
            out.setdefault(os.path.basename(name), member_path(archive, name))
    return out


def iter_members(archive: str, wanted: Iterable[str]) -> Iterator[tuple[str, bytes | None, str | None]]:
    """Stream ``archive`` once: ``(member, bytes, None)`` for each wanted member in archive order, then
    ``(member, None, error)`` for the wanted members that could not be read (damaged or absent).

    Members not wanted are skipped without being read into memory (the compressed stream is still read).
    """
    todo = set(wanted)
    problem = "not found in the archive"
    try:
        with tarfile.open(archive, _mode(archive)) as tar:
            for info in tar:
                if not todo:
                    break
                if info.name not in todo:
                    continue
                todo.discard(info.name)
                try:
                    fh = tar.extractfile(info)
                    if fh is None:
                        yield info.name, None, f"{archive}{MEMBER_SEP}{info.name}: not a regular file"
                        continue
                    data = fh.read()
                except ARCHIVE_ERRORS as err:
                    problem = f"archive damaged ({err or type(err).__name__})"
                    yield info.name, None, f"{archive}{MEMBER_SEP}{info.name}: truncated member, {problem}"
                    break
                if len(data) != info.size:
                    problem = "archive truncated"
                    yield info.name, None, (f"{archive}{MEMBER_SEP}{info.name}: truncated member "
                                            f"({len(data)} of {info.size} bytes)")
                    break
                yield info.name, data, None
    except ARCHIVE_ERRORS as err:
        problem = f"archive damaged before this member ({err or type(err).__name__})"
    for name in sorted(todo):
        yield name, None, f"{archive}{MEMBER_SEP}{name}: {problem}"
