"""Decoding budget (pixel limit, reduced decoding of large images) and negative-slope DICOM windowing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from chestdx.io import ImageReadError, decode_image_bytes, limits, read_image
from chestdx.io.dicom import block_mean
from test_io import RAMP, huge_png_header, make_dicom, windowed, write_dicom

REPO = Path(__file__).resolve().parents[1]


def _png(arr: np.ndarray, mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(buf, format="PNG", **save)
    return buf.getvalue()


def _smooth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return (np.sin(xx / 37.0) * np.cos(yy / 23.0) + 1) / 2


# ------------------------------------------------------------------ negative RescaleSlope + VOI window


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_negative_slope_window_matches_standard_pipeline(tmp_path: Path, photometric: str) -> None:
    """Was an all-zero image: pydicom maps the window onto the rescaled output range, reversed by slope < 0."""
    attrs = {"RescaleSlope": -1, "RescaleIntercept": 4095, "WindowCenter": 2500, "WindowWidth": 1200}
    ds = make_dicom(RAMP, photometric, **attrs)
    img = read_image(write_dicom(tmp_path, ds, "neg.dcm"))
    x = RAMP.astype(np.float64) * -1 + 4095  # modality values (PS3.3 C.11.1), then the LINEAR window (C.11.2)
    want = windowed(x, 2500, 1200)
    if photometric == "MONOCHROME1":
        want = 1 - want
    assert img.std() > 0.1
    np.testing.assert_allclose(img, want, atol=1e-6)
    # pydicom's own pipeline (modality LUT -> VOI LUT), scaled by the window's output for far-below/far-above
    # inputs: the same image whatever the sign of the slope
    out = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    lo, hi = apply_voi_lut(np.array([-1e30, 1e30]), ds)
    ref = (out - lo) / (hi - lo)
    np.testing.assert_allclose(img, 1 - ref if photometric == "MONOCHROME1" else ref, atol=1e-6)


def test_negative_slope_equals_the_same_values_stored_with_positive_slope(tmp_path: Path) -> None:
    window = {"WindowCenter": 1800, "WindowWidth": 900}
    neg = read_image(write_dicom(tmp_path, make_dicom(RAMP, RescaleSlope=-2, RescaleIntercept=8190, **window), "a.dcm"))
    flipped = (4095 - RAMP).astype(np.uint16)  # same modality values: 2 * (4095 - raw) = -2 * raw + 8190
    pos = read_image(write_dicom(tmp_path, make_dicom(flipped, RescaleSlope=2, RescaleIntercept=0, **window), "b.dcm"))
    np.testing.assert_allclose(neg, pos, atol=1e-6)


# ------------------------------------------------------------------ pixel limit


def test_default_pixel_limit_well_below_100_mp() -> None:
    assert limits.MAX_PIXELS <= 50_000_000
    with pytest.raises(ImageReadError, match=r"bomb\.png.*10000x10000 = 100 MP, above the 36 MP limit"):
        decode_image_bytes(huge_png_header(10000, 10000), "bomb.png")


def test_limits_come_from_the_environment() -> None:
    code = "from chestdx.io import limits; print(limits.MAX_PIXELS, limits.DECODE_MAX_SIDE)"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CHESTDX_MAX_PIXELS": "1_000_000",
           "CHESTDX_DECODE_MAX_SIDE": "512"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1000000", "512"]
    env["CHESTDX_MAX_PIXELS"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == str(36_000_000) and "CHESTDX_MAX_PIXELS" in out.stderr


# ------------------------------------------------------------------ reduced decoding


def test_small_images_are_decoded_at_full_size() -> None:
    data = _png((_smooth(300, 500) * 255).astype(np.uint8))
    full = decode_image_bytes(data, "a.png", max_side=0)
    np.testing.assert_array_equal(decode_image_bytes(data, "a.png"), full)
    assert full.shape == (300, 500)
    assert limits.reduce_factor(4095, 100) == 1 and limits.reduce_factor(4096, 100) == 2


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "RGBA", "P", "1"])
def test_large_raster_is_box_reduced(mode: str) -> None:
    g = _smooth(330, 410)
    arr = (g * 65535).astype(np.uint16) if mode == "I;16" else (g * 255).astype(np.uint8)
    data = _png(arr, None if mode in ("L", "I;16") else mode)
    full = decode_image_bytes(data, "x.png", max_side=0)
    got = decode_image_bytes(data, "x.png", max_side=100)  # 410 // 100 = 4
    assert got.dtype == np.float32 and got.ndim == 2 and got.shape == (83, 103)
    assert 0.0 <= got.min() and got.max() <= 1.0
    ref = block_mean(full, 4)
    tol = 0.35 if mode == "1" else 0.03  # 1-bit: averaging the bits vs. thresholding them
    assert np.abs(got[: ref.shape[0], : ref.shape[1]] - ref).mean() < tol


def test_large_jpeg_uses_dct_scaling() -> None:
    rgb = (np.stack([_smooth(900, 1300)] * 3, -1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    full = decode_image_bytes(buf.getvalue(), "x.jpg", max_side=0)
    got = decode_image_bytes(buf.getvalue(), "x.jpg", max_side=300)  # 1300 // 300 = 4 -> draft 1/4
    assert got.shape == (225, 325)
    assert np.abs(got - block_mean(full, 4)[:225, :325]).mean() < 0.02


def test_large_dicom_is_block_averaged_before_the_luts(tmp_path: Path) -> None:
    raw = (_smooth(301, 250) * 4000).astype(np.uint16)
    ds = make_dicom(raw, "MONOCHROME1", RescaleSlope=0.5, RescaleIntercept=-10, WindowCenter=1000, WindowWidth=3000)
    path = write_dicom(tmp_path, ds, "big.dcm")
    full = read_image(path, max_side=0)
    got = read_image(path, max_side=100)  # 301 // 100 = 3
    assert got.shape == (100, 83) and got.dtype == np.float32
    np.testing.assert_allclose(got, block_mean(full, 3), atol=1e-5)  # window linear over this range


def test_reduced_png_decode_allocates_no_full_size_float(tmp_path: Path) -> None:
    """A 6000x6000 grayscale PNG: numpy allocations stay far below one full-size float32 copy (144 MB)."""
    tile = (_smooth(600, 600) * 255).astype(np.uint8)
    data = _png(np.tile(tile, (10, 10)), compress_level=1)
    tracemalloc.start()
    try:
        img = decode_image_bytes(data, "big.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert img.shape == (3000, 3000)  # 6000 // 2048 = 2
    assert peak < 80e6, f"peak numpy allocations {peak / 1e6:.0f} MB"


def test_oversized_image_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png(np.zeros((10, 10), np.uint8)))
    with pytest.raises(ImageReadError, match=r"huge\.png.*10x10 = 0\.0001 MP, above the 5e-05 MP limit"):
        read_image(path, max_pixels=50)


def test_stats_report_stored_size_and_the_ood_colour_spread() -> None:
    from chestdx.inference.ood import colour_spread as ood_colour_spread

    rng = np.random.default_rng(0)
    photo = (rng.random((300, 420, 3)) * 255).astype(np.uint8)
    for data in (_png(photo), _png((_smooth(300, 420) * 255).astype(np.uint8))):
        stats: dict = {}
        decode_image_bytes(data, "x.png", stats=stats, max_side=100)
        assert (stats["width"], stats["height"], stats["reduced_by"]) == (420, 300, 4.0)
        full: dict = {}
        decode_image_bytes(data, "x.png", stats=full)
        assert full["colour_spread"] == pytest.approx(ood_colour_spread(data), abs=1e-9)
    smooth_photo = (np.stack([_smooth(300, 420), _smooth(420, 300).T, 1 - _smooth(300, 420)], -1) * 255)
    data = _png(smooth_photo.astype(np.uint8))
    stats = {}
    decode_image_bytes(data, "x.png", stats=stats, max_side=100)  # measured on the reduced pixels
    assert stats["colour_spread"] > 0.2
    assert stats["colour_spread"] == pytest.approx(ood_colour_spread(data), abs=0.02)


def test_dicom_header_element_with_unknown_vr_is_a_clean_error() -> None:
    """Found by the upload fuzz test: pydicom raises NotImplementedError for an unknown VR when the header element
    is first read; it must come out as ImageReadError naming the file."""
    import io as _io

    buf = _io.BytesIO()
    make_dicom(np.zeros((4, 4))).save_as(buf, enforce_file_format=True)
    data = bytearray(buf.getvalue())
    i = data.index(b"\x28\x00\x11\x00")  # (0028,0011) Columns: corrupt its VR "US" into "TS"
    data[i + 4:i + 6] = b"TS"
    with pytest.raises(ImageReadError, match="fuzz.dcm"):
        decode_image_bytes(bytes(data), "fuzz.dcm")
