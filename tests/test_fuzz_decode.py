"""Fuzz: mutated real PNG / JPEG / DICOM bytes through ``decode_image_bytes``, ``read_image`` and the upload
endpoint. Only ``ImageReadError`` may escape the decoder; the endpoint answers 200 / 413 / 415 / 422, never 500;
peak memory stays bounded. Hypothesis runs derandomized (same cases every run), a few thousand in all."""

from __future__ import annotations

import functools
import io
import resource
import struct
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from chestdx.io import ImageReadError, decode_image_bytes, read_image
from conftest import data_root
from test_io import make_dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every broken element


def fuzz(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def _crop() -> np.ndarray:
    """A 64x64 crop of a real chest X-ray (nih-sample) when the data is there, else a smooth phantom."""
    images = sorted((data_root() / "nih-sample" / "images").glob("*.png"))
    if images:
        with Image.open(images[0]) as im:
            return np.asarray(im.convert("L").resize((64, 64), Image.Resampling.BILINEAR))
    yy, xx = np.mgrid[0:64, 0:64]
    return ((np.sin(xx / 7) * np.cos(yy / 5) + 1) * 127).astype(np.uint8)


def _enc(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _dicom(px: np.ndarray, photometric: str = "MONOCHROME2", **attrs) -> bytes:
    buf = io.BytesIO()
    make_dicom(px.astype(np.uint16) * 16, photometric, **attrs).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@functools.cache
def seeds() -> tuple[tuple[str, bytes], ...]:
    g = _crop()
    im = Image.fromarray(g)
    rgb = Image.merge("RGB", (im, im, im))
    out = [
        ("a.png", _enc(im, "PNG")),
        ("b.png", _enc(Image.fromarray(g.astype(np.uint16) * 257), "PNG")),  # 16-bit
        ("c.png", _enc(rgb.convert("P"), "PNG")),
        ("d.jpg", _enc(im, "JPEG", quality=80)),
        ("e.jpg", _enc(rgb, "JPEG", quality=80, progressive=True)),
        ("f.dcm", _dicom(g)),
        ("g.dcm", _dicom(g, "MONOCHROME1", RescaleSlope=-1, RescaleIntercept=4095, WindowCenter=2000,
                         WindowWidth=1500)),
        ("h.dcm", _dicom(g)[128 + 4:]),  # no preamble: the DICOM-RAW path (trusted from the extension)
    ]
    return tuple(out)


_OPS = ("flip", "set", "insert", "delete", "truncate", "dup", "int32")
# half the mutations land in the first 400 bytes (headers: PNG IHDR, JPEG markers, DICOM meta + image module)
_POS = st.one_of(st.integers(0, 400), st.integers(0, 1 << 20))
mutation = st.tuples(st.sampled_from(_OPS), _POS, st.integers(0, 255), st.integers(1, 48))


def mutate(data: bytes, muts: list[tuple[str, int, int, int]]) -> bytes:
    b = bytearray(data)
    for op, pos, val, n in muts:
        if not b:
            break
        i = pos % len(b)
        if op == "flip":
            b[i] ^= 1 << (val % 8)
        elif op == "set":
            b[i] = val
        elif op == "insert":
            b[i:i] = bytes([val]) * n
        elif op == "delete":
            del b[i:i + n]
        elif op == "truncate":
            del b[max(1, i):]
        elif op == "dup":
            b[i:i] = b[i:i + n]
        else:  # a header-sized integer: huge widths, lengths, VRs
            b[i:i + 4] = struct.pack(">I", (val << 24) | (pos & 0xFFFFFF))
    return bytes(b)


def _check_decoded(img: np.ndarray) -> None:
    assert img.dtype == np.float32 and img.ndim == 2 and min(img.shape) >= 1
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def rss_guard():
    before = _peak_rss_mb()
    yield
    grown = _peak_rss_mb() - before
    assert grown < 800, f"peak RSS grew {grown:.0f} MB while fuzzing"


@fuzz(2500)
@given(k=st.integers(0, 7), muts=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_decode_image_bytes(rss_guard, k: int, muts) -> None:
    name, data = seeds()[k]
    try:
        img = decode_image_bytes(mutate(data, muts), name)
    except ImageReadError as err:
        assert name in str(err) and err.reason
        return
    _check_decoded(img)


@fuzz(300)
@given(k=st.integers(0, 7), muts=st.lists(mutation, max_size=3), ext=st.sampled_from([".png", ".dcm", "", ".jpg"]))
def test_fuzz_read_image(tmp_path_factory, rss_guard, k: int, muts, ext: str) -> None:
    path = tmp_path_factory.getbasetemp() / f"fuzz{ext}"
    path.write_bytes(mutate(seeds()[k][1], muts))
    try:
        img = read_image(path)
    except ImageReadError as err:
        assert str(path) in str(err)
        return
    _check_decoded(img)


@pytest.fixture(scope="module")
def client(tiny_run: Path) -> TestClient:
    from chestdx.inference import Predictor
    from chestdx.serve.app import create_app

    app = create_app(Predictor.from_run(tiny_run, gate=None), max_upload_bytes=64 * 1024, max_heatmaps=2)
    return TestClient(app, base_url="http://localhost")  # server exceptions are raised into the test


@fuzz(400)
@given(k=st.integers(0, 7), muts=st.lists(mutation, max_size=3),
       envelope=st.lists(mutation, max_size=2), heatmaps=st.sampled_from(["none", "auto", "Mass,mass", "Nope"]))
def test_fuzz_upload_endpoint(client: TestClient, rss_guard, k: int, muts, envelope, heatmaps: str) -> None:
    name, data = seeds()[k]
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name.encode()
            + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + mutate(data, muts) + b"\r\n--xyz--\r\n")
    if envelope:  # sometimes break the multipart envelope itself
        body = mutate(body, envelope)
    r = client.post("/api/predict", content=body, params={"heatmaps": heatmaps, "preview": "false"},
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code in (200, 400, 413, 415, 422), r.text
    if r.status_code != 200:
        assert r.json()["detail"]
