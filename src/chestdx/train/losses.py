"""Masked multi-label losses on logits: NaN targets (unknown labels) are left out.

Every loss is the mean over the observed (non-NaN) entries of the batch, computed with
``softplus`` (= -log sigmoid) so that any finite logit gives a finite loss and gradient.
A batch with no observed entry gives 0 (still attached to the graph, zero gradient).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOSSES", "FocalLoss", "MaskedBCE", "WeightedBCE", "build_loss", "class_weights_from_labels"]


def class_weights_from_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The seed's per-label weights from TRAINING labels (N, L), NaN = unknown.

    ``w_pos`` = fraction of negatives, ``w_neg`` = fraction of positives among the known labels of each
    column, so positives and negatives contribute equally. A column with no known label gets 0.5 / 0.5.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"labels must be (N, L), got shape {y.shape}")
    known = ~np.isnan(y)
    n_known = known.sum(axis=0)
    n_pos = np.where(known, y, 0.0).sum(axis=0)
    frac_pos = np.divide(n_pos, n_known, out=np.full(y.shape[1], 0.5), where=n_known > 0)
    return (1.0 - frac_pos).astype(np.float32), frac_pos.astype(np.float32)


def _masked_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``loss`` over ``mask``; masked entries contribute neither value nor gradient."""
    total = torch.where(mask, loss, torch.zeros_like(loss)).sum()
    return total / mask.sum().clamp(min=1).to(loss.dtype)


def _split(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(float logits, targets with NaN -> 0, mask of known targets)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    z = logits.float()
    t = targets.to(z.device, torch.float32)
    mask = ~torch.isnan(t)
    return z, torch.where(mask, t, torch.zeros_like(t)), mask


class WeightedBCE(nn.Module):
    """``w_pos[j] * y * -log(sigmoid(z)) + w_neg[j] * (1 - y) * -log(1 - sigmoid(z))``, masked mean."""

    def __init__(self, w_pos: Sequence[float] | np.ndarray | torch.Tensor,
                 w_neg: Sequence[float] | np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w_pos", torch.as_tensor(np.asarray(w_pos, dtype=np.float32)))
        self.register_buffer("w_neg", torch.as_tensor(np.asarray(w_neg, dtype=np.float32)))
        if self.w_pos.shape != self.w_neg.shape or self.w_pos.ndim != 1:
            raise ValueError("w_pos and w_neg must be 1-D and of the same length")

    @classmethod
    def from_labels(cls, train_labels: np.ndarray) -> WeightedBCE:
        """Weights from the training labels (see :func:`class_weights_from_labels`)."""
        return cls(*class_weights_from_labels(train_labels))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z, t, mask = _split(logits, targets)
        if z.shape[-1] != self.w_pos.shape[0]:
            raise ValueError(f"{z.shape[-1]} logits per image but weights for {self.w_pos.shape[0]} labels")
        loss = self.w_pos * t * F.softplus(-z) + self.w_neg * (1.0 - t) * F.softplus(z)
        return _masked_mean(loss, mask)


class MaskedBCE(nn.Module):
    """Plain binary cross-entropy on logits, masked mean."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z, t, mask = _split(logits, targets)
        return _masked_mean(t * F.softplus(-z) + (1.0 - t) * F.softplus(z), mask)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``alpha_t * (1 - p_t)**gamma * BCE``, masked mean.

    ``alpha`` (float or per-label sequence) weights positives, ``1 - alpha`` negatives; None = no weighting.
    ``gamma=0, alpha=None`` equals :class:`MaskedBCE`.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError("gamma must be >= 0")
        self.gamma = float(gamma)
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z, t, mask = _split(logits, targets)
        bce = t * F.softplus(-z) + (1.0 - t) * F.softplus(z)
        loss = bce
        if self.gamma:
            # 1 - p_t without cancellation; the floor keeps d/dz finite for gamma < 1 when it underflows
            one_minus_pt = t * torch.sigmoid(-z) + (1.0 - t) * torch.sigmoid(z)
            loss = one_minus_pt.clamp(min=1e-12).pow(self.gamma) * bce
        if self.alpha is not None:
            loss = (self.alpha * t + (1.0 - self.alpha) * (1.0 - t)) * loss
        return _masked_mean(loss, mask)


LOSSES: tuple[str, ...] = ("weighted_bce", "bce", "focal")


def build_loss(spec: str | Mapping[str, Any], train_labels: np.ndarray | None = None, **kwargs) -> nn.Module:
    """``weighted_bce`` (weights from ``train_labels``, required), ``bce``, or ``focal`` (gamma, alpha).

    ``spec`` is a name or the config's mapping form (``{"name": "focal", "gamma": 2.0, "alpha": 0.25}``);
    the mapping's parameters and ``kwargs`` go to the loss (None = the loss's own default).
    """
    if isinstance(spec, Mapping):
        params = {k: v for k, v in spec.items() if k != "name" and v is not None}
        name, kwargs = spec.get("name", "weighted_bce"), {**params, **kwargs}
    else:
        name = spec
    key = str(name).strip().lower()
    if key != "focal" and kwargs:
        raise ValueError(f"loss {key!r} takes no parameters, got {sorted(kwargs)}")
    if key == "weighted_bce":
        if train_labels is None:
            raise ValueError("weighted_bce needs the training labels to compute its class weights")
        return WeightedBCE.from_labels(train_labels)
    if key == "bce":
        return MaskedBCE()
    if key == "focal":
        return FocalLoss(**kwargs)
    raise ValueError(f"unknown loss {name!r}; choose from {list(LOSSES)}")
