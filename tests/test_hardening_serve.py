"""Web app hardening: Host allow-list, cross-origin POSTs, CORS off by default, heatmap caps, bounded admission
(503 + Retry-After), oversized images, and no tensors leaked per heatmap request."""

from __future__ import annotations

import gc
import io
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from chestdx.inference.prediction import Prediction
from chestdx.io import decode_image_bytes
from chestdx.serve.app import create_app, parse_heatmap_spec
from chestdx.serve.guard import Admission, Busy, normalize_origin, origin_allowed
from chestdx.serve.server import BackgroundServer
from test_io import huge_png_header

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Mass", "Nodule", "Pneumonia"]


class FakePredictor:
    """The Predictor surface the app uses, with real decoding, counted calls and an optional gate to hold work."""

    arch = "fake"
    can_explain = True
    labels = LABELS

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.calls = 0
        self.heatmap_batches: list[list[int]] = []

    def describe(self) -> dict:
        return {"arch": self.arch, "labels": self.labels, "ood": None}

    def predict_bytes(self, data: bytes, name: str = "upload", heatmaps=False, method: str = "gradcam"):
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        img = decode_image_bytes(data, name)
        probs = {lb: 0.1 * (i + 1) for i, lb in enumerate(self.labels)}
        pred = Prediction(source=name, probabilities=probs, raw_probabilities=probs,
                          thresholds=dict.fromkeys(self.labels, 0.45), findings=[lb for lb in self.labels
                                                                                 if probs[lb] >= 0.45])
        wanted = list(heatmaps(pred) if callable(heatmaps) else heatmaps or [])
        if wanted:  # one batch of maps per request, as the real Predictor computes them
            self.heatmap_batches.append([self.labels.index(lb) for lb in wanted])
            ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
            pred.heatmaps = dict.fromkeys(wanted, ramp)
        return pred, img


