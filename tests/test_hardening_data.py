"""Folder scanning never loses entries silently (symlink loops, broken links, folder loops) and EDA counts
missing demographics without pandas dtype warnings."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chestdx.data.eda import counts_with_unknown, run_eda
from chestdx.data.files import list_images
from chestdx.io import ImageReadError, read_image
from chestdx.serve.batch import collect_inputs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """NORMAL/ with 3 PNGs, a self-looping link, a broken link, a link to its own folder and a duplicate dir link."""
    root = tmp_path / "ds"
    (root / "NORMAL").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / "NORMAL" / f"IM-000{i}-0001.png")
    os.symlink("loop.png", root / "NORMAL" / "loop.png")
    os.symlink("gone.png", root / "NORMAL" / "broken.png")
    os.symlink(".", root / "NORMAL" / "again")  # folder loop
    os.symlink("NORMAL", root / "ALIAS")  # the same folder twice
    return root


def test_list_images_reports_links_it_cannot_follow(tree: Path, caplog) -> None:
    bad: list[tuple[str, str]] = []
    with caplog.at_level(logging.WARNING):
        found = list_images(tree, bad=bad)
    assert [Path(p).name for p in found] == [f"IM-000{i}-0001.png" for i in range(3)]  # each image once
    reasons = {Path(p).name: r for p, r in bad}
    assert "symbolic link loop" in reasons["loop.png"]
    assert "broken symbolic link" in reasons["broken.png"]
    assert "already listed" in reasons["again"] or "already listed" in reasons.get("ALIAS", "")
    assert "loop.png" in caplog.text and "broken.png" in caplog.text


def test_predict_inputs_keep_every_image_named_entry(tree: Path) -> None:
    files = collect_inputs([tree / "NORMAL"])
    assert sorted(f.name for f in files) == ["IM-0000-0001.png", "IM-0001-0001.png", "IM-0002-0001.png",
                                             "broken.png", "loop.png"]  # 5 image-named entries -> 5 rows
    with pytest.raises(ImageReadError, match=r"loop\.png: symbolic link loop"):
        read_image(tree / "NORMAL" / "loop.png")
    with pytest.raises(ImageReadError, match=r"broken\.png: broken symbolic link"):
        read_image(tree / "NORMAL" / "broken.png")


def test_folder_index_survives_a_symlink_loop(tree: Path) -> None:
    from chestdx.data.folders import read_folders

    df = read_folders(tree)
    assert len(df) == 3


def test_eda_counts_missing_demographics_without_dtype_warnings(tmp_path: Path) -> None:
    n = 6
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "path": "x", "patient_id": [f"p{k // 2}" for k in
                                                                                          range(n)],
                       "Pneumonia": [1.0, 0, 0, 1, 0, np.nan], "Effusion": [0.0, 0, 1, 0, 0, 0],
                       "age": np.nan, "sex": np.nan, "view": ["PA", None, "AP", "PA", None, None],
                       "source": "test", "split": ["train", "train", "val", "val", "test", "test"]})
    assert df["sex"].dtype == np.float64  # an all-missing column: fillna("unknown") warned here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = run_eda(df, tmp_path)
    assert summary["sex"] == {"unknown": 6}
    assert summary["view"] == {"unknown": 3, "PA": 2, "AP": 1}
    assert counts_with_unknown(pd.Series([1.0, np.nan, 1.0])).to_dict() == {"1.0": 2, "unknown": 1}
