"""Fast recursive listing of image files."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff"})


def list_images(root: str | Path, suffixes: frozenset[str] = IMAGE_SUFFIXES) -> list[str]:
    """Absolute paths of every image under ``root`` (recursive, symlinks followed, sorted).

    ``os.scandir`` is used because ``Path.rglob`` is several times slower on 100k-file trees.
    """
    found: list[str] = []
    stack = [os.path.abspath(root)]
    while stack:
        directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    if not entry.name.startswith("."):
                        stack.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in suffixes:
                    found.append(entry.path)
    return sorted(found)
