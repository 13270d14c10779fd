"""Localization metrics (pointing game, Wang et al. IoBB, chance values, table) and overlay PNGs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chestdx.explain import (
    LocRecord,
    format_caption,
    iobb,
    iobb_chance,
    localization_table,
    map_to_box,
    overlay_png,
    pointing_game_chance,
    pointing_game_hit,
    save_gallery,
    scale_box,
    score_records,
    wilson_ci,
)


def peak_map(shape=(64, 64), r=20, c=30) -> np.ndarray:
    m = np.zeros(shape, np.float32)
    m[r, c] = 1.0
    return m


def test_scale_box_square_and_per_axis():
    assert scale_box((100, 200, 50, 80), 1024, 512) == (50, 100, 25, 40)
    assert scale_box((100, 200, 50, 80), (1024, 1024), 224) == pytest.approx((21.875, 43.75, 10.9375, 17.5))
    # sizes are (H, W): x and w scale with the width
    assert scale_box((10, 10, 10, 10), (100, 200), (50, 50)) == pytest.approx((2.5, 5.0, 2.5, 5.0))


def test_pointing_game_hit_miss_tolerance_and_chance():
    box = (25, 15, 10, 10)  # covers columns 25..34, rows 15..24
    assert pointing_game_hit(peak_map(r=20, c=30), box)
    assert pointing_game_hit(peak_map(r=15, c=25), box)  # corner pixel inside
    assert not pointing_game_hit(peak_map(r=0, c=0), box)  # corner of the image
    assert not pointing_game_hit(peak_map(r=20, c=36), box)
    assert pointing_game_hit(peak_map(r=20, c=36), box, tolerance=2)
    assert pointing_game_chance(box, (64, 64)) == pytest.approx(100 / 4096)
    assert pointing_game_chance((0, 0, 10, 10), (64, 64), tolerance=2) == pytest.approx(12 * 12 / 4096)  # clipped


def test_map_to_box_largest_component():
    m = np.zeros((40, 40), np.float32)
    m[5:8, 5:8] = 1.0  # small but highest
    m[20:30, 10:16] = 0.8  # large, above 0.5 * max
    m[0, 39] = 0.4  # below threshold
    assert map_to_box(m) == (10, 20, 6, 10)
    assert map_to_box(m, threshold=0.9) == (5, 5, 3, 3)
    assert map_to_box(np.zeros((8, 8))) is None
    # diagonal neighbours join under 8-connectivity only
    d = np.eye(6, dtype=np.float32)
    assert map_to_box(d) == (0, 0, 6, 6)
    assert map_to_box(d, connectivity=1)[2:] == (1, 1)


def test_iobb_hand_examples():
    m = np.zeros((40, 40), np.float32)
    m[10:20, 10:20] = 1.0  # predicted box (10, 10, 10, 10), area 100
    assert iobb(m, (10, 10, 10, 10))[0] == pytest.approx(1.0)
    assert iobb(m, (0, 0, 40, 40))[0] == pytest.approx(1.0)  # IoBB ignores how big the gt box is
    assert iobb(m, (15, 10, 10, 10))[0] == pytest.approx(0.5)
    assert iobb(m, (15, 15, 10, 10))[0] == pytest.approx(0.25)
    assert iobb(m, (30, 30, 5, 5))[0] == 0.0
    assert iobb(np.zeros((5, 5)), (0, 0, 2, 2)) == (0.0, None)


def test_iobb_chance_exact_matches_monte_carlo():
    shape, gt, (pw, ph) = (64, 64), (20, 10, 16, 24), (12, 8)
    mean, probs = iobb_chance((pw, ph), gt, shape, (0.1, 0.25, 0.5))
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, 64 - pw + 1, 20000), rng.integers(0, 64 - ph + 1, 20000)
    ox = np.clip(np.minimum(xs + pw, gt[0] + gt[2]) - np.maximum(xs, gt[0]), 0, None)
    oy = np.clip(np.minimum(ys + ph, gt[1] + gt[3]) - np.maximum(ys, gt[1]), 0, None)
    v = ox * oy / (pw * ph)
    assert mean == pytest.approx(v.mean(), abs=0.01)
    for t, p in probs.items():
        assert p == pytest.approx((v > t).mean(), abs=0.01)
    # a box as large as the image always covers the gt box fully: IoBB = gt area / image area
    mean_full, p_full = iobb_chance((64, 64), gt, shape, (0.05, 0.1))
    assert mean_full == pytest.approx(16 * 24 / 4096)
    assert p_full == {0.05: 1.0, 0.1: 0.0}


def test_wilson_ci():
    lo, hi = wilson_ci(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-3)
    assert wilson_ci(0, 5)[0] == 0.0 and wilson_ci(5, 5)[1] == 1.0
    assert np.isnan(wilson_ci(0, 0)[0])


def test_localization_table():
    box = (25, 15, 10, 10)
    hit, miss = peak_map(r=20, c=30), peak_map(r=0, c=0)
    records = [
        LocRecord("a", "Mass", "gradcam", hit, box),
        ("b", "Mass", "gradcam", miss, box),
        {"image_id": "c", "label": "Nodule", "method": "gradcam", "map": hit, "box": box},
        ("a", "Mass", "smoothgrad", hit, box),
    ]
    per = score_records(records)
    assert list(per["pointing_hit"]) == [True, False, True, True]
    assert {"iobb", "pred_box", "iobb>0.5_hit", "iobb>0.5_chance"} <= set(per.columns)
    t = localization_table(records)
    row = t[(t.method == "gradcam") & (t.label == "overall") & (t.metric == "pointing")].iloc[0]
    assert (row.n, row.hits) == (3, 2) and row.hit_rate == pytest.approx(2 / 3)
    assert row.ci_low < 2 / 3 < row.ci_high
    assert row.chance == pytest.approx(100 / 4096)
    assert set(t.metric) == {"pointing", "iobb>0.1", "iobb>0.25", "iobb>0.5"}
    assert set(t[t.method == "gradcam"].label) == {"Mass", "Nodule", "overall"}
    # single-pixel peak inside the box: predicted box 1x1 inside gt -> IoBB 1
    mass = t[(t.method == "gradcam") & (t.label == "Mass") & (t.metric == "iobb>0.5")].iloc[0]
    assert (mass.n, mass.hits) == (2, 1)
    assert localization_table(pd.DataFrame()).empty


def test_overlay_png_and_gallery(tmp_path):
    yy, xx = np.mgrid[0:128, 0:128]
    img = (0.2 + 0.6 * (xx / 128)).astype(np.float32)
    heat = np.exp(-((xx[::4, ::4] - 90) ** 2 + (yy[::4, ::4] - 40) ** 2) / 200.0).astype(np.float32)  # 32x32
    p = overlay_png(
        img, heat, format_caption("Effusion", 0.834, "gradcam"), tmp_path / "sub" / "one.png", box=(80, 30, 20, 20)
    )
    with Image.open(p) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    items = [(img, heat, f"panel {i}") for i in range(5)] + [{"image": img, "heatmap": None, "caption": "raw"}]
    g = save_gallery(items, tmp_path / "gallery.png", ncols=3, title="methods")
    with Image.open(g) as im:
        assert im.size[0] > im.size[1]  # 3 columns x 2 rows
    assert format_caption("Effusion", 0.834, "gradcam") == "Effusion  p=0.83  (gradcam)"
    with pytest.raises(ValueError):
        save_gallery([], tmp_path / "x.png")
