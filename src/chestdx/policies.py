"""Operating-point policies: how a threshold is chosen on out-of-fold predictions (one parser for config, evaluate
and the Predictor).

``balanced`` (Youden's J), ``f1``, ``sensitivity:<t>`` / ``specificity:<t>`` (0 < t < 1), and ``auto``: at
calibration time, the policy whose mean number of findings called per out-of-fold image is closest to the true
mean number of findings per out-of-fold image (so calls track the real finding count; no test data involved).
"""

from __future__ import annotations

AUTO = "auto"


def parse_policy(name: str) -> tuple[str, float | None]:
    """``"balanced"`` -> ("balanced", None); ``"sensitivity:0.9"`` -> ("sensitivity", 0.9); else ValueError."""
    text = str(name).strip().lower()
    if text in ("balanced", "youden"):
        return "balanced", None
    if text in ("f1", AUTO):
        return text, None
    kind, _, value = text.partition(":")
    if kind in ("sensitivity", "specificity") and value:
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if 0.0 < target < 1.0:
            return kind, target
        raise ValueError(f"policy {name!r}: the target must be a number between 0 and 1 (e.g. {kind}:0.9)")
    raise ValueError(f"unknown policy {name!r}; use auto, balanced, f1, sensitivity:<x> or specificity:<x> (e.g. "
                     f"sensitivity:0.9)")


def policy_key(name: str) -> str:
    """Canonical policy name: ``balanced``, ``sensitivity:0.90``, ``auto``."""
    kind, target = parse_policy(name)
    return kind if target is None else f"{kind}:{target:.2f}"
