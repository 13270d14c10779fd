"""chestdx.data.phantom: synthetic chest-like images with planted findings and known boxes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chestdx.data.phantom import (
    DEFAULT_LABELS,
    NIH_BOX_HEADER,
    SOURCE,
    generate_phantom,
    write_phantom_dataset,
)
from chestdx.io import read_image


@pytest.fixture(scope="module")
def pair():
    """The same 160 phantoms with and without their findings (same anatomy and noise)."""
    return generate_phantom(160, size=128, seed=7), generate_phantom(160, size=128, seed=7, plant_findings=False)


def test_shapes_and_metadata(pair):
    ph, _ = pair
    n = len(ph)
    assert ph.images.shape == (n, 128, 128) and ph.images.dtype == np.uint8
    assert ph.labels.shape == (n, 4) and ph.labels.dtype == np.float32
    assert ph.label_names == DEFAULT_LABELS
    assert set(np.unique(ph.labels)) <= {0.0, 1.0}
    assert 0.2 < ph.labels.mean() < 0.5  # ~0.35 each
    assert list(ph.boxes.columns) == ["image_index", "image_id", "label", "x", "y", "w", "h"]
    assert all(i.startswith("phantom_") and i.endswith(".png") for i in ph.image_ids)
    assert ph.patient_ids[0] == "P0001" and all(len(p) == 5 and p[0] == "P" for p in ph.patient_ids)
    per_patient = pd.Series(ph.patient_ids).value_counts()
    assert 1.6 < per_patient.mean() < 2.4 and per_patient.max() <= 3
    # patient-level fields are constant within a patient
    df = ph.frame()
    assert df.groupby("patient_id")[["age", "sex"]].nunique().max().max() == 1
    assert set(df["sex"]) <= {"M", "F"} and set(df["view"]) <= {"PA", "AP"}
    assert (df["source"] == SOURCE).all() and df["age"].between(20, 85).all()
    # dark background, brighter body
    assert ph.images[:, :3, :3].mean() < 30 and ph.images[:, 100:110, 60:68].mean() > 90


def test_deterministic_and_prefix_stable(pair):
    ph, _ = pair
    again = generate_phantom(160, size=128, seed=7)
    np.testing.assert_array_equal(again.images, ph.images)
    np.testing.assert_array_equal(again.labels, ph.labels)
    pd.testing.assert_frame_equal(again.boxes, ph.boxes)
    assert again.patient_ids == ph.patient_ids and again.views == ph.views

    head = generate_phantom(70, size=128, seed=7)
    np.testing.assert_array_equal(head.images, ph.images[:70])
    pd.testing.assert_frame_equal(head.boxes, ph.boxes[ph.boxes.image_index < 70].reset_index(drop=True))

    other = generate_phantom(20, size=128, seed=8)
    assert not np.array_equal(other.images, ph.images[:20])


def test_one_box_per_positive_label_inside_image(pair):
    ph, _ = pair
    for j, name in enumerate(ph.label_names):
        positives = set(np.flatnonzero(ph.labels[:, j]))
        boxed = ph.boxes.loc[ph.boxes.label == name, "image_index"]
        assert set(boxed) == positives and boxed.is_unique
    b = ph.boxes
    assert (b.x >= 0).all() and (b.y >= 0).all() and (b.w > 0).all() and (b.h > 0).all()
    assert (b.x + b.w <= 128).all() and (b.y + b.h <= 128).all()
    assert (ph.boxes.image_id == [ph.image_ids[i] for i in ph.boxes.image_index]).all()


def test_findings_are_visible_inside_their_box_only(pair):
    ph, ctrl = pair
    assert ctrl.labels.sum() == 0 and ctrl.boxes.empty
    clean = ph.labels.sum(axis=1) == 0
    assert clean.any()
    np.testing.assert_array_equal(ph.images[clean], ctrl.images[clean])

    full = generate_phantom(80, size=128, seed=7)
    sign = {"Nodule": 1, "Effusion": 1, "Cardiomegaly": 1, "Pneumothorax": -1}  # brighter / darker
    for j, name in enumerate(DEFAULT_LABELS):
        # same images with every finding except `name`: the difference is that finding alone
        without = generate_phantom(80, size=128, seed=7, labels=[x for x in DEFAULT_LABELS if x != name])
        diff = full.images.astype(np.int16) - without.images.astype(np.int16)
        inside = np.zeros(diff.shape, dtype=bool)
        boxes = full.boxes[full.boxes.label == name]
        assert len(boxes) == full.labels[:, j].sum() > 5
        for r in boxes.itertuples():
            x, y, w, h = int(r.x), int(r.y), int(r.w), int(r.h)
            inside[r.image_index, y : y + h, x : x + w] = True
            patch = diff[r.image_index, y : y + h, x : x + w]
            assert np.abs(patch).mean() > 4, (r.image_id, name)
            assert sign[name] * patch.mean() > 2, (r.image_id, name)
        assert (np.abs(diff[~inside]) > 3).mean() < 1e-3, name


def test_labels_subset_alias_and_errors():
    full = generate_phantom(40, size=64, seed=3)
    only = generate_phantom(40, size=64, seed=3, labels=("nodule", "Mass"))  # alias-folded names
    assert only.label_names == ("Nodule", "Mass")
    np.testing.assert_array_equal(only.labels[:, 0], full.labels[:, 1])  # same planted nodules
    assert set(only.boxes.label) <= {"Nodule", "Mass"}
    with pytest.raises(ValueError, match="Hernia"):
        generate_phantom(2, labels=("Hernia",))
    with pytest.raises(ValueError, match="size"):
        generate_phantom(2, size=8)
    empty = generate_phantom(0)
    assert empty.images.shape == (0, 128, 128) and empty.boxes.empty


def test_many_phantoms_are_distinct_uint8_images():
    # generation speed is a benchmark matter (timed unit tests fail on a loaded machine); here: 400 distinct images
    ph = generate_phantom(400, size=128, seed=0)
    assert len(ph) == 400 and ph.images.dtype == np.uint8 and ph.images.shape == (400, 128, 128)
    assert len({img.tobytes() for img in ph.images}) == 400


def test_write_and_read_back(tmp_path):
    out = write_phantom_dataset(tmp_path / "ph", n=24, size=96, seed=5)
    ph = generate_phantom(24, size=96, seed=5)

    table = pd.read_csv(out / "labels.csv")
    assert list(table.columns) == ["path", "patient_id", "age", "sex", "view", *DEFAULT_LABELS, "source"]
    assert (table["source"] == "phantom-synthetic").all()
    assert table["patient_id"].tolist() == ph.patient_ids
    np.testing.assert_array_equal(table[list(DEFAULT_LABELS)].to_numpy(), ph.labels)
    for i, rel in enumerate(table["path"]):
        assert rel == f"images/{ph.image_ids[i]}"
        np.testing.assert_array_equal(np.round(read_image(out / rel) * 255).astype(np.uint8), ph.images[i])

    text = (out / "boxes.csv").read_text()
    assert text.splitlines()[0] == NIH_BOX_HEADER
    assert all(line.endswith(",,,") and line.count(",") == 8 for line in text.splitlines()[1:])
    boxes = pd.read_csv(out / "boxes.csv")
    assert list(boxes.columns[:6]) == ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    got = boxes.iloc[:, :6].set_axis(["image_id", "label", "x", "y", "w", "h"], axis=1)
    want = ph.boxes[["image_id", "label", "x", "y", "w", "h"]]
    pd.testing.assert_frame_equal(got.astype({c: float for c in "xywh"}), want)

    readme = (out / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "box_reference_size: 96" in readme

    # rewriting with fewer images leaves no stale phantom files behind
    write_phantom_dataset(out, n=5, size=96, seed=5)
    assert len(list((out / "images").glob("phantom_*.png"))) == 5


def test_nih_sample_boxes_have_the_same_layout(nih_sample):
    ours = NIH_BOX_HEADER.split(",")
    theirs = (nih_sample / "BBox_List_2017.csv").read_text().splitlines()
    assert theirs[0].split(",") == ours
    assert theirs[1].count(",") == 8 and theirs[1].endswith(",,,")