def _png(size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((size, size)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _post(client, data: bytes | None = None, headers: dict | None = None, **params):
    return client.post("/api/predict", files={"file": ("x.png", data or _png(), "image/png")}, params=params,
                       headers=headers or {})


@pytest.fixture
def fake() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def client(fake: FakePredictor) -> TestClient:
    return TestClient(create_app(fake), base_url="http://localhost")


# ------------------------------------------------------------------ Host / Origin / CORS


def test_host_allow_list(fake: FakePredictor) -> None:
    app = create_app(fake)
    assert TestClient(app, base_url="http://localhost:8000").get("/api/health").status_code == 200
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/health").status_code == 200
    assert TestClient(app, base_url="http://[::1]:8000").get("/api/health").status_code == 200
    r = TestClient(app, base_url="http://attacker.example").get("/api/health")  # DNS rebinding
    assert r.status_code == 400
    assert _post(TestClient(app, base_url="http://attacker.example")).status_code == 400 and fake.calls == 0
    wide = create_app(fake, allowed_hosts=["xray.clinic.local"])
    assert TestClient(wide, base_url="http://xray.clinic.local").get("/api/health").status_code == 200
    assert TestClient(wide, base_url="http://localhost").get("/api/health").status_code == 400


def test_cross_origin_posts_refused_before_any_work(client: TestClient, fake: FakePredictor) -> None:
    assert _post(client, headers={"Origin": "http://localhost"}).status_code == 200  # the page itself
    assert _post(client).status_code == 200  # curl / scripts send no Origin
    for origin in ("https://evil.example", "null", "http://localhost:9999", "http://localhost.evil.example"):
        r = _post(client, headers={"Origin": origin})
        assert r.status_code == 403, origin
        assert "refused" in r.json()["detail"]
    r = _post(client, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert fake.calls == 2


def test_cors_off_by_default_and_on_only_for_named_origins(fake: FakePredictor) -> None:
    plain = TestClient(create_app(fake), base_url="http://localhost")
    r = plain.get("/api/model", headers={"Origin": "https://viewer.example.org"})
    assert "access-control-allow-origin" not in r.headers
    app = create_app(fake, allowed_origins=["https://viewer.example.org"])
    c = TestClient(app, base_url="http://localhost")
    r = _post(c, headers={"Origin": "https://viewer.example.org"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://viewer.example.org"
    assert _post(c, headers={"Origin": "https://other.example.org"}).status_code == 403


def test_origin_helpers() -> None:
    assert normalize_origin("HTTP://LocalHost:80") == "http://localhost"
    assert normalize_origin("https://a.b:8443/") == "https://a.b:8443"
    assert normalize_origin("null") is None and normalize_origin("file://") is None
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", [], None)[0]
    assert not origin_allowed("http://127.0.0.1:8001", "127.0.0.1:8000", [], None)[0]
    assert origin_allowed("http://localhost", "localhost:80", [], None)[0]
    assert origin_allowed(None, "localhost", [], "same-origin")[0]


# ------------------------------------------------------------------ heatmaps per request


def test_heatmap_spec_rules() -> None:
    assert parse_heatmap_spec("auto", LABELS, 4) == "auto" and parse_heatmap_spec("none", LABELS, 4) == []
    assert parse_heatmap_spec("mass,Mass, MASS ,Effusion", LABELS, 4) == ["Mass", "Effusion"]
    assert parse_heatmap_spec(",".join(["Cardiomegaly"] * 200), LABELS, 4) == ["Cardiomegaly"]
    assert parse_heatmap_spec("all", LABELS, 6) == LABELS
    with pytest.raises(ValueError, match="unknown label.*'Fracture'"):
        parse_heatmap_spec("Mass,Fracture", LABELS, 4)
    with pytest.raises(ValueError, match="asks for 5 heatmaps.*at most 4"):
        parse_heatmap_spec("Mass,Nodule,Effusion,Pneumonia,Atelectasis", LABELS, 4)
    with pytest.raises(ValueError, match="asks for 6 heatmaps"):
        parse_heatmap_spec("all", LABELS, 4)


def test_heatmap_requests_capped_deduplicated_and_validated(client: TestClient, fake: FakePredictor) -> None:
    r = _post(client, heatmaps=",".join(["Cardiomegaly"] * 200))
    assert r.status_code == 200 and list(r.json()["heatmaps"]) == ["Cardiomegaly"]
    assert fake.heatmap_batches[-1] == [LABELS.index("Cardiomegaly")]
    r = _post(client, heatmaps="Cardiomegaly,Fracture")
    assert r.status_code == 422 and "Fracture" in r.json()["detail"]
    r = _post(client, heatmaps="all")
    assert r.status_code == 422 and "at most 4" in r.json()["detail"]
    calls = fake.calls
    assert _post(client, heatmaps="x" * 5000).status_code == 422 and fake.calls == calls  # refused before work
    r = _post(client)  # auto: capped at max_heatmaps, positive findings first
    assert r.status_code == 200 and list(r.json()["heatmaps"]) == ["Pneumonia", "Nodule", "Mass", "Effusion"]
    assert client.get("/api/model").json()["max_heatmaps"] == 4


# ------------------------------------------------------------------ admission / 503


def test_busy_server_answers_503_with_retry_after() -> None:
    gate = threading.Event()
    fake = FakePredictor(gate)
    app = create_app(fake, max_workers=1, max_queue=1)
    data = _png()
    with BackgroundServer(app) as url:
        def call(_):
            return httpx.post(f"{url}/api/predict", params={"heatmaps": "none"}, timeout=30,
                              files={"file": ("x.png", data, "image/png")})

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(call, i) for i in range(4)]
            for _ in range(400):  # one runs (held by the gate), one waits for the worker, two are turned away
                if sum(f.done() for f in futures) >= 2:
                    break
                threading.Event().wait(0.05)
            early = sorted(f.result().status_code for f in futures if f.done())
            gate.set()
            results = [f.result() for f in futures]
        assert early == [503, 503]
        assert sorted(r.status_code for r in results) == [200, 200, 503, 503]
        r503 = next(r for r in results if r.status_code == 503)
        assert int(r503.headers["retry-after"]) >= 1 and "busy" in r503.json()["detail"]
        assert httpx.get(f"{url}/api/health").json()["status"] == "ok"
        assert call(0).status_code == 200  # capacity is given back


def test_admission_body_budget() -> None:
    adm = Admission(workers=1, queue=10, body_budget=1000)
    adm.admit(5000)  # the first request always fits (the upload limit bounds it)
    with pytest.raises(Busy):
        adm.admit(10)
    adm.release(5000)
    adm.admit(600)
    with pytest.raises(Busy) as err:
        adm.admit(600)
    assert err.value.retry_after >= 1
    adm.admit(300)
    assert adm.inflight == 2 and adm.pending_bytes == 900


def test_oversized_image_is_422_quickly(client: TestClient) -> None:
    r = _post(client, huge_png_header(10000, 10000))
    assert r.status_code == 422 and "above the 36 MP limit" in r.json()["detail"]


# ------------------------------------------------------------------ real model: no tensors kept per request


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_heatmap_requests_leak_no_tensors(tiny_run: Path) -> None:
    from chestdx.inference import Predictor

    predictor = Predictor.from_run(tiny_run, gate=None)
    client = TestClient(create_app(predictor), base_url="http://localhost")
    data = _png(96)
    for _ in range(3):  # warm-up
        assert _post(client, data, heatmaps="auto", preview="false").status_code == 200
    before = _live_tensors()
    for _ in range(25):
        r = _post(client, data, heatmaps="auto", preview="false")
        assert r.status_code == 200 and r.json()["heatmaps"]
    assert _live_tensors() - before <= 2  # was +5 per call before the fix


def test_tune_allocator_applies_on_glibc() -> None:
    import platform

    from chestdx.serve.server import tune_allocator

    applied = tune_allocator()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied
