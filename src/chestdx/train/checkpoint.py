"""The self-describing model checkpoint (``RUN_DIR/model.pt``) that evaluate, explain and serve load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "chestdx-checkpoint/1"
CHECKPOINT_NAME = "model.pt"


def save_checkpoint(path: str | Path, model: nn.Module, labels: list[str], config: dict[str, Any],
                    **extra: Any) -> None:
    """Write atomically (tmp file + rename): a killed process never leaves a half-written checkpoint."""
    payload = {
        "format": FORMAT,
        "arch": model.arch,
        "labels": list(labels),
        "input_size": int(config["image_size"]),
        "mean": list(model.mean),
        "std": list(model.std),
        "pretrained": config["model"].get("pretrained"),
        "freeze": config["model"].get("freeze", "none"),
        "metadata": list(model.metadata),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "thresholds": None,
        "temperature": None,
        "config": config,
    }
    payload.update(extra)
    write_checkpoint(path, payload)


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomic torch.save."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint dict (a run dir or the model.pt file)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no chestdx checkpoint (train a run first)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint")
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> nn.Module:
    """Rebuild the ChestModel (no pretrained download: the weights come from the checkpoint)."""
    from chestdx.models import build_model

    model = build_model(payload["arch"], len(payload["labels"]), pretrained=None,
                        freeze=payload.get("freeze", "none"), metadata=tuple(payload.get("metadata", ())),
                        input_size=int(payload["input_size"]))
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval()
