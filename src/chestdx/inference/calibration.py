"""Reader of the calibration sidecar (``calibration.json``, docs/contracts.md): numpy only, no sklearn/torch.

``Calibration`` turns ensemble logits into calibrated probabilities, says which labels may be called at the
selected operating point, and what a call means in words for the person reading it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from chestdx.policies import policy_key

NOT_CALIBRATED = "not calibrated: run `chestdx evaluate RUN`"
SOURCE_WORDS = {"oof": "out-of-fold", "val": "on validation", "legacy": "on validation (legacy run)"}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def apply_calibrator(cal: dict[str, Any], z: np.ndarray) -> np.ndarray:
    """Calibrated probabilities for logits ``z`` under one sidecar calibrator (the only implementation: fitting in
    ``chestdx.evaluate.calibrators`` uses it too)."""
    z = np.asarray(z, np.float64)
    method = cal.get("method")
    if method == "platt":
        return _sigmoid(float(cal["a"]) * z + float(cal["b"]))
    if method == "isotonic":
        return np.interp(z, np.asarray(cal["x"], np.float64), np.asarray(cal["y"], np.float64))
    if method == "temperature":
        return _sigmoid(z / float(cal["t"]))
    if method == "identity":
        return _sigmoid(z)
    raise ValueError(f"calibration sidecar: unknown calibrator method {method!r}")


def _canonical_policy(name: str) -> str:
    """``balanced``; ``sensitivity:0.9`` -> ``sensitivity:0.90``; unknown names pass through (then not found)."""
    try:
        return policy_key(name)
    except ValueError:
        return str(name).strip().lower()


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def _pct_ci(ci: Sequence[float] | None) -> str:
    return f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else ""


def _ppv_at(sens: float, spec: float, prevalence: float) -> float | None:
    tp, fp = sens * prevalence, (1.0 - spec) * (1.0 - prevalence)
    return tp / (tp + fp) if tp + fp > 0 else None


class Calibration:
    """Per-label calibrators and operating points of one run (see ``from_sidecar`` / ``none``)."""

    def __init__(self, labels: Sequence[str], entries: dict[str, dict[str, Any]], policy: str = "balanced",
                 source: str | None = None, prevalence: dict[str, float] | None = None,
                 temperature: float | None = None, policies: Sequence[str] | None = None,
                 uncalibrated_reason: str | None = None):
        self.labels = list(labels)
        self.entries = entries
        self.source = source
        self.prevalence = dict(prevalence or {})
        self.temperature = temperature
        self.uncalibrated_reason = uncalibrated_reason
        found = {p for e in entries.values() for p in (e.get("operating_points") or {})}
        self.policies = list(dict.fromkeys([*(policies or []), *sorted(found)]))
        self.policy = _canonical_policy(policy)

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_sidecar(cls, side: dict[str, Any] | None, labels: Sequence[str] | None = None) -> Calibration:
        """From a parsed ``calibration.json`` (``RunDir.read_calibration()``); ``None`` -> ``none(labels)``.

        ``labels``: the model's label order (the columns of the logits); default: the sidecar's order.
        """
        if side is None:
            if labels is None:
                raise ValueError("no calibration sidecar and no labels given: pass the model's labels")
            return cls.none(labels)
        entries = side.get("labels") or {}
        return cls(labels if labels is not None else list(entries), entries, side.get("policy") or "balanced",
                   side.get("source"), side.get("prevalence"), side.get("temperature"), side.get("policies"))

    @classmethod
    def none(cls, labels: Sequence[str], reason: str = NOT_CALIBRATED) -> Calibration:
        """Uncalibrated run: probabilities are sigmoid(logit) and no finding is called."""
        return cls(labels, {}, uncalibrated_reason=reason)

    @property
    def calibrated(self) -> bool:
        return self.uncalibrated_reason is None

    # -- probabilities --------------------------------------------------------------------------------
    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (B, L) for ensemble logits (B, L) in ``self.labels`` order."""
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != len(self.labels):
            raise ValueError(f"logits have shape {z.shape}; expected (batch, {len(self.labels)})")
        out = np.empty_like(z)
        for j, label in enumerate(self.labels):
            cal = (self.entries.get(label) or {}).get("calibrator") or {"method": "identity"}
            out[:, j] = apply_calibrator(cal, z[:, j])
        return out

    # -- operating points ------------------------------------------------------------------------------
    def set_policy(self, name: str) -> None:
        """Select the operating point used to call findings (e.g. ``balanced``, ``sensitivity:0.9``)."""
        key = _canonical_policy(name)
        if key not in self.policies:
            avail = ", ".join(self.policies) or "none (run not calibrated)"
            raise ValueError(f"policy {name!r} is not in this run's calibration; available: {avail} (fit another "
                             f"with `chestdx calibrate RUN --policy {name}`)")
        self.policy = key

    def _point(self, label: str) -> dict[str, Any] | None:
        return ((self.entries.get(label) or {}).get("operating_points") or {}).get(self.policy)

    def callable(self, label: str) -> bool:
        """True when ``label`` may be called: calibrated, enough OOF positives, a threshold at this policy."""
        return self.not_callable_reason(label) is None

    def not_callable_reason(self, label: str) -> str | None:
        """Why ``label`` is shown as a score only (None when it may be called)."""
        if label not in self.labels:
            raise KeyError(f"unknown label {label!r}; labels: {', '.join(self.labels)}")
        if self.uncalibrated_reason:
            return self.uncalibrated_reason
        entry = self.entries.get(label)
        if entry is None:
            return "no calibration for this label"
        if not entry.get("callable", False):
            return entry.get("reason") or "not callable"
        if self._point(label) is None or self._point(label).get("threshold") is None:
            return f"no threshold for policy {self.policy!r}"
        return None

    def threshold(self, label: str) -> float | None:
        """The calibrated-probability threshold (call when p >= it) at the current policy; None if not callable."""
        return float(self._point(label)["threshold"]) if self.callable(label) else None

    def thresholds(self) -> dict[str, float | None]:
        return {label: self.threshold(label) for label in self.labels}

    def statement(self, label: str, prevalence: float | None = None) -> str:
        """What calling ``label`` means, in words (for a called finding); the reason when it cannot be called.

        e.g. "at this threshold, out-of-fold: finds 82% [74, 89] of Effusion; 17% [12, 22] false alarms;
        PPV 0.28 at the training prevalence 7.6% (0.11 at 2.0%)". ``prevalence``: a prevalence to state the
        PPV at (default: the one given at calibration time for this label, if any).
        """
        reason = self.not_callable_reason(label)
        if reason is not None:
            return f"{label}: score only ({reason})"
        op = self._point(label)
        entry = self.entries[label]
        where = SOURCE_WORDS.get(self.source or "", "on held-out training data")
        parts = [f"at this threshold, {where}:"]
        sens, spec = op.get("sensitivity"), op.get("specificity")
        if sens is None or spec is None:
            return f"at this threshold ({self.policy}, chosen {where}): no stated sensitivity/specificity"
        parts.append(f"finds {_pct(sens)}{_pct_ci(op.get('sensitivity_ci'))} of {label};")
        spec_ci = op.get("specificity_ci")
        parts.append(f"{_pct(1 - spec)}{_pct_ci([1 - spec_ci[1], 1 - spec_ci[0]] if spec_ci else None)} false alarms;")
        text = " ".join(parts)
        train_prev = entry.get("prevalence")
        if op.get("ppv") is not None and train_prev is not None:
            text += f" PPV {op['ppv']:.2f} at the training prevalence {100 * train_prev:.1f}%"
        pi = prevalence if prevalence is not None else self.prevalence.get(label)
        if pi is not None:
            if not 0.0 < float(pi) < 1.0:
                raise ValueError(f"prevalence {pi} for {label}: must be strictly between 0 and 1")
            ppv = _ppv_at(sens, spec, float(pi))
            stated = op.get("at_prevalence") or {}
            ci = stated.get("ppv_ci") if stated.get("prevalence") is not None and math.isclose(
                stated["prevalence"], float(pi)) else None
            if ppv is not None:
                ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
                text += f" ({ppv:.2f}{ci_text} at {100 * float(pi):.1f}%)"
        return text

    def statements(self) -> dict[str, str]:
        """Statement of every callable label at the current policy."""
        return {label: self.statement(label) for label in self.labels if self.callable(label)}

    def to_dict(self) -> dict[str, Any]:
        """Policy, thresholds and reasons, for the API / export."""
        return {"policy": self.policy, "source": self.source, "calibrated": self.calibrated,
                "thresholds": self.thresholds(),
                "not_callable": {lb: self.not_callable_reason(lb) for lb in self.labels if not self.callable(lb)}}
