"""Patient-grouped bootstrap: patients are resampled with replacement, their images follow them.

A resample is stored as ``counts`` (n_boot, n_patients): how often each patient was drawn. The
weight of an image in a replicate is its patient's count, so every label, metric and model scored
with the same ``counts`` sees exactly the same patient resamples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Cap on the elements of one (replicates x items) block, to bound memory.
MAX_BLOCK = 4_000_000


def group_codes(groups: np.ndarray | pd.Series | list | None, n: int) -> np.ndarray:
    """Integer code 0..G-1 per image; ``None`` makes every image its own group (image bootstrap)."""
    if groups is None:
        return np.arange(n, dtype=np.int64)
    codes, _ = pd.factorize(pd.Series(np.asarray(groups, dtype=object)), use_na_sentinel=True)
    if len(codes) != n:
        raise ValueError(f"groups has {len(codes)} entries, expected {n}")
    if (codes < 0).any():
        raise ValueError(f"{int((codes < 0).sum())} images have a missing patient id")
    return codes.astype(np.int64)


def patient_counts(codes: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, G) int32 draw counts: each replicate draws G patients with replacement."""
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    counts = np.zeros((n_boot, n_groups), dtype=np.int32)
    if n_boot == 0 or n_groups == 0:
        return counts
    rng = np.random.default_rng(seed)
    step = max(1, MAX_BLOCK // n_groups)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        draws = rng.integers(0, n_groups, size=(stop - start, n_groups))
        flat = (draws + np.arange(stop - start)[:, None] * n_groups).ravel()
        counts[start:stop] = np.bincount(flat, minlength=(stop - start) * n_groups).reshape(-1, n_groups)
    return counts


def bootstrap_indices(groups: np.ndarray | pd.Series | list, n_boot: int, seed: int = 0) -> list[np.ndarray]:
    """Image indices of each patient-level bootstrap replicate (all images of a drawn patient come along).

    ``groups`` is the patient id per image. A patient drawn k times contributes its images k times.
    Same draws as the weights used internally by the metric functions with the same seed.
    """
    codes = group_codes(groups, len(groups))
    n = len(codes)
    counts = patient_counts(codes, n_boot, seed)
    images = np.arange(n)
    return [np.repeat(images, counts[b, codes]) for b in range(n_boot)]


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Percentile interval of the finite replicates, or ``None`` when there are none."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return [float(lo), float(hi)]
