"""Recognise an image format from its first bytes (content first, file extension only as a hint)."""

from __future__ import annotations

from pathlib import PurePath

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")

# Other formats Pillow decodes; accepted through its generic path.
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

SUPPORTED = "PNG, JPEG, DICOM (also BMP, TIFF, GIF, WebP through Pillow)"


def sniff_format(data: bytes, name: str = "") -> str | None:
    """Return "PNG", "JPEG", "DICOM", "DICOM-RAW" (no preamble, trusted from the extension), another
    Pillow format name, or ``None`` when the content is not recognised."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(JPEG_SIGNATURE):
        return "JPEG"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "DICOM"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, fmt in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return fmt
    if extension(name) in DICOM_EXTENSIONS:
        return "DICOM-RAW"
    return None


def extension(name: str) -> str:
    """Lower-case file extension of ``name`` (``""`` when none)."""
    return PurePath(name).suffix.lower()


def describe_unknown(data: bytes, name: str) -> str:
    """Reason string for content that matches no supported format."""
    head = data[:512]
    ext = extension(name)
    named = f"named {ext} but " if ext else ""
    if _looks_like_text(head):
        snippet = head[:24].decode("utf-8", errors="replace").strip().replace("\n", " ")
        return f"{named}content is text, not an image (starts with {snippet!r}); supported: {SUPPORTED}"
    return f"{named}content is not a recognised image format (first bytes {data[:8].hex(' ')}); supported: {SUPPORTED}"


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    for cut in range(4):  # a multi-byte character may be split at the end of the window
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * len(text)
