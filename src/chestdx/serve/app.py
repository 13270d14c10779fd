"""FastAPI web app: one static page + a JSON API over a Predictor (``create_app(run_dir_or_predictor)``).

Upload path security:
- the request body is read into memory with a hard cap (``max_upload_bytes``; 413 beyond it, checked on the
  Content-Length header first and again while streaming) and parsed in memory (no temp-file spooling);
- the bytes are decoded by ``chestdx.io.decode_image_bytes`` (format sniffed from content, pixel-count limit
  against decompression bombs); nothing uploaded is written to disk or logged;
- the client's file name is reduced to a fixed ``upload.<ext>`` hint; no request value is ever used as a path
  (the page is served from memory, read once from the package at start-up).

Abuse limits (``chestdx.serve.guard``): a Host allow-list (localhost by default), cross-origin POSTs refused (403),
CORS off unless origins are allowed explicitly, at most ``max_workers`` uploads processed at once and
``max_queue`` waiting (503 + Retry-After beyond), at most ``max_heatmaps`` Grad-CAMs per request (422 beyond,
unknown labels 422, duplicates ignored), and the decoder's pixel limit (``chestdx.io.limits``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from chestdx import __version__
from chestdx.inference.prediction import QualityRefused
from chestdx.io import ImageReadError, sniff_format
from chestdx.notice import DISCLAIMER
from chestdx.serve.guard import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_BODY_BUDGET,
    DEFAULT_MAX_HEATMAPS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_UPLOAD,
    DEFAULT_MAX_WORKERS,
    SAFE_METHODS,
    Admission,
    Busy,
    origin_allowed,
)
from chestdx.serve.images import heatmap_png, preview_png
from chestdx.serve.uploads import MultipartCollector, UploadError, safe_name

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 16 * 1024  # boundary lines and part headers around the file
NOTICE = DISCLAIMER
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": "PNG, JPEG or DICOM chest X-ray (frontal view)"}}}}}}}


def _load_predictor(source: Any) -> Any:
    """A run dir or an ``.onnx`` export -> Predictor; a Predictor is used as given."""
    if isinstance(source, (str, Path)):
        from chestdx.inference import load

        return load(source)
    return source


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message, "note": NOTICE}, status_code=status, headers=headers)


class HeatmapRequestError(ValueError):
    """The ``heatmaps`` query names unknown labels or more maps than allowed (HTTP 422)."""


def create_app(run_dir_or_predictor: Any, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               heatmap_method: str = "gradcam", max_heatmaps: int = DEFAULT_MAX_HEATMAPS, *,
               allowed_hosts: Sequence[str] | None = None, allowed_origins: Sequence[str] = (),
               max_workers: int = DEFAULT_MAX_WORKERS, max_queue: int = DEFAULT_MAX_QUEUE,
               queue_timeout_s: float = 60.0, max_pending_bytes: int = DEFAULT_BODY_BUDGET,
               tune_allocator: bool = True) -> FastAPI:
    """App over a run dir, an ``.onnx`` export (no heatmaps) or a ``Predictor``.

    ``allowed_hosts``: Host header values served (default localhost, 127.0.0.1, [::1]; ``["*"]`` = any).
    ``allowed_origins``: other web origins (``https://viewer.example.org``) allowed to POST and read answers
    (CORS enabled for exactly these; off when empty). ``max_workers`` uploads are processed at once and
    ``max_queue`` more may wait up to ``queue_timeout_s`` while the bodies held stay under ``max_pending_bytes``;
    beyond that: 503 with Retry-After. ``max_heatmaps`` caps the Grad-CAMs of one request. ``tune_allocator``
    applies :func:`chestdx.serve.server.tune_allocator` (process-wide glibc malloc settings that keep RSS flat).
    """
    if tune_allocator:
        from chestdx.serve.server import tune_allocator as _tune

        _tune()
    predictor = _load_predictor(run_dir_or_predictor)
    can_explain = bool(getattr(predictor, "can_explain", hasattr(predictor, "heatmaps")))
    max_heatmaps = max(0, int(max_heatmaps))
    admission = Admission(max_workers, max_queue, queue_timeout_s, max(max_pending_bytes, 1))
    # The same max_workers threads do every decode / prediction / heatmap (not the event loop's 40-thread pool):
    # fewer per-thread malloc arenas, so the heap does not fragment across dozens of threads under load.
    workers = ThreadPoolExecutor(max_workers=admission.workers, thread_name_prefix="chestdx-upload")
    hosts = list(DEFAULT_ALLOWED_HOSTS if allowed_hosts is None else allowed_hosts)
    origins = list(allowed_origins)
    page = resources.files("chestdx.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(title="chestdx", version=__version__,
                  description="Chest X-ray findings after an input quality check, with calibrated probabilities, "
                              "out-of-fold operating points with their stated meaning, Grad-CAM heatmaps and an "
                              "unlike-the-training-images notice. " + NOTICE)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        if request.method not in SAFE_METHODS:
            ok, why = origin_allowed(request.headers.get("origin"), request.headers.get("host"), origins,
                                     request.headers.get("sec-fetch-site"), request.url.scheme)
            if not ok:
                return _error(403, why)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        if request.url.path == "/":
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health", summary="Liveness")
    def health() -> dict[str, Any]:
        return {"status": "ok", "arch": predictor.arch}

    @app.get("/api/model", summary="Model facts: labels, calibration and operating points, quality gate, limits")
    def model() -> dict[str, Any]:
        info = dict(predictor.describe())
        info.update({"heatmaps": can_explain,
                     "heatmap_method": heatmap_method if can_explain else None,
                     "max_upload_bytes": max_upload_bytes, "max_heatmaps": max_heatmaps,
                     "max_pixels": _max_pixels(), "max_workers": max_workers, "max_queue": max_queue,
                     "notice": NOTICE})
        return info

    @app.post("/api/predict", summary="Predict findings for one image", openapi_extra=UPLOAD_BODY,
              responses={403: {"description": "cross-origin request"}, 413: {"description": "upload too large"},
                         415: {"description": "not an image"},
                         422: {"description": "image could not be decoded, or a bad heatmaps= value"},
                         503: {"description": "server busy (see Retry-After)"}})
    async def predict(request: Request,
                      heatmaps: str = Query("auto", description="auto (positive findings first, then the most "
                                            "probable labels), none, all, or comma-separated labels; at most "
                                            f"max_heatmaps (default {DEFAULT_MAX_HEATMAPS}) maps per request"),
                      preview: bool = Query(True, description="Return the decoded image as a base64 PNG")):
        try:
            spec = parse_heatmap_spec(heatmaps, predictor.labels, max_heatmaps) if can_explain else []
        except HeatmapRequestError as err:
            return _error(422, str(err))
        limit = max_upload_bytes + MULTIPART_OVERHEAD
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _error(413, f"upload too large: the limit is {max_upload_bytes // 1024} KiB")
        nbytes = int(declared) if declared.isdigit() else limit  # chunked: count the worst case
        try:
            admission.admit(nbytes)
        except Busy as busy:
            return _error(503, busy.message, {"Retry-After": str(busy.retry_after)})
        try:
            return await _handle_upload(request, spec, preview, limit)
        except Busy as busy:
            return _error(503, busy.message, {"Retry-After": str(busy.retry_after)})
        except UploadError as err:
            return _error(err.status, err.message)
        finally:
            admission.release(nbytes)

    async def _handle_upload(request: Request, spec: list[str] | str, preview: bool, limit: int) -> Any:
        collector = MultipartCollector(request.headers.get("content-type"))
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _error(413, f"upload too large: the limit is {max_upload_bytes // 1024} KiB")
            collector.write(chunk)
        fields = collector.finish()
        if "file" not in fields:
            return _error(422, "no file: send the image in the multipart field 'file'")
        client_name, data = fields["file"]
        if len(data) > max_upload_bytes:
            return _error(413, f"upload too large: the limit is {max_upload_bytes // 1024} KiB")
        name = safe_name(client_name)
        if not data:
            return _error(422, "the uploaded file is empty")
        if sniff_format(data, name) is None:
            return _error(415, "unsupported file type: this is not a PNG, JPEG or DICOM image")
        async with admission.slot():
            try:
                job = functools.partial(_predict_one, predictor, data, name, spec, preview, heatmap_method,
                                        max_heatmaps)
                return await asyncio.get_running_loop().run_in_executor(workers, job)
            except QualityRefused as err:
                return _error(422, f"refused by the quality gate: {err.reason}. Upload a frontal chest X-ray.")
            except ImageReadError as err:
                return _error(422, f"the image could not be decoded: {err.reason}")

    if origins:  # CORS only for origins the operator named; never a wildcard by default
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type"])
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)  # added last = outermost
    app.state.admission = admission
    return app


def _max_pixels() -> int:
    from chestdx.io import limits

    return limits.MAX_PIXELS


def parse_heatmap_spec(spec: str | None, labels: Sequence[str], limit: int) -> list[str] | str:
    """The ``heatmaps`` query -> "auto", or the labels to explain (``[]`` for none).

    Label names match case-insensitively and duplicates are ignored; unknown names, or more distinct labels than
    ``limit`` (``all`` included, when the model has more labels), raise :class:`HeatmapRequestError`.
    """
    text = (spec or "auto").strip()
    low = text.lower()
    if low in ("", "auto"):
        return "auto"
    if low == "none":
        return []
    canon = {lb.lower(): lb for lb in labels}
    if low == "all":
        wanted = list(labels)
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = sorted({n for n in names if n.lower() not in canon})
        if unknown:
            shown = ", ".join(repr(u[:40]) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise HeatmapRequestError(f"unknown label(s) in heatmaps=: {shown}; known labels: {', '.join(labels)}")
        wanted = list(dict.fromkeys(canon[n.lower()] for n in names))
    if len(wanted) > limit:
        raise HeatmapRequestError(f"heatmaps={text[:60]!r} asks for {len(wanted)} heatmaps; this server computes "
                                  f"at most {limit} per request (ask for fewer labels, or 'auto')")
    return wanted


def _auto_labels(pred: Any, labels: list[str], limit: int) -> list[str]:
    """The most probable positive findings first, then the most probable others, ``limit`` in all."""
    top = sorted(labels, key=lambda lb: -pred.probabilities[lb])
    return ([lb for lb in top if lb in pred.findings] + [lb for lb in top if lb not in pred.findings])[:limit]


def _predict_one(predictor: Any, data: bytes, name: str, spec: list[str] | str, preview: bool, method: str,
                 max_heatmaps: int) -> dict[str, Any]:
    # the maps are computed in the same pass, on the same model input, once the probabilities are known
    wanted = (lambda p: _auto_labels(p, predictor.labels, max_heatmaps)) if spec == "auto" else list(spec)
    pred, image = predictor.predict_bytes(data, name, heatmaps=wanted, method=method)
    # None = an empty Grad-CAM map (no region increased this label's score)
    maps = {lb: heatmap_png(h) if float(h.max()) > 0 else None for lb, h in pred.heatmaps.items()}
    rows = [{"label": lb, "probability": pred.probabilities[lb], "raw_probability": pred.raw_probabilities[lb],
             "threshold": pred.thresholds.get(lb), "positive": lb in pred.findings,
             "callable": lb not in pred.not_callable, "reason": pred.not_callable.get(lb),
             "statement": pred.statements.get(lb)} for lb in predictor.labels]
    out: dict[str, Any] = {
        "quality": {"verdict": pred.quality, "prob": pred.quality_prob, "corrected": pred.corrected,
                    "note": (pred.corrected or (pred.ood_reasons[-1] if pred.quality not in (None, "frontal")
                                                and pred.ood_reasons else None))},
        "labels": rows, "findings": list(pred.findings), "policy": pred.policy,
        "ood": {"score": pred.ood_score, "flag": pred.ood_flag, "reasons": pred.ood_reasons,
                "warning": pred.warning},
        "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
        "heatmaps": maps, "heatmap_method": method if maps else None, "notice": NOTICE,
    }
    if preview:
        out["image"]["preview_png"] = preview_png(image)
    return out
