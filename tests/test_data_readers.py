"""Dataset readers -> one Index schema, on real data and on small synthetic layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chestdx.data.folders import patient_from_filename, read_folders
from chestdx.data.index import IndexReport, label_columns
from chestdx.data.nih import read_nih, read_nih_boxes, read_official_lists
from chestdx.data.readers import build_index, detect_kind
from chestdx.data.table import read_table_dataset
from chestdx.labels import NIH_LABELS


def _png(path, value=128, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def test_nih_sample_indexes_exactly_the_present_images(nih_sample):
    report = IndexReport()
    df = read_nih(nih_sample, report=report)
    assert len(df) == 758 == len(list((nih_sample / "images").glob("*.png")))
    assert report.n_missing == 112_120 - 758
    assert len(report.missing_examples) >= 3 and f"{112_120 - 758} listed images not found" in report.summary()
    assert all(ex in report.summary() for ex in report.missing_examples[:3])
    assert df["patient_id"].nunique() == 514
    assert list(df.columns[:3]) == ["image_id", "path", "patient_id"]
    assert label_columns(df) == list(NIH_LABELS)
    assert set(df["sex"].dropna()) <= {"M", "F"} and df["view"].isin(["PA", "AP"]).all()
    assert df["age"].between(0, 120).all()
    row = df.set_index("image_id").loc["00000001_000.png"]  # "Cardiomegaly", 57 y, M, PA in the CSV
    assert row["Cardiomegaly"] == 1 and row[list(set(NIH_LABELS) - {"Cardiomegaly"})].sum() == 0
    assert (row["age"], row["sex"], row["view"]) == (57, "M", "PA")


def test_official_lists_put_every_sample_image_in_exactly_one_list(nih_sample):
    lists = read_official_lists(nih_sample)
    df = read_nih(nih_sample)
    assert df["official_split"].isin(["train_val", "test"]).all()
    assert not lists.index.duplicated().any()
    assert df["image_id"].isin(lists.index).all()


def test_nih_boxes_parse_odd_columns_and_aliases(nih_sample):
    boxes = read_nih_boxes(nih_sample / "BBox_List_2017.csv")
    assert len(boxes) == 984
    assert "Infiltrate" not in set(boxes["label"]) and "Infiltration" in set(boxes["label"])
    assert set(boxes["label"]) <= set(NIH_LABELS)
    first = boxes.iloc[0]
    assert first["image_id"] == "00013118_008.png" and first["label"] == "Atelectasis"
    assert first["x"] == pytest.approx(225.0847, abs=1e-3) and first["h"] == pytest.approx(79.1864, abs=1e-3)
    assert (boxes[["x", "y"]] >= 0).all().all() and (boxes["x"] + boxes["w"] <= 1024 + 1).all()
    present = boxes["image_id"].isin(read_nih(nih_sample)["image_id"])
    assert present.sum() == 37 and boxes.loc[present, "image_id"].nunique() == 32  # 37 boxes on 32 images


def test_nih_old_2017_columns_and_nested_archive_layout(tmp_path):
    csv = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
           "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
           "00000001_000.png,Cardiomegaly|Infiltrate,0,1,058Y,M,PA,2682,2749,0.143,0.143,\n"
           "00000002_000.png,No Finding,0,2,011M,F,AP,2500,2048,0.168,0.168,\n"
           "00000003_000.png,Hernia,0,3,081Y,F,PA,2582,2991,0.143,0.143,\n")
    (tmp_path / "Data_Entry_2017.csv").write_text(csv)
    _png(tmp_path / "images_001" / "images" / "00000001_000.png")
    _png(tmp_path / "images_002" / "images" / "00000002_000.png")
    report = IndexReport()
    df = build_index(tmp_path, report=report).set_index("image_id")
    assert detect_kind(tmp_path) == "nih"
    assert len(df) == 2 and report.n_missing == 1 and report.missing_examples == ["00000003_000.png"]
    assert df.loc["00000001_000.png", "Infiltration"] == 1 and df.loc["00000001_000.png", "age"] == 58
    assert df.loc["00000002_000.png", "age"] == pytest.approx(11 / 12)
    assert df.loc["00000002_000.png", list(NIH_LABELS)].sum() == 0


def test_kermany_index_parses_patients(kermany):
    report = IndexReport()
    df = read_folders(kermany, report=report)
    assert len(df) == 5216
    assert not report.warnings, report.warnings
    assert not df["patient_id"].str.startswith("img:").any()
    assert df["Pneumonia"].sum() == 3875 and (df["Pneumonia"] == 0).sum() == 1341
    normal = df[df["Pneumonia"] == 0]
    assert (normal[list(NIH_LABELS)] == 0).all().all()  # NORMAL: no finding at all
    sick = df[df["Pneumonia"] == 1]
    assert sick["Effusion"].isna().all()  # not graded by this dataset
    assert df["patient_id"].nunique() < len(df) / 1.5  # several images per patient


@pytest.mark.parametrize("name,patient", [
    ("person123_bacteria_456.jpeg", "person123"), ("person447_virus_921_1.jpeg", "person447"),
    ("IM-0001-0001.jpeg", "IM-0001"), ("IM-0429-0001-0002.jpeg", "IM-0429"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"), ("scan_77.jpeg", None)])
def test_patient_patterns(name, patient):
    assert patient_from_filename(name) == patient


def test_folders_unknown_names_are_one_patient_each_with_warning(tmp_path):
    _png(tmp_path / "train" / "NORMAL" / "a.png")
    _png(tmp_path / "test" / "PNEUMONIA" / "a.png")  # same file name in two splits: two images
    report = IndexReport()
    df = read_folders(tmp_path, report=report)
    assert len(df) == 2 and df["patient_id"].nunique() == 2
    assert report.warnings and "patient" in report.warnings[0]
    assert set(df["official_split"]) == {"train", "test"}


def test_generic_csv_uncertain_policies_and_aliases(tmp_path):
    for i in range(3):
        _png(tmp_path / "img" / f"patient{i:05d}" / "view1_frontal.png")
    pd.DataFrame({
        "Path": [f"img/patient{i:05d}/view1_frontal.png" for i in range(3)] + ["img/missing.png"],
        "Sex": ["Male", "Female", "Unknown", "Male"], "Age": [40, 50, 60, 70],
        "Pleural Effusion": [1.0, -1.0, None, 0.0], "Cardiomegaly": [0.0, 1.0, -1.0, 1.0],
    }).to_csv(tmp_path / "train.csv", index=False)
    for policy, expected in (("ignore", np.nan), ("positive", 1.0), ("negative", 0.0)):
        report = IndexReport()
        df = read_table_dataset(tmp_path / "train.csv", uncertain=policy, report=report)
        assert report.n_missing == 1 and len(df) == 3
        eff = df["Effusion"].to_numpy()
        assert eff[0] == 1.0 and np.isnan(eff[2])
        assert (np.isnan(eff[1]) if np.isnan(expected) else eff[1] == expected)
    assert df["patient_id"].tolist() == ["patient00000", "patient00001", "patient00002"]
    assert df["sex"].tolist()[:2] == ["M", "F"] and pd.isna(df["sex"].iloc[2])
    blank0 = read_table_dataset(tmp_path / "train.csv", blank="negative")
    assert blank0["Effusion"].iloc[2] == 0.0


def test_generic_csv_without_path_column_is_a_clear_error(tmp_path):
    (tmp_path / "x.csv").write_text("foo,Effusion\n1,0\n")
    with pytest.raises(ValueError, match="path column"):
        read_table_dataset(tmp_path / "x.csv")
