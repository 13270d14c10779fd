"""chestdx.io: decoding PNG/JPEG/DICOM into float32 grayscale in [0, 1], with clear errors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from chestdx.io import (
    ImageReadError,
    decode_image_bytes,
    limits,
    probe_image,
    read_image,
    sniff_format,
)

LUMA = np.array([0.299, 0.587, 0.114])


# ---------------------------------------------------------------- helpers


def save_pil(tmp_path: Path, im: Image.Image, name: str, **kw) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def huge_png_header(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny, structurally valid PNG whose IHDR claims width x height (nothing allocated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def windowed(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, output in [0, 1]."""
    c, w = center - 0.5, width - 1
    return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, (x - c) / w + 0.5))


def make_dicom(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    frames: int = 1,
    with_pixels: bool = True,
    **attrs,
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("synthetic.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if with_pixels:
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def write_dicom(tmp_path: Path, ds: FileDataset, name: str = "img.dcm") -> Path:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def voi_lut_item(lut: np.ndarray, first_map: int = 0, bits: int = 16) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", [len(lut) % 65536, first_map, bits])  # LUT Descriptor
    item.add_new(0x00283006, "US", [int(v) for v in lut])  # LUT Data
    return item


RAMP = np.array([[0, 500, 1000, 1500], [2000, 2500, 3000, 4095]], dtype=np.uint16)


def check_01(img: np.ndarray, shape: tuple[int, int]) -> None:
    assert img.dtype == np.float32
    assert img.shape == shape
    assert img.flags.c_contiguous
    assert 0.0 <= img.min() and img.max() <= 1.0


# ---------------------------------------------------------------- PNG / JPEG


def test_png_8bit_exact(tmp_path):
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = save_pil(tmp_path, Image.fromarray(arr), "a.png")
    img = read_image(path)
    check_01(img, (16, 16))
    np.testing.assert_array_equal(img, arr.astype(np.float32) / 255)


def test_png_16bit(tmp_path):
    arr = np.array([[0, 1, 1000], [32768, 60000, 65535]], dtype=np.uint16)
    path = save_pil(tmp_path, Image.fromarray(arr), "b16.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    img = read_image(path)
    check_01(img, (2, 3))
    np.testing.assert_allclose(img, arr / 65535.0, rtol=0, atol=1e-7)


def test_png_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = 0  # fully transparent: alpha must be ignored, not composited
    rgba[0, 0] = (255, 255, 255, 10)
    img = read_image(save_pil(tmp_path, Image.fromarray(rgba, "RGBA"), "c.png"))
    check_01(img, (4, 5))
    assert img[1, 1] == pytest.approx(float(np.dot([200, 100, 50], LUMA) / 255), abs=1e-6)
    assert img[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_png_la_and_palette(tmp_path):
    la = np.stack([np.full((3, 3), 77, np.uint8), np.full((3, 3), 5, np.uint8)], axis=-1)
    img = read_image(save_pil(tmp_path, Image.fromarray(la, "LA"), "la.png"))
    np.testing.assert_allclose(img, 77 / 255, atol=1e-7)

    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.putpixel((1, 0), 1)
    img = read_image(save_pil(tmp_path, pal, "p.png"))
    np.testing.assert_allclose(img, [[0, 0.299], [0, 0]], atol=1e-6)


def test_jpeg_gray_rgb_cmyk(tmp_path):
    grad = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    path = save_pil(tmp_path, Image.fromarray(grad), "g.jpg", quality=95)
    img = read_image(path)
    check_01(img, (24, 32))
    assert np.abs(img - grad / 255).max() < 0.05

    rgb = np.stack([grad] * 3, axis=-1)
    img = read_image(save_pil(tmp_path, Image.fromarray(rgb), "rgb.jpeg", quality=95))
    assert np.abs(img - grad / 255).max() < 0.05

    cmyk = Image.fromarray(rgb).convert("CMYK")
    img = read_image(save_pil(tmp_path, cmyk, "cmyk.jpg", quality=95))
    check_01(img, (24, 32))


def test_jpeg_exif_orientation_applied(tmp_path):
    im = Image.new("L", (40, 20), 128)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img = read_image(save_pil(tmp_path, im, "rot.jpg", exif=exif.tobytes()))
    assert img.shape == (40, 20)


def test_content_beats_extension(tmp_path):
    arr = np.full((5, 6), 42, np.uint8)
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(arr).save(path, format="PNG")
    np.testing.assert_array_equal(read_image(path), arr / np.float32(255))
    assert probe_image(path).format == "PNG"


# ---------------------------------------------------------------- failures


def test_missing_empty_text_directory(tmp_path):
    with pytest.raises(ImageReadError, match="file not found") as err:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in str(err.value)

    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png.*empty \(0 bytes\)"):
        read_image(tmp_path / "empty.png")

    (tmp_path / "notes.png").write_text("hello, this is not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.png.*named \.png but content is text"):
        read_image(tmp_path / "notes.png")

    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)

    (tmp_path / "junk.bin").write_bytes(bytes(range(7, 200)))
    with pytest.raises(ImageReadError, match="not a recognised image format"):
        read_image(tmp_path / "junk.bin")


@pytest.mark.parametrize("load_truncated", [False, True])
def test_truncated_png_and_jpeg_refused(tmp_path, monkeypatch, load_truncated):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    png = tmp_path / "full.png"
    Image.fromarray(noise).save(png)
    data = png.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png.*truncated PNG"):
        read_image(cut)

    Image.fromarray(noise).save(tmp_path / "full.jpg", quality=90)
    jdata = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jdata[: len(jdata) * 2 // 3])
    with pytest.raises(ImageReadError, match=r"cut\.jpg.*truncated JPEG"):
        read_image(tmp_path / "cut.jpg")


def test_corrupt_png_crc(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF
    with pytest.raises(ImageReadError, match="CRC mismatch in IDAT"):
        decode_image_bytes(bytes(data), "bad.png")


def test_decompression_bomb_header_checked_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(huge_png_header())
    assert path.stat().st_size < 200
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    msg = str(err.value)
    assert "bomb.png" in msg and "30000x30000 = 900 MP, above the 36 MP limit" in msg
    assert probe_image(path).width == 30000  # the header alone is still readable


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = save_pil(tmp_path, Image.new("L", (64, 64)), "s.png")
    with pytest.raises(ImageReadError, match="64x64"):
        read_image(path, max_pixels=1000)
    monkeypatch.setattr(limits, "MAX_PIXELS", 4000)
    with pytest.raises(ImageReadError, match="above the 0.004 MP limit"):
        read_image(path)
    assert read_image(path, max_pixels=10_000).shape == (64, 64)


def test_other_pillow_formats_use_our_limit_not_pillows(tmp_path, monkeypatch):
    path = save_pil(tmp_path, Image.new("L", (100, 100), 50), "big.bmp")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's global limit plays no role
    assert read_image(path).shape == (100, 100)
    with pytest.raises(ImageReadError, match=r"big\.bmp.*100x100"):
        read_image(path, max_pixels=5000)


@pytest.mark.parametrize("exc", [Image.DecompressionBombError, Image.DecompressionBombWarning])
def test_pillow_bomb_warning_and_error_become_image_read_error(tmp_path, monkeypatch, exc):
    path = save_pil(tmp_path, Image.new("L", (10, 10)), "b.png")

    def boom(self):
        raise exc("Image size (900000000 pixels) exceeds limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    with pytest.raises(ImageReadError, match=r"b\.png.*decompression-bomb"):
        read_image(path)


# ---------------------------------------------------------------- DICOM


def test_dicom_monochrome2_minmax(tmp_path):
    path = write_dicom(tmp_path, make_dicom(RAMP))
    assert sniff_format(path.read_bytes()) == "DICOM"
    img = read_image(path)
    check_01(img, RAMP.shape)
    np.testing.assert_allclose(img, RAMP / 4095.0, atol=1e-6)


def test_dicom_rescale_then_window_and_monochrome1_inverted_after(tmp_path):
    attrs = dict(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=2000, WindowWidth=4001)
    expected = windowed(RAMP * 2.0 - 1000, 2000, 4001)
    assert expected.min() == 0.0
    assert expected.max() == 1.0 and ((expected > 0) & (expected < 1)).sum() >= 3

    m2 = read_image(write_dicom(tmp_path, make_dicom(RAMP, **attrs), "m2.dcm"))
    np.testing.assert_allclose(m2, expected, atol=1e-6)

    m1 = read_image(write_dicom(tmp_path, make_dicom(RAMP, "MONOCHROME1", **attrs), "m1.dcm"))
    np.testing.assert_allclose(m1, 1.0 - expected, atol=1e-6)


def test_dicom_monochrome1_without_window_is_inverted_minmax(tmp_path):
    img = read_image(write_dicom(tmp_path, make_dicom(RAMP, "MONOCHROME1")))
    np.testing.assert_allclose(img, 1.0 - RAMP / 4095.0, atol=1e-6)


def test_dicom_voi_lut_sequence_preferred_over_window(tmp_path):
    lut = (np.sqrt(np.arange(4096) / 4095.0) * 60000).astype(np.uint16)
    ds = make_dicom(RAMP, WindowCenter=100, WindowWidth=10)
    ds.VOILUTSequence = [voi_lut_item(lut)]
    img = read_image(write_dicom(tmp_path, ds))
    np.testing.assert_allclose(img, lut[RAMP] / float(lut.max()), atol=1e-6)

    ds1 = make_dicom(RAMP, "MONOCHROME1")
    ds1.VOILUTSequence = [voi_lut_item(lut)]
    img1 = read_image(write_dicom(tmp_path, ds1, "m1lut.dcm"))
    np.testing.assert_allclose(img1, 1.0 - lut[RAMP] / float(lut.max()), atol=1e-6)


def test_dicom_voi_lut_after_rescale_clips_out_of_range(tmp_path):
    lut = np.linspace(0, 1000, 1000).astype(np.uint16)  # covers modality values 0..999 only
    ds = make_dicom(RAMP, RescaleSlope=1, RescaleIntercept=-500)
    ds.VOILUTSequence = [voi_lut_item(lut, first_map=0)]
    img = read_image(write_dicom(tmp_path, ds))
    idx = np.clip(RAMP.astype(int) - 500, 0, 999)
    np.testing.assert_allclose(img, lut[idx] / 1000.0, atol=1e-6)


def test_dicom_multiframe_and_missing_pixels_refused(tmp_path):
    two = np.stack([RAMP, RAMP])
    path = write_dicom(tmp_path, make_dicom(two, frames=2), "multi.dcm")
    with pytest.raises(ImageReadError, match=r"multi\.dcm.*multi-frame DICOM \(2 frames\)"):
        read_image(path)

    path = write_dicom(tmp_path, make_dicom(RAMP, with_pixels=False), "nopix.dcm")
    with pytest.raises(ImageReadError, match=r"nopix\.dcm.*no pixel data"):
        read_image(path)


def test_dicom_undecodable_compressed_pixels(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    ds = make_dicom(RAMP)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not really jpeg-ls data"])
    ds["PixelData"].VR = "OB"
    path = write_dicom(tmp_path, ds, "jls.dcm")
    with pytest.raises(ImageReadError, match=r"jls\.dcm.*cannot decode DICOM pixel data \(transfer syntax JPEG-LS"):
        read_image(path)


def test_dicom_bad_window_falls_back_to_minmax(tmp_path, caplog):
    img = read_image(write_dicom(tmp_path, make_dicom(RAMP, WindowCenter=10, WindowWidth=0)))
    np.testing.assert_allclose(img, RAMP / 4095.0, atol=1e-6)
    assert "using min-max" in caplog.text


def test_dicom_without_preamble_by_extension(tmp_path):
    ds = make_dicom(RAMP)
    del ds.file_meta
    ds.preamble = None
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    raw = buf.getvalue()
    assert raw[128:132] != b"DICM"
    np.testing.assert_allclose(decode_image_bytes(raw, "raw.dcm"), RAMP / 4095.0, atol=1e-6)
    with pytest.raises(ImageReadError, match="not a recognised image format"):
        decode_image_bytes(raw, "raw.bin")

    (tmp_path / "text.dcm").write_text("not dicom at all " * 20)
    with pytest.raises(ImageReadError, match=r"text\.dcm"):
        read_image(tmp_path / "text.dcm")


def test_dicom_pixel_limit_from_header(tmp_path):
    path = write_dicom(tmp_path, make_dicom(RAMP))
    with pytest.raises(ImageReadError, match="image is 4x2"):
        read_image(path, max_pixels=4)
    assert probe_image(path) == type(probe_image(path))("DICOM", 4, 2)


# ---------------------------------------------------------------- bytes, batches


def test_decode_bytes_equals_read_image(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    paths = [
        save_pil(tmp_path, Image.fromarray(arr), "x.png"),
        save_pil(tmp_path, Image.fromarray(arr), "x.jpg"),
        write_dicom(tmp_path, make_dicom(RAMP, "MONOCHROME1", WindowCenter=1000, WindowWidth=800)),
    ]
    for path in paths:
        np.testing.assert_array_equal(decode_image_bytes(path.read_bytes(), path.name), read_image(path))


def test_error_is_value_error_and_picklable():
    import pickle

    err = ImageReadError("a/b.png", "file is empty (0 bytes)")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, str(back)) == (err.path, err.reason, str(err))


# ---------------------------------------------------------------- real data


@pytest.mark.data
def test_real_nih_png(nih_sample):
    path = sorted((nih_sample / "images").glob("*.png"))[0]
    img = read_image(path)
    check_01(img, (512, 512))
    assert img.std() > 0.05


@pytest.mark.data
def test_real_kermany_jpeg(kermany):
    path = sorted((kermany / "train" / "NORMAL").glob("*.jpeg"))[0]
    img = read_image(path)
    check_01(img, (224, 224))
    assert img.std() > 0.05
    np.testing.assert_array_equal(decode_image_bytes(path.read_bytes(), path.name), img)


def test_pydicom_roundtrip_sanity(tmp_path):
    """The synthetic DICOM builder itself writes what pydicom reads back (guards the other tests)."""
    path = write_dicom(tmp_path, make_dicom(RAMP, RescaleSlope=2, RescaleIntercept=-1000))
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(ds.pixel_array, RAMP)
    assert path.read_bytes()[128:132] == b"DICM"
