"""In-memory multipart/form-data parsing for uploads: nothing is spooled to a temporary file.

Starlette's ``UploadFile`` spools parts over 1 MiB to a temp file on disk; the web app must never write an
uploaded image to disk, so it reads the (size-capped) body into memory and parses it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

SAFE_EXTENSION = re.compile(r"^\.[a-z0-9]{1,6}$")


class UploadError(ValueError):
    """Malformed upload; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type, or UploadError(415)."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(415, "send the image as multipart/form-data in the field 'file' "
                               f"(got content type {(content_type or 'none')[:60]!r})")
    return params[b"boundary"]


class MultipartCollector:
    """Incremental multipart parser: ``write`` each body chunk as it arrives, then ``finish()`` -> fields.

    Parts are kept as lists of chunks until the end, so the body is never held twice (no joined copy).
    """

    def __init__(self, content_type: str | None):
        self.parts: list[_Part] = []
        self._header: dict[str, bytes] = {"field": b"", "value": b""}
        callbacks = {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                     "on_header_value": self._header_value, "on_header_end": self._header_end,
                     "on_part_data": self._part_data}
        self._parser = MultipartParser(multipart_boundary(content_type), callbacks)  # type: ignore[arg-type]

    def _part_begin(self) -> None:
        self.parts.append(_Part())

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header["field"] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header["value"] += data[start:end]

    def _header_end(self) -> None:
        self.parts[-1].headers[self._header["field"].decode("latin-1").lower()] = self._header["value"].decode(
            "latin-1")
        self._header["field"], self._header["value"] = b"", b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].chunks.append(bytes(data[start:end]))

    def write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a malformed request
            raise UploadError(400, f"malformed multipart body ({type(exc).__name__})") from exc

    def finish(self) -> dict[str, tuple[str, bytes]]:
        """``{field name: (client file name or "", bytes)}``; the first part of each name wins."""
        try:
            self._parser.finalize()
        except Exception as exc:  # noqa: BLE001
            raise UploadError(400, f"malformed multipart body ({type(exc).__name__})") from exc
        fields: dict[str, tuple[str, bytes]] = {}
        for part in self.parts:
            _, params = parse_options_header(part.headers.get("content-disposition", ""))
            name = params.get(b"name", b"").decode("utf-8", "replace")
            filename = params.get(b"filename", b"").decode("utf-8", "replace")
            if name and name not in fields:
                fields[name] = (filename, b"".join(part.chunks))
            part.chunks.clear()  # drop each part's chunks once joined
        self.parts.clear()
        return fields


def parse_multipart(body: bytes, content_type: str | None) -> dict[str, tuple[str, bytes]]:
    """``{field name: (client file name or "", bytes)}`` parsed from an in-memory multipart body."""
    collector = MultipartCollector(content_type)
    collector.write(body)
    return collector.finish()


def safe_name(client_filename: str) -> str:
    """A fixed name for messages and format hints: 'upload' + the client's extension when it is harmless.

    The client's file name is never used as a path, logged or echoed beyond this extension.
    """
    ext = client_filename.rsplit(".", 1)[-1].lower() if "." in client_filename else ""
    ext = f".{ext}" if ext else ""
    return "upload" + (ext if SAFE_EXTENSION.match(ext) else "")
