"""Tiny HTML helpers for a self-contained page: escaped text, tables, images inlined as base64 data URIs."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:0 auto;padding:1em 2em;
color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.notice{background:#fff4e5;border:2px solid #e67700;border-radius:6px;padding:.8em 1em;font-size:1.05em}
.synthetic{background:#ffe3e3;border:2px solid #c92a2a;border-radius:6px;padding:.6em 1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f1f3f5}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.muted{color:#666;font-size:.9em}figure{margin:.8em 0}figcaption{color:#555;font-size:.9em}
"""

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


def esc(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


def img_tag(path: str | Path, alt: str = "", caption: str | None = None) -> str:
    """``<figure><img src="data:...">`` with the file inlined as base64 ('' when the file is missing)."""
    p = Path(path)
    if not p.is_file():
        return ""
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    mime = _MIME.get(p.suffix.lower(), "application/octet-stream")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt or p.stem)}" src="data:{mime};base64,{data}">{cap}</figure>'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells escaped unless ``raw``."""
    f = (lambda v: str(v)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{f(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, body: str, anchor: str | None = None) -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>\n{body}\n</section>"


def page(title: str, body: str) -> str:
    """A complete HTML document with the inline stylesheet (no external resources)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def fmt(value: Any, digits: int = 3) -> str:
    """Number with ``digits`` decimals; '—' for None/NaN."""
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "—" if v != v else f"{v:.{digits}f}"


def fmt_ci(value: Any, ci: Sequence[Any] | None, digits: int = 3) -> str:
    """'0.812 [0.750, 0.860]'."""
    if value is None:
        return "—"
    if not ci or ci[0] is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"
