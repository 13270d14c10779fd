"""Patient-grouped, multilabel-stratified splits and the leak audit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from chestdx.data.index import label_columns


def _patient_label_counts(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique patients, their positive counts per label (P, L) and image counts (P,)."""
    codes, patients = pd.factorize(df["patient_id"], sort=False)
    y = np.nan_to_num(df[label_columns(df)].to_numpy(np.float64), nan=0.0)
    counts = np.zeros((len(patients), y.shape[1]))
    np.add.at(counts, codes, y)
    images = np.bincount(codes, minlength=len(patients)).astype(np.float64)
    return np.asarray(patients), counts, images


def stratified_group_assign(df: pd.DataFrame, fractions: dict[str, float], seed: int = 0) -> pd.Series:
    """Assign every patient to one split, balancing each label's positives and the image count.

    Iterative stratification (Sechidis et al. 2011) at the patient level: patients holding the rarest
    labels are placed first, each into the split that most lacks that label, so rare labels (Hernia)
    reach every split when there are enough patients. Returns the split of each row of ``df``.
    """
    names = list(fractions)
    frac = np.array([fractions[n] for n in names], dtype=np.float64)
    if np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    patients, counts, images = _patient_label_counts(df)
    order = rng.permutation(len(patients))
    patients, counts, images = patients[order], counts[order], images[order]
    label_need = frac[:, None] * counts.sum(0)[None, :]  # (S, L) positives each split still wants
    image_need = frac * images.sum()
    has = counts > 0
    label_total = has.sum(0)
    # rarest label each patient carries (by number of patients carrying it); label-free patients last
    rarity = np.where(has, label_total[None, :], np.iinfo(np.int64).max)
    rarest = rarity.argmin(1)
    key = rarity.min(1)
    assignment = np.empty(len(patients), dtype=np.int64)
    for p in np.argsort(key, kind="stable"):
        if has[p].any():
            need = label_need[:, rarest[p]]
            best = np.flatnonzero(need == need.max())
            if len(best) > 1:
                best = best[np.argsort(-image_need[best], kind="stable")]
            s = best[0]
        else:
            s = int(np.argmax(image_need))
        assignment[p] = s
        label_need[s] -= counts[p]
        image_need[s] -= images[p]
    split_of_patient = pd.Series(np.array(names, dtype=object)[assignment], index=patients)
    return df["patient_id"].map(split_of_patient).rename("split")


def make_split(index: pd.DataFrame, val: float = 0.1, test: float = 0.2, seed: int = 0,
               official: bool = False, force_test: list[str] | None = None) -> pd.DataFrame:
    """Index + ``split`` column. ``official``: test = the dataset's official test list, val grouped from the rest.

    ``force_test``: image ids whose PATIENTS go to test (e.g. the images with radiologist boxes, so that
    localization is measured on held-out patients); the other patients are split as usual.
    """
    out = index.copy()
    if force_test:
        forced_patients = set(out.loc[out["image_id"].isin(set(force_test)), "patient_id"])
        forced = out["patient_id"].isin(forced_patients)
        n_rest = int((~forced).sum())
        test_rest = max(0.0, (test * len(out) - forced.sum()) / n_rest) if not official else test
        val_rest = min(val * len(out) / n_rest, 1.0 - test_rest)
        rest = make_split(out[~forced], val=val_rest, test=test_rest, seed=seed, official=official)
        out.loc[forced, "split"] = "test"
        out.loc[~forced, "split"] = rest["split"].to_numpy()
        return out
    if official:
        if "official_split" not in out.columns or out["official_split"].isna().all():
            raise ValueError("this index has no official split lists (NIH train_val_list.txt/test_list.txt or "
                             "a train/test folder layout)")
        off = out["official_split"].fillna("train_val").replace({"train": "train_val", "val": "train_val"})
        is_test = off == "test"
        out.loc[is_test, "split"] = "test"
        rest = out[~is_test]
        val_frac = val / (1.0 - test) if test < 1 else val
        out.loc[~is_test, "split"] = stratified_group_assign(rest, {"train": 1 - val_frac, "val": val_frac}, seed)
    else:
        out["split"] = stratified_group_assign(out, {"train": 1 - val - test, "val": val, "test": test}, seed)
    return out


@dataclass
class AuditResult:
    """Leaks found in a split table."""

    leaked_patients: dict[str, list[str]]
    duplicate_images: list[str]
    duplicate_paths: list[str]

    @property
    def ok(self) -> bool:
        return not (self.leaked_patients or self.duplicate_images or self.duplicate_paths)

    def messages(self) -> list[str]:
        msgs = [f"patient {p} is in several splits: {', '.join(s)}" for p, s in self.leaked_patients.items()]
        msgs += [f"image {i} appears more than once" for i in self.duplicate_images]
        msgs += [f"file {p} appears more than once" for p in self.duplicate_paths]
        return msgs


def audit_split(df: pd.DataFrame) -> AuditResult:
    """Find patients in more than one split and images listed twice."""
    missing = {"patient_id", "split", "image_id"} - set(df.columns)
    if missing:
        raise ValueError(f"split table lacks columns {sorted(missing)}")
    pairs = df[["patient_id", "split"]].drop_duplicates()
    multi = pairs[pairs["patient_id"].duplicated(keep=False)]
    leaked = {str(p): sorted(map(str, g)) for p, g in multi.groupby("patient_id", sort=False)["split"]}
    dup_ids = df.loc[df["image_id"].duplicated(), "image_id"].astype(str).unique().tolist()
    dup_paths = (df.loc[df["path"].duplicated(), "path"].astype(str).unique().tolist()
                 if "path" in df.columns else [])
    return AuditResult(leaked, dup_ids, dup_paths)
