"""Image paths that name a member of a tar archive: ``<archive>.tar.gz::<member>`` (docs/contracts.md, Index).

The cache streams whole archives once (``chestdx.data.archives``); this module lets any other reader (explain,
report gallery, ``predict`` on index rows) open one member directly. Random access into a ``.tar.gz`` reads the
compressed stream up to that member, so it is for a few images, not for epochs.
"""

from __future__ import annotations

import os
import tarfile

MEMBER_SEP = "::"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: str | os.PathLike[str]) -> bool:
    """True for a ``.tar.gz`` / ``.tgz`` / ``.tar`` file name."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def member_path(archive: str | os.PathLike[str], member: str) -> str:
    """Index path of ``member`` inside ``archive``: ``<abs archive>::<member>``."""
    return f"{os.path.abspath(archive)}{MEMBER_SEP}{member}"


def split_member_path(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(archive, member)`` for an archive member path, else None (a plain file path)."""
    archive, sep, member = str(path).partition(MEMBER_SEP)
    if not sep or not member or not is_archive(archive):
        return None
    return archive, member


def read_member(archive: str, member: str, max_bytes: int) -> bytes:
    """The bytes of one member; ``KeyError`` if absent, ``ValueError`` if not a regular file or too big."""
    with tarfile.open(archive, "r:*") as tar:
        info = tar.getmember(member)
        if not info.isfile():
            raise ValueError("not a regular file in the archive")
        if info.size > max_bytes:
            raise ValueError(f"member is {info.size} bytes, above the {max_bytes} byte limit")
        fh = tar.extractfile(info)
        assert fh is not None
        return fh.read()
