"""Run configuration: YAML presets from ``configs/`` plus ``key.sub=value`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "data": None,  # dataset folder / CSV, or "phantom" for the built-in synthetic set
    "dataset_kind": "auto",
    "split": {"seed": 0, "val": 0.1, "test": 0.2, "official": False, "boxes_to_test": None},
    "labels": "auto",  # "auto": labels with >= min_positives positives in train; or an explicit list
    "min_positives": 1,
    "model": {"arch": "efficientnet_lite0", "pretrained": "imagenet", "freeze": "none", "metadata": []},
    "image_size": 224,
    "augment": {"shift": 0.05, "rotate_deg": 5.0, "shear": 0.05, "zoom": 0.15},
    "loss": "weighted_bce",
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
    "scheduler": {"name": "plateau", "factor": 0.5, "patience": 1},
    "batch_size": 16,
    "accumulate": 1,
    "epochs": 10,
    # monitor: validation macro AUROC over labels with >= min_val_positives positives (1: every estimable label)
    "early_stopping": {"patience": 2, "min_delta": 0.0, "min_val_positives": 1},
    "precision": "auto",  # 16-mixed on GPU, 32 on CPU
    "seed": 0,
    "num_workers": 0,
    "accelerator": "auto",
    "devices": 1,
    "strategy": "auto",
    "num_nodes": 1,
    "cache_root": None,
    "limit_train_batches": None,
    "threads": None,  # torch CPU threads (None = torch default)
    "progress": True,
}


def deep_update(base: dict, update: dict) -> dict:
    """Recursive dict merge (``update`` wins); returns a new dict."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or a preset name from ``configs/`` (e.g. "default", "seed")."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = CONFIG_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {name_or_path!r} not found; presets: {', '.join(names)}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """'optimizer.lr=3e-4' -> (['optimizer','lr'], 0.0003) with YAML typing of the value."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw)
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- preset YAML (which may ``inherit:`` another preset) <- overrides."""
    config = copy.deepcopy(DEFAULTS)
    if name_or_path is not None:
        config = deep_update(config, _read_with_inherit(resolve_config_path(name_or_path)))
    for item in overrides or []:
        keys, value = parse_override(item)
        node = config
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if keys[-1] not in node and keys[0] not in DEFAULTS:
            raise KeyError(f"unknown config key {'.'.join(keys)!r}")
        node[keys[-1]] = value
    return config


def _read_with_inherit(path: Path, depth: int = 0) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    parent = data.pop("inherit", None)
    if parent and depth < 5:
        return deep_update(_read_with_inherit(resolve_config_path(parent), depth + 1), data)
    return data


def save_config(config: dict[str, Any], path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
