"""``RunDir``: the run-directory layout (format ``chestdx-run/2``, docs/contracts.md) in one place.

Training writes the immutable part (``model.json`` manifest + ``members/member-<k>.pt`` state dicts); evaluation
writes versioned sidecars (``calibration.json``, ``ood.npz``). Loading never executes code: member files are read
with ``torch.load(weights_only=True)`` after their sha256 is checked, sidecars are JSON or ``allow_pickle=False``
npz. Torch is imported lazily, so the ONNX backend can use this module without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

RUN_FORMAT = "chestdx-run/2"
CALIBRATION_FORMAT = "chestdx-calibration/1"
LEGACY_FORMAT = "chestdx-checkpoint/1"
LEGACY_NAME = "model.pt"


class RunDirError(ValueError):
    """A run dir that is missing, incomplete or inconsistent (the message names the file)."""


class LegacyRunError(RunDirError):
    """A ``chestdx-checkpoint/1`` run dir whose ``model.pt`` is a pickle that would execute code to load."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """tmp file + rename: a killed process never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, allow_nan=False).encode())


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- paths ----------------------------------------------------------------------------------------
    config = property(lambda self: self.path / "config.yaml")
    split = property(lambda self: self.path / "split.csv")
    manifest_path = property(lambda self: self.path / "model.json")
    members_dir = property(lambda self: self.path / "members")
    calibration_path = property(lambda self: self.path / "calibration.json")
    ood_path = property(lambda self: self.path / "ood.npz")
    oof = property(lambda self: self.path / "oof.csv")
    predictions = property(lambda self: self.path / "predictions.csv")
    metrics = property(lambda self: self.path / "metrics.json")
    robustness = property(lambda self: self.path / "robustness.json")  # chestdx robustness
    legacy_path = property(lambda self: self.path / LEGACY_NAME)

    def fold_dir(self, k: int) -> Path:
        """Lightning state (checkpoints/, logs/) of ensemble member ``k``."""
        return self.path / "folds" / str(k)

    # -- state ----------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def is_legacy(self) -> bool:
        return not self.exists() and self.legacy_path.is_file()

    def check(self) -> None:
        """Raise a clear error unless this is a loadable run dir."""
        if self.exists():
            return
        if self.is_legacy():
            raise LegacyRunError(
                f"{self.legacy_path}: run dir written by chestdx < 0.2 (a pickled model.pt). Convert it once with "
                f"`chestdx migrate {self.path}` (unpickles it: only for run dirs you trust)")
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run directory")
        raise RunDirError(f"{self.manifest_path}: missing (not a chestdx run dir; train one with `chestdx train`)")

    # -- manifest + members (written once by training) --------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        self.check()
        try:
            info = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RunDirError(f"{self.manifest_path}: unreadable manifest ({err})") from err
        if info.get("format") != RUN_FORMAT:
            raise RunDirError(f"{self.manifest_path}: format {info.get('format')!r}, expected {RUN_FORMAT!r}")
        for key in ("arch", "labels", "input_size", "mean", "std", "members"):
            if key not in info:
                raise RunDirError(f"{self.manifest_path}: missing key {key!r}")
        if not info["members"]:
            raise RunDirError(f"{self.manifest_path}: no ensemble members")
        return info

    def manifest_sha256(self) -> str:
        self.check()
        return sha256_file(self.manifest_path)

    def write_member(self, k: int, state_dict: dict[str, Any], **info: Any) -> dict[str, Any]:
        """Save member ``k``'s state dict (tensors only); returns its manifest entry (file, sha256, **info)."""
        import torch

        self.members_dir.mkdir(parents=True, exist_ok=True)
        path = self.members_dir / f"member-{k}.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save({name: t.detach().cpu().contiguous() for name, t in state_dict.items()}, tmp)
        os.replace(tmp, path)
        return {"file": f"members/{path.name}", "sha256": sha256_file(path), "member": k, **info}

    def write_manifest(self, info: dict[str, Any], members: list[dict[str, Any]]) -> None:
        """Write ``model.json`` (format, model facts, member entries). Training only."""
        from chestdx import __version__

        self.path.mkdir(parents=True, exist_ok=True)
        payload = {"format": RUN_FORMAT, "chestdx_version": __version__, "ensemble": "mean_logit",
                   **info, "members": members}
        atomic_write_json(self.manifest_path, payload)

    def load_member_state(self, entry: dict[str, Any]) -> dict[str, Any]:
        """One member's state dict, sha256-checked, loaded with ``weights_only=True`` (no code runs)."""
        import torch

        path = self.path / entry["file"]
        if not path.is_file():
            raise RunDirError(f"{path}: ensemble member missing")
        if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
            raise RunDirError(f"{path}: sha256 differs from model.json (file changed after training)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError/RuntimeError on anything but tensors
            raise RunDirError(f"{path}: not a plain state dict ({err})") from err
        if not isinstance(state, dict):
            raise RunDirError(f"{path}: not a state dict")
        return state

    # -- sidecars (written by evaluate / calibrate) ------------------------------------------------------
    def read_calibration(self) -> dict[str, Any] | None:
        """The calibration sidecar, or None when the run was never calibrated; refuses one for other weights."""
        if not self.calibration_path.is_file():
            return None
        try:
            side = json.loads(self.calibration_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RunDirError(f"{self.calibration_path}: unreadable ({err})") from err
        if side.get("format") != CALIBRATION_FORMAT:
            raise RunDirError(f"{self.calibration_path}: format {side.get('format')!r}, expected "
                              f"{CALIBRATION_FORMAT!r}")
        if side.get("manifest_sha256") not in (None, self.manifest_sha256()):
            raise RunDirError(f"{self.calibration_path}: fitted for other weights (manifest sha256 differs); "
                              f"re-run `chestdx evaluate {self.path}`")
        return side

    def write_calibration(self, side: dict[str, Any]) -> None:
        side = {**side, "format": CALIBRATION_FORMAT, "manifest_sha256": self.manifest_sha256()}
        atomic_write_json(self.calibration_path, side)

    def read_ood(self) -> dict[str, Any] | None:
        """OOD statistics as {name: array or scalar}, or None."""
        if not self.ood_path.is_file():
            return None
        with np.load(self.ood_path, allow_pickle=False) as z:
            out: dict[str, Any] = {}
            for k in z.files:
                v = z[k]
                if k.endswith("__json"):
                    out[k[: -len("__json")]] = json.loads(str(v))
                else:
                    out[k] = v.item() if v.ndim == 0 else v
        return out

    def write_ood(self, stats: dict[str, Any]) -> None:
        arrays = {(f"{k}__json" if isinstance(v, dict) else k): (np.asarray(json.dumps(v)) if isinstance(v, dict)
                                                                else np.asarray(v))
                  for k, v in stats.items() if v is not None}
        tmp = self.ood_path.with_name("ood.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self.ood_path)


def read_legacy(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """A ``chestdx-checkpoint/1`` payload: plain data loads safely; a pickle needs ``trust=True`` (runs code)."""
    import pickle

    import torch

    run = RunDir(path)
    file = run.legacy_path if run.path.is_dir() else run.path
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        if not trust:
            raise LegacyRunError(
                f"{file}: holds pickled objects that would run code on load. If you trust this run dir, convert "
                f"it once with `chestdx migrate {run.path}`") from err
        payload = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != LEGACY_FORMAT:
        raise RunDirError(f"{file}: not a {LEGACY_FORMAT} checkpoint")
    return payload


def migrate(path: str | Path, trust: bool = False) -> RunDir:
    """Write ``chestdx-run/2`` files (manifest, member 0, OOD stats) beside a legacy ``model.pt``.

    The old temperature and thresholds are kept in ``legacy.json`` for reference only: run ``chestdx evaluate``
    afterwards to fit the calibration sidecar with stated operating points.
    """
    run = RunDir(path)
    payload = read_legacy(run.path, trust=trust)
    entry = run.write_member(0, payload["state_dict"], fold=None, best_epoch=None)
    info = {k: payload.get(k) for k in ("arch", "labels", "input_size", "mean", "std", "pretrained", "freeze")}
    info["metadata"] = list(payload.get("metadata") or [])
    info["config_name"] = (payload.get("config") or {}).get("name")
    info["migrated_from"] = LEGACY_FORMAT
    run.write_manifest(info, [entry])
    atomic_write_json(run.path / "legacy.json", {k: payload.get(k) for k in ("thresholds", "temperature",
                                                                              "threshold_method")})
    ood = payload.get("ood")
    if ood:
        run.write_ood({k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in ood.items()})
    return run
