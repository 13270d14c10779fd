"""Torch backend of the Predictor: the run's ensemble members as ``InferenceNet``s, mean logit, member maps."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from chestdx.models.inference_net import InferenceNet
from chestdx.rundir import RunDir


def build_member(manifest: dict[str, Any], state_dict: dict[str, Any]) -> InferenceNet:
    """Rebuild one ensemble member from the manifest's model facts (no pretrained download) and its weights."""
    from chestdx.models import build_model

    model = build_model(manifest["arch"], len(manifest["labels"]), pretrained=None,
                        freeze=manifest.get("freeze") or "none", metadata=tuple(manifest.get("metadata") or ()),
                        input_size=int(manifest["input_size"]))
    model.load_state_dict(state_dict, strict=True)
    return InferenceNet(model).eval()


def load_members(run: RunDir, manifest: dict[str, Any]) -> list[InferenceNet]:
    return [build_member(manifest, run.load_member_state(entry)) for entry in manifest["members"]]


class TorchBackend:
    """``forward(batch_u8, meta) -> (mean logits (B,L), member-0 pooled features (B,F) or None)``; heatmaps."""

    name = "torch"

    def __init__(self, members: Sequence[nn.Module], device: str = "cpu"):
        self.device = torch.device(device)
        self.members = [m.to(self.device).eval() for m in members]
        # One lock around every use of the members: saliency hooks live on the shared modules, so a Grad-CAM in
        # one thread must not see another thread's forward pass (web server threads).
        self.lock = threading.RLock()
        self._tls = threading.local()  # per-thread list collecting member 0's pooled backbone features
        backbone = getattr(self.members[0].model, "backbone", None)
        if backbone is not None:
            backbone.register_forward_hook(self._capture_features)

    @property
    def net(self) -> nn.Module:
        """Member 0 (single-model runs: the model)."""
        return self.members[0]

    def _capture_features(self, _module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        sink = getattr(self._tls, "features", None)
        if sink is not None:
            sink.append(out.detach().float().cpu())

    def tensor(self, batch_u8: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(batch_u8, dtype=np.float32) / 255.0)[:, None].to(self.device)

    @torch.no_grad()
    def forward(self, batch_u8: np.ndarray, meta: np.ndarray | None = None,
                batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        out, feats = [], []
        with self.lock:
            self._tls.features = feats
            try:
                for i in range(0, len(batch_u8), batch_size):
                    x = self.tensor(batch_u8[i:i + batch_size])
                    m = None if meta is None else torch.from_numpy(np.asarray(meta[i:i + batch_size], np.float32))
                    z = torch.stack([net(x, m).float() for net in self.members]).mean(0)
                    out.append(z.cpu().numpy())
            finally:
                self._tls.features = None
        z = np.concatenate(out) if out else np.zeros((0, self.members[0].model.num_labels), np.float32)
        f = torch.cat(feats).numpy() if feats and len(feats) == len(out) else None
        return z, f

    def heatmaps(self, batch_u8: np.ndarray, class_indices: Sequence[int], method: str = "gradcam",
                 meta: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Saliency maps (B,S,S) in [0,1]: the mean of the members' maps."""
        from chestdx.explain.saliency import saliency_maps

        m = None if meta is None else torch.from_numpy(np.asarray(meta, np.float32))
        with self.lock:
            x = self.tensor(batch_u8)
            maps = [saliency_maps(net, x, list(class_indices), method=method, meta=m, **kwargs)
                    for net in self.members]
        return np.mean(maps, axis=0).astype(np.float32)
