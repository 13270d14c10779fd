"""ONNX backend of the Predictor (torch-free): one graph averaging the members' logits, plus ``ood_d2``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SIDECAR_FORMAT = "chestdx-onnx/2"


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    path = sidecar_path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sidecar JSON missing (written by `chestdx export` next to the .onnx)")
    try:
        side = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: unreadable sidecar ({err})") from err
    if side.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: format {side.get('format')!r}, expected {SIDECAR_FORMAT!r} "
                         "(re-export the run with `chestdx export`)")
    return side


class OnnxBackend:
    """``forward(batch_u8, meta) -> (logits (B,L), ood_d2 (B,) or None)`` with onnxruntime on the CPU."""

    name = "onnxruntime"
    # onnxruntime's intra-op threads busy-wait between ops by default (True); False lets them sleep
    allow_spinning = True

    def __init__(self, onnx_path: str | Path, meta_missing: list[float] | None = None, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._meta_missing = None if meta_missing is None else np.asarray(meta_missing, np.float32)

    def forward(self, batch_u8: np.ndarray, meta: np.ndarray | None = None,
                batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        zs, ds = [], []
        for i in range(0, len(batch_u8), batch_size):
            x = np.asarray(batch_u8[i:i + batch_size], np.float32)[:, None] / np.float32(255.0)
            feeds = {"image": x}
            if "meta" in self._inputs:
                feeds["meta"] = (np.asarray(meta[i:i + batch_size], np.float32) if meta is not None
                                 else np.repeat(self._meta_missing[None], len(x), axis=0))
            res = dict(zip(self._outputs, self.session.run(None, feeds), strict=True))
            zs.append(res["logits"])
            if "ood_d2" in res:
                ds.append(res["ood_d2"])
        z = np.concatenate(zs) if zs else np.zeros((0, 0), np.float32)
        return z, (np.concatenate(ds) if ds else None)
