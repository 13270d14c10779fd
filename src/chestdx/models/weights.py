"""Pretrained-weight sources (URL / hub cache / local file) and a strict, explained state-dict check.

``torch.nn.Module.load_state_dict(strict=False)`` and MONAI's own loader silently skip keys and shape
mismatches; here every tensor of the target must receive a value of the right shape, or we raise
:class:`PretrainedWeightsError` listing what is missing, unexpected and mismatched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = [
    "PretrainedWeightsError",
    "hub_cache_path",
    "is_no_weights",
    "load_checked",
    "load_weights_file",
    "resolve_state_dict",
]

_MAX_LISTED = 12


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be found, read, or mapped completely onto the model."""


def is_no_weights(pretrained: str | os.PathLike | None) -> bool:
    """True for "no pretrained weights": None, "", "none", "false", "scratch"."""
    return pretrained is None or str(pretrained).strip().lower() in ("", "none", "false", "scratch")


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    """A plain state dict from a file's content (also unwraps {"state_dict": ...} / {"model": ...})."""
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"{source}: not a state dict of tensors")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict from disk (CPU, ``weights_only``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretrainedWeightsError(f"pretrained weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # re-raised with the file name
        raise PretrainedWeightsError(f"{p}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    return _unwrap(obj, str(p))


def hub_cache_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``url`` (``$TORCH_HOME/hub/checkpoints/<name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def resolve_state_dict(pretrained: str | os.PathLike, url: str | None, arch: str) -> dict[str, torch.Tensor]:
    """``"imagenet"`` -> the torch hub cache, else a download from ``url``; anything else is a file path."""
    if str(pretrained).strip().lower() != "imagenet":
        return load_weights_file(pretrained)
    if url is None:
        raise PretrainedWeightsError(
            f"{arch}: no ImageNet weights are known; pass pretrained=/path/to/state_dict.pth or None")
    cached = hub_cache_path(url)
    if cached.is_file():
        return load_weights_file(cached)
    try:
        obj = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True,
                                                 weights_only=True)
    except Exception as exc:  # offline machines end here: say what to do instead
        raise PretrainedWeightsError(
            f"{arch}: could not download ImageNet weights from {url} ({type(exc).__name__}: {exc}). "
            f"Offline? Copy the file to {cached} or pass pretrained=/path/to/{cached.name}") from exc
    return _unwrap(obj, url)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def load_checked(module: nn.Module, state: Mapping[str, torch.Tensor], what: str,
                 optional: Callable[[str], bool] = lambda k: k.endswith("num_batches_tracked"),
                 ignore_extra: Iterable[str] = ()) -> None:
    """Copy ``state`` into ``module`` after checking it covers every tensor with the right shape.

    ``optional(key)`` marks target keys that may be absent (default: BatchNorm ``num_batches_tracked``);
    ``ignore_extra`` are source keys deliberately dropped (e.g. the ImageNet classifier). Raises
    :class:`PretrainedWeightsError` listing missing / unexpected / shape-mismatched keys.
    """
    target = module.state_dict()
    ignored = set(ignore_extra)
    missing = sorted(k for k in target if k not in state and not optional(k))
    unexpected = sorted(k for k in state if k not in target and k not in ignored)
    mismatched = sorted(f"{k} {_shape(state[k])} vs model {_shape(target[k])}"
                        for k in state if k in target and _shape(state[k]) != _shape(target[k]))
    if missing or unexpected or mismatched:
        msg = f"{what}: pretrained weights do not match the model"
        if missing:
            msg += _listing("missing", missing)
        if unexpected:
            msg += _listing("unexpected", unexpected)
        if mismatched:
            msg += _listing("shape mismatch", mismatched)
        raise PretrainedWeightsError(msg)
    with torch.no_grad():
        for k, v in state.items():
            if k in target:
                target[k].copy_(v.to(dtype=target[k].dtype))
