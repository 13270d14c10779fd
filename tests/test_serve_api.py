"""Web API: predictions, limits (413), wrong types (415/422), malformed DICOM, concurrency, no disk writes."""

from __future__ import annotations

import base64
import io
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from chestdx.inference import Predictor
from chestdx.io import read_image
from chestdx.serve.app import create_app
from chestdx.serve.images import heatmap_png
from chestdx.serve.server import BackgroundServer

LIMIT = 400_000


@pytest.fixture(scope="module")
def predictor(tiny_run: Path) -> Predictor:
    """The phantom model without the quality gate: its synthetic images are not chest X-rays, and the gate
    (tested below and in test_quality_gate.py) would refuse them."""
    return Predictor.from_run(tiny_run, gate=None)


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> TestClient:
    return TestClient(create_app(predictor, max_upload_bytes=LIMIT), base_url="http://localhost")


def _post(client, data: bytes, name: str = "x.png", **params):
    return client.post("/api/predict", files={"file": (name, data, "application/octet-stream")}, params=params)


def _dicom_bytes() -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("mem.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    yy, xx = np.mgrid[0:96, 0:80]
    ds.Rows, ds.Columns = yy.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = ((np.sin(xx / 9.0) * np.cos(yy / 7.0) + 1) * 2000).astype("<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_health_model_docs(client: TestClient, predictor: Predictor) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    m = client.get("/api/model").json()
    assert m["labels"] == predictor.labels and m["max_upload_bytes"] == LIMIT and m["ood"]["threshold"] > 0
    assert "not a diagnosis" in m["notice"]
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "file" in body["schema"]["properties"]
    page = client.get("/")
    assert "Decision support only — not a diagnosis" in page.text
    assert "default-src" in page.headers["content-security-policy"]


@pytest.mark.data
def test_predict_real_image(client: TestClient, predictor: Predictor, nih_sample: Path) -> None:
    path = sorted((nih_sample / "images").glob("*.png"))[0]
    r = _post(client, path.read_bytes(), path.name)
    assert r.status_code == 200, r.text
    res = r.json()
    want = predictor.predict([path])[0]
    rows = {row["label"]: row for row in res["labels"]}
    assert set(rows) == set(predictor.labels)
    for lb, row in rows.items():
        assert row["probability"] == pytest.approx(want.probabilities[lb], abs=1e-6)
        assert row["threshold"] == want.thresholds[lb] and row["positive"] == (lb in want.findings)
    assert res["ood"]["score"] == pytest.approx(want.ood_score, rel=1e-5) and isinstance(res["ood"]["flag"], bool)
    assert res["heatmaps"] and res["heatmap_method"] == "gradcam"
    # "auto": called findings first, then the most probable; each map = the map of the Predictor's own model input
    top = sorted(predictor.labels, key=lambda lb: -want.probabilities[lb])
    auto = ([lb for lb in top if lb in want.findings] + [lb for lb in top if lb not in want.findings])
    assert list(res["heatmaps"]) == auto[:len(res["heatmaps"])]
    u8 = predictor.preprocess(read_image(path))[None].repeat(len(res["heatmaps"]), axis=0)
    maps = predictor.heatmaps(u8, [predictor.labels.index(lb) for lb in res["heatmaps"]])
    for lb, h in zip(res["heatmaps"], maps, strict=True):
        assert res["heatmaps"][lb] == (heatmap_png(h) if float(h.max()) > 0 else None)
    for b64 in [m for m in res["heatmaps"].values() if m] + [res["image"]["preview_png"]]:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    assert (res["image"]["width"], res["image"]["height"]) == (512, 512)
    assert _post(client, path.read_bytes(), heatmaps="none").json()["heatmaps"] == {}


def test_dicom_and_colour_photo(client: TestClient) -> None:
    r = _post(client, _dicom_bytes(), "scan.dcm")
    assert r.status_code == 200, r.text
    assert (r.json()["image"]["width"], r.json()["image"]["height"]) == (80, 96)
    photo = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG")
    res = _post(client, buf.getvalue(), "holiday.jpg").json()
    assert res["ood"]["flag"] and "colour" in res["ood"]["warning"]


def test_quality_gate_refuses_a_photo_with_the_reason(tiny_run: Path) -> None:
    gated = TestClient(create_app(Predictor.from_run(tiny_run), max_upload_bytes=LIMIT), base_url="http://localhost")
    photo = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG")
    r = _post(gated, buf.getvalue(), "holiday.jpg")
    assert r.status_code == 422 and "refused by the quality gate" in r.json()["detail"]
    assert gated.get("/api/model").json()["quality_gate"]["classes"][-1] == "not_cxr"


def test_refusals(client: TestClient) -> None:
    too_big = b"\x89PNG\r\n\x1a\n" + os.urandom(LIMIT + 10)
    r = _post(client, too_big)
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    r = _post(client, b"patient notes, definitely not pixels\n" * 20, "notes.txt")
    assert r.status_code == 415 and "not a PNG, JPEG or DICOM" in r.json()["detail"]
    r = _post(client, b"\0" * 128 + b"DICM" + b"\x02\x00garbage-that-is-no-dicom" * 8, "bad.dcm")
    assert r.status_code == 422 and "DICOM" in r.json()["detail"]
    r = _post(client, b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "trunc.png")
    assert r.status_code == 422 and "could not be decoded" in r.json()["detail"]
    assert _post(client, b"", "empty.png").status_code == 422
    r = client.post("/api/predict", json={"file": "abc"})
    assert r.status_code == 415
    r = client.post("/api/predict", files={"image": ("x.png", b"123", "image/png")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]


@pytest.mark.data
def test_concurrent_requests_real_server(predictor: Predictor, nih_sample: Path) -> None:
    files = sorted((nih_sample / "images").glob("*.png"))[:5]
    want = {f.name: predictor.predict([f])[0].probabilities for f in files}
    jobs = [files[i % len(files)] for i in range(20)]
    with BackgroundServer(create_app(predictor, max_upload_bytes=LIMIT)) as url:

        def call(i_path):
            i, path = i_path
            params = {"heatmaps": "auto" if i % 3 == 0 else "none", "preview": "false"}
            r = httpx.post(f"{url}/api/predict", params=params, timeout=120,
                           files={"file": (path.name, path.read_bytes(), "image/png")})
            return path.name, r.status_code, r.json()

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(call, enumerate(jobs)))
    assert len(results) == 20
    for name, status, res in results:
        assert status == 200
        got = {row["label"]: row["probability"] for row in res["labels"]}
        assert got == pytest.approx(want[name], abs=1e-6)


@pytest.mark.data
def test_uploads_never_touch_disk_or_logs(tiny_run: Path, predictor: Predictor, nih_fullres: Path,
                                          tmp_path: Path, monkeypatch, caplog) -> None:
    """A >1 MiB upload (Starlette's UploadFile would spool it to a temp file) leaves the temp dir and the run
    dir unchanged and nothing about it in the logs."""
    system_tmp = tempfile.gettempdir()
    system_before = set(os.listdir(system_tmp))
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # any temp file made in this process lands here
    run_before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tiny_run.rglob("*")}
    src = np.asarray(Image.open(sorted(nih_fullres.glob("images/*.png"))[0]).convert("L"))
    buf = io.BytesIO()
    Image.fromarray(np.kron(src, np.ones((2, 2), np.uint8))).save(buf, format="PNG", compress_level=0)  # 2048 px, 4 MiB
    data = buf.getvalue()
    assert len(data) > 1024 * 1024
    marker = "SECRET-PATIENT-NAME"
    client = TestClient(create_app(predictor, max_upload_bytes=8 * 1024 * 1024), base_url="http://localhost")
    with caplog.at_level(logging.DEBUG):
        assert _post(client, data, f"{marker}.png", heatmaps="none").status_code == 200
        assert _post(client, b"text " * 100, f"{marker}.txt").status_code == 415
        assert _post(client, b"\x89PNG\r\n\x1a\n" + os.urandom(9 * 1024 * 1024), f"{marker}.png").status_code == 413
    assert list(private_tmp.iterdir()) == []
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tiny_run.rglob("*")} == run_before
    assert not any(marker in n for n in set(os.listdir(system_tmp)) - system_before)
    assert marker not in caplog.text
