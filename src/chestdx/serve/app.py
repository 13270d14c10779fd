"""FastAPI web app: one static page + a JSON API over a Predictor (``create_app(run_dir_or_predictor)``).

Upload path security:
- the request body is read into memory with a hard cap (``max_upload_bytes``; 413 beyond it, checked on the
  Content-Length header first and again while streaming) and parsed in memory (no temp-file spooling);
- the bytes are decoded by ``chestdx.io.decode_image_bytes`` (format sniffed from content, pixel-count limit
  against decompression bombs); nothing uploaded is written to disk or logged;
- the client's file name is reduced to a fixed ``upload.<ext>`` hint; no request value is ever used as a path
  (the page is served from memory, read once from the package at start-up).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from chestdx.io import ImageReadError, sniff_format
from chestdx.serve.images import heatmap_png, preview_png
from chestdx.serve.uploads import UploadError, parse_multipart, safe_name

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024
MULTIPART_OVERHEAD = 16 * 1024  # boundary lines and part headers around the file
NOTICE = "Decision support only — not a diagnosis. A qualified clinician must review every image."
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": "PNG, JPEG or DICOM chest X-ray (frontal view)"}}}}}}}


def _load_predictor(source: Any) -> Any:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix == ".onnx":
            from chestdx.serve.onnx_predictor import OnnxPredictor

            return OnnxPredictor(path)
        from chestdx.inference import Predictor

        return Predictor.from_run(path)
    return source


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message, "note": NOTICE}, status_code=status)


def create_app(run_dir_or_predictor: Any, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               heatmap_method: str = "gradcam", max_heatmaps: int = 4) -> FastAPI:
    """App over a run dir, an ``.onnx`` file (no heatmaps), a ``Predictor`` or an ``OnnxPredictor``."""
    predictor = _load_predictor(run_dir_or_predictor)
    can_explain = hasattr(predictor, "heatmaps")
    page = resources.files("chestdx.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(title="chestdx", version="0.1.0",
                  description="Chest X-ray findings with calibrated probabilities, validation-chosen thresholds, "
                              "Grad-CAM heatmaps and an out-of-distribution warning. " + NOTICE)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
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

    @app.get("/api/model", summary="Model facts: labels, thresholds, temperature, OOD gate, limits")
    def model() -> dict[str, Any]:
        info = dict(predictor.describe())
        info.update({"backend": "torch" if can_explain else "onnxruntime", "heatmaps": can_explain,
                     "heatmap_method": heatmap_method if can_explain else None,
                     "max_upload_bytes": max_upload_bytes, "notice": NOTICE})
        return info

    @app.post("/api/predict", summary="Predict findings for one image", openapi_extra=UPLOAD_BODY,
              responses={413: {"description": "upload too large"}, 415: {"description": "not an image"},
                         422: {"description": "image could not be decoded"}})
    async def predict(request: Request,
                      heatmaps: str = Query("auto", description="auto (positive findings + top labels), none, "
                                                                "all, or comma-separated labels"),
                      preview: bool = Query(True, description="Return the decoded image as a base64 PNG")):
        limit = max_upload_bytes + MULTIPART_OVERHEAD
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _error(413, f"upload too large: the limit is {max_upload_bytes // 1024} KiB")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _error(413, f"upload too large: the limit is {max_upload_bytes // 1024} KiB")
            chunks.append(chunk)
        try:
            fields = parse_multipart(b"".join(chunks), request.headers.get("content-type"))
        except UploadError as err:
            return _error(err.status, err.message)
        del chunks
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
        try:
            return await run_in_threadpool(_predict_one, predictor, data, name, heatmaps, preview,
                                           heatmap_method, max_heatmaps, can_explain)
        except ImageReadError as err:
            return _error(422, f"the image could not be decoded: {err.reason}")

    return app


def _heatmap_labels(pred: Any, labels: list[str], spec: str, limit: int) -> list[str]:
    spec = (spec or "auto").strip()
    if spec == "none":
        return []
    if spec == "all":
        return list(labels)
    if spec == "auto":  # the most probable positive findings first, then the most probable others
        top = sorted(labels, key=lambda lb: -pred.probabilities[lb])
        return ([lb for lb in top if lb in pred.findings] + [lb for lb in top if lb not in pred.findings])[:limit]
    return [lb for lb in (s.strip() for s in spec.split(",")) if lb in labels]


def _predict_one(predictor: Any, data: bytes, name: str, heatmaps: str, preview: bool, method: str,
                 max_heatmaps: int, can_explain: bool) -> dict[str, Any]:
    pred, image = predictor.predict_bytes(data, name)
    maps: dict[str, str | None] = {}
    wanted = _heatmap_labels(pred, predictor.labels, heatmaps, max_heatmaps) if can_explain else []
    if wanted:
        u8 = predictor.preprocess(image)[None].repeat(len(wanted), axis=0)
        hm = predictor.heatmaps(u8, [predictor.labels.index(lb) for lb in wanted], method=method)
        # None = an empty Grad-CAM map (no region increased this label's score)
        maps = {lb: heatmap_png(h) if float(h.max()) > 0 else None for lb, h in zip(wanted, hm, strict=True)}
    rows = [{"label": lb, "probability": pred.probabilities[lb], "raw_probability": pred.raw_probabilities[lb],
             "threshold": pred.thresholds.get(lb), "positive": lb in pred.findings} for lb in predictor.labels]
    out: dict[str, Any] = {
        "labels": rows, "findings": list(pred.findings),
        "ood": {"score": pred.ood_score, "flag": pred.ood_flag, "reasons": pred.ood_reasons,
                "warning": pred.warning},
        "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
        "heatmaps": maps, "heatmap_method": method if maps else None, "notice": NOTICE,
    }
    if preview:
        out["image"]["preview_png"] = preview_png(image)
    return out
