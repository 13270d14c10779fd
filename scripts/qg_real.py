"""Real (not synthetic) non-CXR images available offline, for the quality gate's ``not_cxr`` class.

Nothing here is committed: every image is read at training time from an installed package or a downloaded
wheel (a zip file), and a missing source is skipped with a warning.

- pydicom's bundled test DICOMs, every frame of multi-frame files (CT, MR, US, NM, XA, RT, ...; pydicom: MIT;
  the test files' own notices are in pydicom/data/test_files/README.txt);
- nilearn's MNI ICBM152 2009 templates (T1, grey- and white-matter maps; nilearn: BSD-3; templates
  (c) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, free use with the
  copyright notice) -> axial, coronal and sagittal brain MRI slices;
- nibabel's test volumes and DICOMs (anatomical/functional NIfTI, EPI mosaics; nibabel: MIT);
- matplotlib's ``mpl-data/sample_data`` (Grace Hopper photo (public domain), an MRI slice, two elevation maps,
  logos; matplotlib: PSF-style licence).
"""

from __future__ import annotations

import gzip
import io
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}


def norm01(a: np.ndarray) -> np.ndarray:
    """Percentile window (0.5-99.5 %) to [0, 1] float32."""
    a = np.asarray(a, np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(float(hi - lo), 1e-6), 0, 1)


def read_nifti(data: bytes) -> np.ndarray:
    """A NIfTI-1 volume (.nii bytes, already gunzipped) -> float32 array (x, y, z[, t]); header only as needed."""
    endian = "<" if np.frombuffer(data[:4], "<i4")[0] == 348 else ">"
    dim = np.frombuffer(data[40:56], endian + "i2")
    code = int(np.frombuffer(data[70:72], endian + "i2")[0])
    offset = int(np.frombuffer(data[108:112], endian + "f4")[0])
    shape = tuple(int(d) for d in dim[1:1 + int(dim[0])])
    if code not in _NIFTI_DTYPES:
        raise ValueError(f"NIfTI datatype {code} not supported")
    dt = np.dtype(endian + _NIFTI_DTYPES[code])
    n = int(np.prod(shape))
    return np.frombuffer(data, dt, count=n, offset=offset).reshape(shape, order="F").astype(np.float32)


def volume_slices(vol: np.ndarray, name: str, step: int = 2, min_fill: float = 0.12) -> list[tuple[str, np.ndarray]]:
    """2-D slices along each of the three axes (every ``step``-th; 4-D: first volume), skipping near-empty ones.
    Names are ``name/axis/block`` with blocks of 16 slices, so that splits can keep neighbours together."""
    vol = vol[..., 0] if vol.ndim == 4 else vol
    if vol.ndim != 3:
        return []
    out = []
    thr = np.percentile(vol, 50) + 0.05 * np.ptp(vol)
    for ax in range(3):
        if vol.shape[ax] < 8:
            continue
        for i in range(0, vol.shape[ax], step):
            sl = np.take(vol, i, axis=ax)
            if min(sl.shape) >= 24 and np.mean(sl > thr) >= min_fill and np.ptp(sl) > 0:
                out.append((f"{name}/ax{ax}/{i // 16}", norm01(sl)))
    return out


def dicom_frames(data_or_path, name: str, max_frames: int = 400) -> list[tuple[str, np.ndarray]]:
    """Every frame (at most ``max_frames``, evenly spaced) of one DICOM file that decodes and is >= 32 px."""
    import pydicom

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(pydicom.dcmread(src, force=True).pixel_array)
    except Exception:  # noqa: BLE001 - many test files are deliberately broken or pixel-less
        return []
    frames = [arr] if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)) else list(arr)
    frames = frames[:: max(1, len(frames) // max_frames)][:max_frames]
    out = []
    for i, fr in enumerate(frames):
        fr = fr.mean(-1) if fr.ndim == 3 else fr
        if fr.ndim == 2 and min(fr.shape) >= 32 and np.ptp(fr) > 0:
            out.append((f"{name}#{i}", norm01(fr)))
    return out


def pydicom_all_frames() -> list[tuple[str, np.ndarray]]:
    """Every decodable frame of pydicom's bundled test files, named ``file#frame``."""
    from pydicom.data import get_testdata_files

    return [x for f in sorted(get_testdata_files()) for x in dicom_frames(f, Path(f).name)]


def _wheel(path: Path | None, what: str) -> zipfile.ZipFile | None:
    if path is None or not Path(path).exists():
        warnings.warn(f"{what}: wheel {path} not found; those images are skipped", stacklevel=3)
        return None
    return zipfile.ZipFile(path)


def nilearn_mni(wheel: Path | None) -> list[tuple[str, np.ndarray]]:
    """Brain MRI slices of the MNI ICBM152 templates bundled in a nilearn wheel (T1, GM, WM; 3 axes)."""
    z = _wheel(wheel, "nilearn MNI templates")
    if z is None:
        return []
    out = []
    for n in sorted(z.namelist()):
        m = re.match(r"nilearn/datasets/data/mni_icbm152_(\w\w)_tal_nlin_sym_09a_converted\.nii\.gz$", n)
        if m:
            out += volume_slices(read_nifti(gzip.decompress(z.read(n))), f"mni-{m.group(1)}", step=3)
    return out


def nibabel_images(wheel: Path | None) -> list[tuple[str, np.ndarray]]:
    """MRI/EPI slices and DICOMs from a nibabel wheel's test data (each file once, names ``file/...``)."""
    z = _wheel(wheel, "nibabel test data")
    if z is None:
        return []
    out = []
    for n in sorted(z.namelist()):
        if not n.startswith("nibabel/tests/data/"):
            continue
        base = Path(n).name
        try:
            if base.endswith((".nii", ".nii.gz")):
                raw = z.read(n)
                vol = read_nifti(gzip.decompress(raw) if base.endswith(".gz") else raw)
                out += volume_slices(vol, base, step=1, min_fill=0.08)
            elif base.endswith(".dcm"):
                out += dicom_frames(z.read(n), base)
        except Exception as e:  # noqa: BLE001 - odd test files (truncated, unusual types) are skipped
            warnings.warn(f"nibabel test file {base} skipped: {e}", stacklevel=2)
    return out


def matplotlib_samples() -> list[tuple[str, np.ndarray]]:
    """matplotlib's sample images: a photo, an MRI slice, two elevation maps and two logos."""
    import matplotlib

    d = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    out = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        if (d / name).exists():
            rgb = np.asarray(Image.open(d / name).convert("RGB"), np.float32) / 255
            out.append((name, rgb.mean(-1)))
    if (d / "s1045.ima.gz").exists():
        mri = np.frombuffer(gzip.decompress((d / "s1045.ima.gz").read_bytes()), np.uint16).reshape(256, 256)
        out.append(("s1045.ima", norm01(mri)))
    for name, key in (("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")):
        if (d / name).exists():
            with np.load(d / name) as z:
                out.append((name, norm01(z[key])))
    if not out:
        warnings.warn(f"matplotlib sample data not found in {d}", stacklevel=2)
    return out
