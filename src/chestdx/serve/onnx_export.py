"""Export a run's ``InferenceNet`` to ONNX (+ a JSON sidecar) for torch-free inference with onnxruntime.

Graph: input ``image`` (B, 1, S, S) float32 pixels in [0, 1] (normalization is inside the graph), optional
``meta`` (B, 2*len(metadata)) when the model fuses metadata; outputs ``logits`` (B, L) and, when the run has
a fitted OOD gate, ``ood_d2`` (B,) = squared Mahalanobis distance of the (L2-normalized) pooled features
(mean and precision are graph constants, so the sidecar stays small). The batch axis is dynamic. Uses the
TorchScript-based exporter (``dynamo=False``, opset 17): it works offline with no onnxscript dependency.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chestdx.inference import DISCLAIMER, Predictor
from chestdx.inference.ood import OODStats

SIDECAR_FORMAT = "chestdx-onnx/1"
OPSET = 17


class ExportNet(nn.Module):
    """``InferenceNet`` + the OOD distance, as one traceable module: ``forward(image, meta) -> (logits, d2)``."""

    def __init__(self, net: nn.Module, ood: OODStats | None = None):
        super().__init__()
        self.net = net
        self.has_ood = ood is not None
        self.l2 = ood is not None and ood.normalize == "l2"
        self._feats: list[torch.Tensor] = []
        if ood is not None:
            self.register_buffer("ood_mean", torch.from_numpy(np.asarray(ood.mean, np.float32)))
            self.register_buffer("ood_precision", torch.from_numpy(np.asarray(ood.precision, np.float32)))
            net.model.backbone.register_forward_hook(lambda _m, _i, out: self._feats.append(out))

    def forward(self, image: torch.Tensor, meta: torch.Tensor | None = None):
        self._feats.clear()
        logits = self.net(image, meta)
        if not self.has_ood:
            return logits
        f = self._feats[-1]
        if self.l2:
            f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = f - self.ood_mean
        return logits, ((d @ self.ood_precision) * d).sum(dim=1)


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


def export_onnx(run_or_predictor: str | Path | Predictor, out: str | Path, opset: int = OPSET,
                check: bool = True) -> dict[str, Any]:
    """Write ``out`` (.onnx) and its sidecar JSON; returns the sidecar dict (+ ``check`` results)."""
    pred = run_or_predictor if isinstance(run_or_predictor, Predictor) else Predictor.from_run(run_or_predictor)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportNet(_fresh_net(pred), pred.ood).eval()
    s = pred.input_size
    image = torch.rand(2, 1, s, s)
    inputs: tuple[torch.Tensor, ...] = (image,)
    names, dynamic = ["image"], {"image": {0: "batch"}}
    meta_missing = None
    if pred.metadata:
        from chestdx.models.metadata import missing_metadata

        meta_missing = missing_metadata(1, pred.metadata)[0].astype(np.float32)
        inputs = (image, torch.from_numpy(np.repeat(meta_missing[None], 2, axis=0)))
        names.append("meta")
        dynamic["meta"] = {0: "batch"}
    outputs = ["logits"] + (["ood_d2"] if wrapper.has_ood else [])
    dynamic.update({name: {0: "batch"} for name in outputs})
    tmp = out.with_suffix(out.suffix + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow in MONAI blocks
        torch.onnx.export(wrapper, inputs, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                          output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)
    tmp.replace(out)
    side = {
        "format": SIDECAR_FORMAT, "onnx_file": out.name, "arch": pred.arch, "labels": pred.labels,
        "input_size": s, "input": "image (B,1,S,S) float32 in [0,1], grayscale; normalization is in the graph",
        "inputs": names, "outputs": outputs, "temperature": pred.temperature, "thresholds": pred.thresholds,
        "metadata": list(pred.metadata), "meta_missing": None if meta_missing is None else meta_missing.tolist(),
        "ood": None if pred.ood is None else pred.ood.to_dict(arrays=False), "opset": opset,
        "exported_with": {"torch": torch.__version__}, "note": DISCLAIMER,
    }
    sidecar_path(out).write_text(json.dumps(side, indent=1))
    if check:
        side["check"] = check_parity(wrapper, out, inputs)
    return side


def _fresh_net(pred: Predictor) -> nn.Module:
    """A copy of the predictor's net (its feature hook and lock stay with the predictor)."""
    from chestdx.models.inference import InferenceNet
    from chestdx.train.checkpoint import model_from_checkpoint

    return InferenceNet(model_from_checkpoint(pred.payload)).eval()


def check_parity(wrapper: ExportNet, onnx_path: str | Path, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Max abs differences torch vs onnxruntime on ``inputs`` (logits, sigmoid probabilities, ood_d2)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs, strict=True)}
    got = sess.run(None, feeds)
    with torch.no_grad():
        ref = wrapper(*inputs)
    ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    out = {"max_abs_logit_diff": float(np.abs(got[0] - ref[0]).max()),
           "max_abs_prob_diff": float(np.abs(sig(got[0]) - sig(ref[0])).max())}
    if len(ref) > 1:
        out["max_rel_ood_d2_diff"] = float((np.abs(got[1] - ref[1]) / np.maximum(np.abs(ref[1]), 1e-6)).max())
    return out
