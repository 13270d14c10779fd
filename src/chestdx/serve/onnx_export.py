"""Export a run's ensemble to ONNX (+ a JSON sidecar) for torch-free inference with onnxruntime.

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

from chestdx.inference.backend_onnx import SIDECAR_FORMAT, sidecar_path
from chestdx.inference.ood import OODStats
from chestdx.inference.prediction import DISCLAIMER

OPSET = 17


class ExportNet(nn.Module):
    """The ensemble + the OOD distance as one traceable module: ``forward(image, meta) -> (mean logits, d2)``.

    Logits are averaged over the members (the run's ``mean_logit`` ensemble); the OOD distance uses member 0's
    pooled features, as the torch backend does.
    """

    def __init__(self, members: list[nn.Module], ood: OODStats | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.has_ood = ood is not None
        self.l2 = ood is not None and ood.normalize == "l2"
        self._feats: list[torch.Tensor] = []
        if ood is not None:
            self.register_buffer("ood_mean", torch.from_numpy(np.asarray(ood.mean, np.float32)))
            self.register_buffer("ood_precision", torch.from_numpy(np.asarray(ood.precision, np.float32)))
            members[0].model.backbone.register_forward_hook(lambda _m, _i, out: self._feats.append(out))

    def forward(self, image: torch.Tensor, meta: torch.Tensor | None = None):
        self._feats.clear()
        logits = torch.stack([net(image, meta) for net in self.members]).mean(0)
        if not self.has_ood:
            return logits
        f = self._feats[0]
        if self.l2:
            f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = f - self.ood_mean
        return logits, ((d @ self.ood_precision) * d).sum(dim=1)


def export_onnx(run_dir: str | Path, out: str | Path, opset: int = OPSET, check: bool = True) -> dict[str, Any]:
    """Write ``out`` (.onnx) and its sidecar JSON (manifest + calibration + OOD threshold); returns the sidecar."""
    from chestdx.inference.backend_torch import load_members
    from chestdx.rundir import RunDir

    run = RunDir(run_dir)
    manifest = run.manifest()
    ood_d = run.read_ood()
    ood = OODStats.from_dict(ood_d) if ood_d else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportNet(load_members(run, manifest), ood).eval()
    metadata = tuple(manifest.get("metadata") or ())
    s = int(manifest["input_size"])
    image = torch.rand(2, 1, s, s)
    inputs: tuple[torch.Tensor, ...] = (image,)
    names, dynamic = ["image"], {"image": {0: "batch"}}
    meta_missing = None
    if metadata:
        from chestdx.models.metadata import missing_metadata

        meta_missing = missing_metadata(1, metadata)[0].astype(np.float32)
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
        "format": SIDECAR_FORMAT, "onnx_file": out.name, "manifest": manifest,
        "calibration": run.read_calibration(),
        "input": "image (B,1,S,S) float32 in [0,1], grayscale; normalization is in the graph",
        "inputs": names, "outputs": outputs, "meta_missing": None if meta_missing is None else meta_missing.tolist(),
        "ood": None if ood is None else ood.to_dict(arrays=False), "opset": opset,
        "exported_with": {"torch": torch.__version__}, "note": DISCLAIMER,
    }
    sidecar_path(out).write_text(json.dumps(side, indent=1))
    if check:
        side["check"] = check_parity(wrapper, out, inputs)
    return side


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
