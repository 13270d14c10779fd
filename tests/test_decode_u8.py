"""The uint8 decode path (``read_image_u8``, ``decode_image_gray``, ``resize_square_u8``) gives exactly the pixels
of the float path (``quantize_u8(read_image)``, ``to_uint8_square(read_image)``) with the same errors, and the
cache, the distributed decoder and the Predictor all feed the model those same pixels."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from chestdx.data.transforms import resize_square_u8, to_uint8_square
from chestdx.io import (
    GrayImage,
    ImageReadError,
    decode_image_bytes,
    decode_image_bytes_u8,
    decode_image_gray,
    quantize_u8,
    read_image,
    read_image_u8,
)
from test_fuzz_decode import fuzz, mutate, mutation, seeds
from test_io import make_dicom, write_dicom

SIZES = (224, 64)


def _enc(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _same_everywhere(data: bytes, name: str, **kw) -> np.ndarray:
    """Assert every decode form agrees with the float path; return the float image."""
    f01 = decode_image_bytes(data, name, **kw)
    u8 = decode_image_bytes_u8(data, name, **kw)
    assert u8.dtype == np.uint8 and u8.shape == f01.shape
    np.testing.assert_array_equal(u8, quantize_u8(f01))
    gray = decode_image_gray(data, name, **kw)
    np.testing.assert_array_equal(gray.img01, f01)  # the float image the gate and checks see: unchanged
    assert gray.img01.dtype == np.float32
    np.testing.assert_array_equal(gray.u8, u8)
    for size in SIZES:
        want = to_uint8_square(f01, size)
        np.testing.assert_array_equal(resize_square_u8(u8, size), want)
        np.testing.assert_array_equal(decode_image_bytes_u8(data, name, size=size, **kw), want)
    return f01


# ---------------------------------------------------------------- exactness of the shortcuts


def test_every_8bit_level_survives_the_float_round_trip() -> None:
    v = np.arange(256, dtype=np.uint8)
    f = v.astype(np.float32) / 255.0
    np.testing.assert_array_equal(quantize_u8(f), v)
    np.testing.assert_array_equal(GrayImage(u8=v[None]).img01, f[None])
    np.testing.assert_array_equal(quantize_u8((1 - f).astype(np.float32)), 255 - v)


def test_all_65536_levels_of_16bit_images() -> None:
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    shuffled = np.random.default_rng(0).permutation(levels.ravel()).reshape(256, 256)
    for arr in (levels, shuffled):
        _same_everywhere(_enc(Image.fromarray(arr), "PNG"), "l16.png")  # mode I;16
        _same_everywhere(_enc(Image.fromarray(arr.astype(np.int32), "I"), "TIFF"), "l16.tif")  # mode I


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 9 + seed) * np.cos(yy / 13) + 1) / 2
    return np.clip(base + rng.normal(0, 0.05, (h, w)), 0, 1)


def _synthetic(mode: str, h: int = 61, w: int = 97, seed: int = 0) -> Image.Image:
    g = _smooth(h, w, seed)
    u8 = (g * 255).astype(np.uint8)
    rgb = np.stack([u8, (_smooth(h, w, seed + 1) * 255).astype(np.uint8), u8[::-1]], -1)
    if mode == "I;16":
        return Image.fromarray((g * 65535).astype(np.uint16))
    if mode == "I;16B":  # big-endian 16-bit (TIFF)
        return Image.frombytes("I;16B", (w, h), (g * 65535).astype(">u2").tobytes())
    if mode in ("RGB", "RGBA", "P", "CMYK"):
        im = Image.fromarray(rgb)
        if mode == "RGBA":
            return Image.merge("RGBA", (*im.split(), Image.fromarray(u8[:, ::-1])))
        return im.convert(mode)
    if mode == "LA":
        return Image.merge("LA", (Image.fromarray(u8), Image.fromarray(u8[::-1])))
    if mode == "1":
        return Image.fromarray(u8).convert("1")
    if mode == "I":  # signed 32-bit with negatives: the float path's min-max branch
        return Image.fromarray((g * 70000 - 1000).astype(np.int32), "I")
    if mode == "I16":  # 32-bit holding 16-bit values (older Pillows open 16-bit PNGs so): the / 65535 branch
        return Image.fromarray((g * 65535).astype(np.int32), "I")
    if mode == "F":
        return Image.fromarray((g * 3 - 1).astype(np.float32), "F")
    return Image.fromarray(u8)


CASES = [("L", "PNG"), ("LA", "PNG"), ("1", "PNG"), ("P", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"),
         ("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF"), ("I16", "TIFF"), ("F", "TIFF"),
         ("L", "JPEG"), ("RGB", "JPEG"), ("CMYK", "JPEG"), ("RGB", "BMP"), ("RGB", "WEBP")]


@pytest.mark.parametrize("max_side", [None, 40])  # 40: reduced by 2 before the conversion
@pytest.mark.parametrize(("mode", "fmt"), CASES)
def test_synthetic_modes_and_formats(mode: str, fmt: str, max_side: int | None) -> None:
    im = _synthetic(mode)
    kw = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    f01 = _same_everywhere(_enc(im, fmt, **kw), f"x.{fmt.lower()}", max_side=max_side)
    assert f01.shape == (61, 97) if max_side is None else f01.shape[1] in (48, 49)  # Pillow's reduce: ceil


def test_jpeg_orientation_and_reduction_agree() -> None:
    im = _synthetic("L", 500, 330)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    data = _enc(im, "JPEG", quality=90, exif=exif)
    assert _same_everywhere(data, "o.jpg").shape == (330, 500)
    assert _same_everywhere(data, "o.jpg", max_side=100).shape[1] >= 100  # DCT-scaled by the same draft


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_keeps_its_float_path(tmp_path: Path, photometric: str) -> None:
    raw = (_smooth(70, 90, 3) * 4000).astype(np.uint16)
    ds = make_dicom(raw, photometric, RescaleSlope=0.5, RescaleIntercept=-10, WindowCenter=900, WindowWidth=1800)
    path = write_dicom(tmp_path, ds)
    f01 = read_image(path)
    np.testing.assert_array_equal(read_image_u8(path), quantize_u8(f01))
    _same_everywhere(path.read_bytes(), "x.dcm")


def test_resize_square_u8_takes_arrays_and_8bit_pillow_images() -> None:
    u8 = (_smooth(50, 70, 4) * 255).astype(np.uint8)
    want = to_uint8_square(u8.astype(np.float32) / 255, 32)
    np.testing.assert_array_equal(resize_square_u8(u8, 32), want)
    np.testing.assert_array_equal(resize_square_u8(Image.fromarray(u8), 32), want)
    square = (_smooth(32, 32, 5) * 255).astype(np.uint8)
    np.testing.assert_array_equal(resize_square_u8(Image.fromarray(square), 32), square)  # already that size
    with pytest.raises(ValueError, match="mode L"):
        resize_square_u8(Image.fromarray(u8).convert("RGB"), 32)
    with pytest.raises(ValueError, match="uint8"):
        resize_square_u8(u8.astype(np.float32), 32)


# ---------------------------------------------------------------- real data


def _spread(paths: list[Path], n: int) -> list[Path]:
    paths = sorted(paths)
    return paths[:: max(1, len(paths) // n)][:n]


def _check_files(paths: list[Path]) -> None:
    assert paths
    for p in paths:
        f01 = read_image(p)
        u8 = read_image_u8(p)
        np.testing.assert_array_equal(u8, quantize_u8(f01), err_msg=str(p))
        for size in SIZES:
            want = to_uint8_square(f01, size)
            np.testing.assert_array_equal(resize_square_u8(u8, size), want, err_msg=str(p))
            np.testing.assert_array_equal(read_image_u8(p, size=size), want, err_msg=str(p))


@pytest.mark.data
def test_real_nih_sample(nih_sample: Path) -> None:
    _check_files(_spread(list((nih_sample / "images").glob("*.png")), 24))


@pytest.mark.data
def test_real_nih_fullres(nih_fullres: Path) -> None:
    _check_files(_spread(list((nih_fullres / "images").glob("*.png")), 8))


@pytest.mark.data
def test_real_kermany_jpegs(kermany: Path) -> None:
    files = list(kermany.rglob("*.jpeg")) + list(kermany.rglob("*.jpg"))
    modes = set()
    picked = _spread(files, 24)
    for p in picked:
        with Image.open(p) as im:
            modes.add(im.mode)
    _check_files(picked)
    assert modes  # both grayscale and RGB JPEGs when the sample has them
    rgb = next((p for p in files if Image.open(p).mode == "RGB"), None)
    if rgb is not None:
        _check_files([rgb])


# ---------------------------------------------------------------- errors


def test_errors_are_the_float_paths_errors(tmp_path: Path) -> None:
    good = _enc(_synthetic("L"), "PNG")
    cases = {
        "empty.png": b"",
        "text.png": b"hello, this is not an image at all\n",
        "cut.png": good[: len(good) // 2],
        "crc.png": good[:40] + bytes([good[40] ^ 1]) + good[41:],
        "cut.jpg": _enc(_synthetic("L"), "JPEG")[:300],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageReadError) as want:
            read_image(path)
        with pytest.raises(ImageReadError) as got:
            read_image_u8(path)
        assert str(got.value) == str(want.value) and name in str(got.value)
        with pytest.raises(ImageReadError) as want:
            decode_image_bytes(data, name)
        with pytest.raises(ImageReadError) as got:
            decode_image_gray(data, name)
        assert str(got.value) == str(want.value)
    with pytest.raises(ImageReadError, match=r"small\.png.*above the"):
        decode_image_bytes_u8(good, "small.png", max_pixels=100)
    with pytest.raises(ImageReadError, match="file not found"):
        read_image_u8(tmp_path / "missing.png")


@fuzz(400)
@given(k=st.integers(0, 7), muts=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_u8_path_agrees_with_the_float_path(k: int, muts) -> None:
    name, data = seeds()[k]
    data = mutate(data, muts)
    try:
        want = quantize_u8(decode_image_bytes(data, name))
    except ImageReadError as err:
        with pytest.raises(ImageReadError) as got:
            decode_image_bytes_u8(data, name)
        assert str(got.value) == str(err)
        return
    np.testing.assert_array_equal(decode_image_bytes_u8(data, name), want)


# ---------------------------------------------------------------- one model input everywhere


class _Recorder:
    """A backend that records the uint8 batches the Predictor feeds it."""

    name = "onnx"

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def forward(self, batch_u8: np.ndarray, meta=None, batch_size: int = 32):
        self.batches.append(np.array(batch_u8))
        return np.zeros((len(batch_u8), 1)), None


def _predictor(size: int, gate=None):
    from chestdx.inference.predictor import Predictor

    return Predictor(_Recorder(), {"labels": ["Effusion"], "input_size": size}, gate=gate)


def _real_files() -> list[Path]:
    from conftest import data_root

    root = data_root()
    files = _spread(list((root / "nih-sample" / "images").glob("*.png")), 4)
    files += _spread(list((root / "nih-fullres" / "images").glob("*.png")), 2)
    files += _spread(list((root / "kermany").rglob("*.jpeg")), 4)
    return files


def _mixed_files(tmp_path: Path) -> list[Path]:
    out = []
    for mode, fmt in (("RGB", "PNG"), ("I;16", "PNG"), ("P", "PNG"), ("RGB", "JPEG")):
        p = tmp_path / f"{mode.replace(';', '')}.{fmt.lower()}"
        p.write_bytes(_enc(_synthetic(mode, 150, 120, seed=len(out)), fmt))
        out.append(p)
    ds = make_dicom((_smooth(80, 64, 9) * 4000).astype(np.uint16), "MONOCHROME1")
    out.append(write_dicom(tmp_path, ds, "m1.dcm"))
    return out + [p for p in _real_files() if p.exists()]


def test_cache_distributed_and_predictor_feed_the_same_pixels(tmp_path: Path) -> None:
    from chestdx.data.cache import PixelCache
    from chestdx.serve.distributed import DecodedImages

    files = [str(p) for p in _mixed_files(tmp_path)]
    size = 64
    want = np.stack([to_uint8_square(read_image(p), size) for p in files])  # the float path, as before
    cache = PixelCache(tmp_path / "cache", size=size)
    report = cache.build(files, workers=1)
    assert not report.failures
    np.testing.assert_array_equal(cache.pixels[cache.slots(files)], want)
    pred = _predictor(size)
    dist = DecodedImages(files, pred.preparer, [list(range(len(files)))])[0]
    np.testing.assert_array_equal(np.stack([img for _, _, img in dist]), want)
    out = pred.predict(files, batch_size=len(files))
    assert not any(o.error for o in out)
    np.testing.assert_array_equal(pred.backend.batches[0], want)
    for p, w in zip(files, want, strict=True):
        pred.predict_bytes(Path(p).read_bytes(), name=p)
        np.testing.assert_array_equal(pred.backend.batches[-1][0], w)


def test_with_the_real_quality_gate_the_model_input_is_unchanged(tmp_path: Path) -> None:
    from chestdx.inference.quality import QualityGate

    files = [str(p) for p in _mixed_files(tmp_path)]
    gate = QualityGate.default()
    pred = _predictor(224, gate)
    out = pred.predict(files, batch_size=len(files))
    ok = [(p, o) for p, o in zip(files, out, strict=True) if not o.error]
    want = []
    for p, o in ok:
        img = read_image(p)
        res = gate.assess(img)
        assert (o.quality, o.corrected is not None) == (res.verdict, res.action == "corrected")
        want.append(to_uint8_square(gate.correct(img, res), 224))
    np.testing.assert_array_equal(pred.backend.batches[0], np.stack(want))


@pytest.mark.parametrize("corrected", ["inverted", "rot90"])
def test_a_corrected_image_is_preprocessed_from_the_corrected_float(tmp_path: Path, corrected: str) -> None:
    from chestdx.inference.quality import QualityGate

    class Gate:
        def assess(self, img):
            return SimpleNamespace(verdict=corrected, prob=0.9, action="corrected", corrected=corrected, note=None)

        correct = staticmethod(QualityGate.correct)

    path = tmp_path / "c.png"
    path.write_bytes(_enc(_synthetic("RGB", 90, 70), "PNG"))
    pred = _predictor(32, Gate())
    out = pred.predict([str(path)])
    img = read_image(path)
    fixed = 1 - img if corrected == "inverted" else np.rot90(img, -1)
    assert out[0].corrected
    np.testing.assert_array_equal(pred.backend.batches[0][0], to_uint8_square(np.ascontiguousarray(fixed), 32))
