"""How far chestdx's preprocessing is from torchxrayvision's own, on real images (pixels, in xrv units).

xrv: 8-bit image -> ``xrv.datasets.normalize(img, 255)`` -> ``XRayCenterCrop`` -> ``XRayResizer(224)`` (skimage).
chestdx: ``read_image`` -> ``to_uint8_square(img, 224)`` -> the xrv model's Normalize ((x - 0.5) * 2048).
Both end in [-1024, 1024] at 224 x 224; the network after that is identical (tests/test_xrv.py). Needs
torchxrayvision (``pip install --no-deps torchxrayvision==1.5.7``) and scikit-image (its resizer); torchvision (and
requests when missing) are stubbed as in the test. Usage: python scripts/xrv_preprocess_gap.py [--n 50]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image

from chestdx.data.transforms import to_uint8_square
from chestdx.io import read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _xrv():
    tv = types.ModuleType("torchvision")
    tv.models, tv.transforms = types.ModuleType("torchvision.models"), types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": tv, "torchvision.models": tv.models, "torchvision.transforms": tv.transforms})
    if importlib.util.find_spec("requests") is None:  # only its downloader uses it
        sys.modules["requests"] = types.ModuleType("requests")
    import torchxrayvision

    return torchxrayvision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    xrv = _xrv()
    crop, resize = xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(224)
    sets = {"nih-sample": sorted((args.data / "nih-sample" / "images").glob("*.png"))[: args.n],
            "kermany": sorted((args.data / "kermany" / "train").rglob("*.jpeg"))[:: 97][: args.n]}
    for name, files in sets.items():
        diffs, cut, sizes = [], [], set()
        for f in files:
            u8 = np.asarray(Image.open(f).convert("L"))
            sizes.add(u8.shape[0] == u8.shape[1])
            ref = resize(crop(xrv.datasets.normalize(u8, 255)[None]))[0]
            ours = (to_uint8_square(read_image(f), 224).astype(np.float32) / 255.0 - 0.5) * 2048.0
            diffs.append(np.abs(ref - ours))
            h, w = u8.shape
            cut.append(1.0 - min(h, w) / max(h, w))
        d = np.stack(diffs)
        print(f"{name}: {len(files)} images, square: {sorted(sizes)}; |xrv - chestdx| in xrv units (range 2048): "
              f"mean {d.mean():.2f}, p99 {np.percentile(d, 99):.2f}, max {d.max():.1f}; "
              f"share of the long side xrv's center crop cuts: mean {np.mean(cut):.3f}, max {np.max(cut):.3f}")


if __name__ == "__main__":
    main()
