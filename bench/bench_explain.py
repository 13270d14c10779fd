"""Saliency benchmarks and demo maps on real NIH images for densenet121, efficientnet_lite0 and vit_b16 (224 px).

Run:
  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_explain.py time [--repeat 3]   # JSON: seconds per image, CPU
  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_explain.py maps --out docs/img  # PNGs of maps vs NIH boxes

Weights: efficientnet_lite0 uses its offline ImageNet weights; densenet121 and vit_b16 are randomly initialised
(their torchvision ImageNet weights need a download). All heads (4 labels) are untrained: the maps show that the
pipeline runs on each architecture (ViT tokens reshaped to the patch grid), not what a trained model looks at.
Timings do not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from common import best_time, data_root, machine

ARCHS = {"densenet121": None, "efficientnet_lite0": "imagenet", "vit_b16": None}  # arch -> pretrained
LABELS = ("Cardiomegaly", "Effusion", "Nodule", "Pneumothorax")  # untrained 4-label head
SIZE = 224


def build(arch: str) -> torch.nn.Module:
    from chestdx.models import build_model
    from chestdx.models.inference_net import InferenceNet

    torch.manual_seed(0)  # random-init weights (and heads) are reproducible
    model = build_model(arch, len(LABELS), pretrained=ARCHS[arch], input_size=SIZE)
    return InferenceNet(model).eval()


def nih_boxed(n: int = 3) -> list[tuple[Path, str, tuple[float, float, float, float]]]:
    """The first ``n`` nih-sample images with a box of one of LABELS (path, label, box in 1024 px)."""
    from chestdx.data.nih import read_nih_boxes

    nih = data_root() / "nih-sample"
    boxes = read_nih_boxes(nih / "BBox_List_2017.csv")
    boxes = boxes[boxes["label"].isin(LABELS) & boxes["image_id"].map(lambda b: (nih / "images" / b).is_file())]
    return [(nih / "images" / r.image_id, r.label, (r.x, r.y, r.w, r.h)) for r in boxes.head(n).itertuples()]


def load_u8(path: Path) -> np.ndarray:
    from chestdx.data.transforms import to_uint8_square
    from chestdx.io import read_image

    return to_uint8_square(read_image(path), SIZE)


def bench_time(repeat: int) -> dict:
    """Best-of-``repeat`` seconds for one image: forward only, Grad-CAM, Grad-CAM++, SmoothGrad n=10 and n=25."""
    from chestdx.explain import saliency_maps

    path = nih_boxed(1)[0][0]
    x = torch.from_numpy(load_u8(path)[None, None].astype(np.float32) / 255.0)
    out: dict = {"machine": machine(), "image": path.name, "input": f"1x1x{SIZE}x{SIZE}", "repeat": repeat,
                 "smoothgrad_batch": 16, "weights": {a: p or "random init" for a, p in ARCHS.items()},
                 "seconds_per_image": {}}
    for arch in ARCHS:
        net = build(arch)
        with torch.no_grad():
            net(x)  # warm-up
        row = {"forward": best_time(lambda net=net: net(x).sum().item(), repeat)}
        for name, kw in (("gradcam", {"method": "gradcam"}), ("gradcampp", {"method": "gradcampp"}),
                         ("smoothgrad_n10", {"method": "smoothgrad", "n_samples": 10}),
                         ("smoothgrad_n25", {"method": "smoothgrad", "n_samples": 25})):
            saliency_maps(net, x, 0, **kw)  # warm-up (hooks, allocator)
            row[name] = best_time(lambda net=net, kw=kw: saliency_maps(net, x, 0, batch_size=16, **kw),
                                  repeat if "smoothgrad" not in name else max(1, repeat - 1))
        out["seconds_per_image"][arch] = {k: round(v, 4) for k, v in row.items()}
        print(arch, out["seconds_per_image"][arch], file=sys.stderr)
    return out


def save_maps(out_dir: Path, methods: tuple[str, ...] = ("gradcam", "gradcampp", "smoothgrad")) -> list[Path]:
    """One PNG per architecture: rows = boxed NIH images, columns = methods, NIH box in green."""
    from chestdx.explain import format_caption, saliency_maps, save_gallery
    from chestdx.explain.overlay import OverlayItem
    from chestdx.explain.run import box_to_input
    from chestdx.io import read_image

    cases = nih_boxed(3)
    imgs = np.stack([load_u8(p) for p, _, _ in cases])
    shapes = [read_image(p).shape for p, _, _ in cases]
    x = torch.from_numpy(imgs[:, None].astype(np.float32) / 255.0)
    written = []
    for arch in ARCHS:
        net = build(arch)
        cls = [LABELS.index(lb) for _, lb, _ in cases]
        maps = {m: saliency_maps(net, x, cls, method=m, n_samples=25) for m in methods}
        items = []
        for i, (path, label, box) in enumerate(cases):
            b = box_to_input(box, 1024, shapes[i], SIZE)
            items += [OverlayItem(imgs[i], maps[m][i], f"{path.name}\n{format_caption(label, None, m)}", b)
                      for m in methods]
        written.append(save_gallery(items, out_dir / f"saliency_{arch}_nih.png", ncols=len(methods), dpi=72))
        print(written[-1], file=sys.stderr)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["time", "maps"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img")
    args = parser.parse_args()
    if args.what == "time":
        print(json.dumps(bench_time(args.repeat), indent=2))
    else:
        print(json.dumps([str(p) for p in save_maps(args.out)]))


if __name__ == "__main__":
    main()
