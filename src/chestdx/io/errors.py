"""The one exception type raised by image decoding."""

from __future__ import annotations

from os import PathLike


class ImageReadError(ValueError):
    """An image could not be read; ``str(err)`` names the file and the problem.

    Attributes ``path`` (the name given to the reader) and ``reason`` (the problem alone) are kept
    separately so callers can build bad-file reports.
    """

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self):  # keep pickling (multiprocessing workers) working with two arguments
        return (type(self), (self.path, self.reason))
