"""NIH .tar.gz archives as a dataset source: index paths, cache identical to the extracted folder,
bad members reported, kill -9 mid-archive resumes to the same cache."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from chestdx.data.cache import PixelCache
from chestdx.data.index import IndexReport
from chestdx.data.pipeline import cache_table
from chestdx.data.readers import build_index
from chestdx.io.archive_member import member_path, split_member_path

pytestmark = pytest.mark.data
SIZE = 64
SIDE_FILES = ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt")


def _pack(archive: Path, files: list[Path], level: int = 1) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=level) as tar:
        for f in files:
            tar.add(f, arcname=f"images/{f.name}")  # the NIH layout: images_001.tar.gz holds images/*.png
    return archive


def _with_side_files(folder: Path, nih: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        os.symlink(nih / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, nih_sample: Path) -> Iterator[dict]:
    """The same 758 NIH images as an extracted folder and as 3 archives (plus a damaged copy)."""
    root = tmp_path_factory.mktemp("archives")
    saved = os.environ.get("CHESTDX_CACHE")
    os.environ["CHESTDX_CACHE"] = str(root / "cache")  # archive listings go to this test's cache root
    files = sorted((nih_sample / "images").glob("*.png"))
    plain = _with_side_files(root / "plain", nih_sample)
    (plain / "images").mkdir()
    for f in files:
        os.symlink(f, plain / "images" / f.name)
    packed = _with_side_files(root / "packed", nih_sample)
    thirds = np.array_split(np.arange(len(files)), 3)
    archives = [_pack(packed / f"images_{k + 1:03d}.tar.gz", [files[i] for i in idx]) for k, idx in enumerate(thirds)]
    folder_cache, folder_df, report = cache_table(build_index(plain), SIZE, root / "c-folder", show_progress=False,
                                                  workers=2)
    assert not report.failures
    yield {"root": root, "files": files, "plain": plain, "packed": packed, "archives": archives,
            "folder": {image_id: folder_cache.pixels[slot] for image_id, slot in
                       zip(folder_df["image_id"], folder_cache.slots(folder_df["path"].tolist()), strict=True)}}
    if saved is None:
        os.environ.pop("CHESTDX_CACHE", None)
    else:
        os.environ["CHESTDX_CACHE"] = saved


def _by_id(cache: PixelCache, df) -> dict[str, np.ndarray]:
    return {i: cache.pixels[s] for i, s in zip(df["image_id"], cache.slots(df["path"].tolist()), strict=True)}


def test_index_names_archive_members(dataset: dict) -> None:
    df = build_index(dataset["packed"])
    plain = build_index(dataset["plain"])
    assert len(df) == len(dataset["files"]) == len(plain)
    assert df["image_id"].tolist() == plain["image_id"].tolist()
    assert df.drop(columns="path").equals(plain.drop(columns="path"))
    first = dataset["archives"][0]
    row = df[df["image_id"] == dataset["files"][0].name].iloc[0]
    assert row["path"] == member_path(first, f"images/{dataset['files'][0].name}")
    assert split_member_path(row["path"]) == (str(first), f"images/{dataset['files'][0].name}")
    assert split_member_path(str(dataset["files"][0])) is None
    one = build_index(first)  # an archive path: its members only, with the CSV beside it
    two = build_index(dataset["archives"][1:])
    assert len(one) + len(two) == len(df) and set(one["image_id"]).isdisjoint(two["image_id"])


def test_archive_cache_is_pixel_identical_to_folder_cache(dataset: dict) -> None:
    df = build_index(dataset["packed"])
    cache, kept, report = cache_table(df, SIZE, dataset["root"] / "c-packed", show_progress=False, workers=2)
    assert report.decoded == len(df) and not report.failures and len(kept) == len(df)
    got = _by_id(cache, kept)
    assert got.keys() == dataset["folder"].keys()
    assert all(np.array_equal(got[k], dataset["folder"][k]) for k in got)
    again = PixelCache(dataset["root"] / "c-packed", SIZE).build(df["path"].tolist(), workers=2)
    assert (again.decoded, again.reused) == (0, len(df))  # reused: archive unchanged


def test_corrupt_member_and_truncated_archive_are_bad_files(dataset: dict, tmp_path: Path) -> None:
    folder = _with_side_files(tmp_path / "damaged", dataset["plain"])
    files = dataset["files"][:30]
    garbage = tmp_path / files[5].name
    garbage.write_bytes(b"not a png at all" * 100)  # a member with a valid tar entry and bad content
    good = _pack(folder / "images_001.tar.gz", files[:5] + [garbage] + files[6:10])
    whole = _pack(tmp_path / "whole.tar.gz", files[10:30], level=0)
    cut = folder / "images_002.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])  # a download cut at 60%
    index_report = IndexReport()
    df = build_index(folder, report=index_report)
    assert 10 < len(df) < 30
    assert any("images_002.tar.gz" in w and "damaged" in w for w in index_report.warnings), index_report.warnings
    cache, kept, report = cache_table(df, SIZE, tmp_path / "c", show_progress=False, workers=2)
    bad = {split_member_path(p)[1].split("/")[-1]: reason for p, reason in report.failures}
    assert files[5].name in bad and "images_001.tar.gz" in bad[files[5].name]
    cut_bad = [name for name, reason in bad.items() if "images_002" in reason]
    assert len(cut_bad) >= 1 and all("truncat" in bad[n] or "damaged" in bad[n] for n in cut_bad)
    assert len(kept) == len(df) - len(bad) and report.decoded == len(kept)
    got = _by_id(cache, kept)
    assert all(np.array_equal(v, dataset["folder"][k]) for k, v in got.items())
    assert good.is_file()


def _lock_free(lock: Path) -> bool:
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def test_kill_9_mid_archive_resumes_to_the_same_cache(dataset: dict, tmp_path: Path) -> None:
    df = build_index(dataset["packed"])
    paths = tmp_path / "paths.txt"
    paths.write_text("\n".join(df["path"]))
    root = tmp_path / "c"
    code = ("import sys; from chestdx.data.cache import PixelCache; "
            "PixelCache(sys.argv[1], int(sys.argv[3])).build(open(sys.argv[2]).read().split(chr(10)), workers=2)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), str(paths), str(SIZE)], start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    manifest = root / f"s{SIZE}" / "manifest.csv"
    third = len(df) // 3
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or manifest.read_text().count("\n") < third + 20):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its decoding workers must die with it
    proc.wait()
    try:
        deadline = time.time() + 15
        while time.time() < deadline and not _lock_free(root / f"s{SIZE}" / "lock"):
            time.sleep(0.1)
        assert _lock_free(root / f"s{SIZE}" / "lock"), "orphaned workers still hold the cache lock"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cache = PixelCache(root, SIZE)
    done = [p for p in df["path"] if cache.lookup(p) is not None]
    assert third < len(done) < len(df), "the kill should land inside the second archive"
    report = cache.build(df["path"].tolist(), workers=2)
    assert report.reused == len(done) and report.decoded == len(df) - len(done) and not report.failures
    got = _by_id(cache, df)
    assert all(np.array_equal(v, dataset["folder"][k]) for k, v in got.items())
    assert cache.pixels.shape[0] == len(df)  # no slot wasted by the kill


def test_any_reader_opens_an_archive_member(tmp_path: Path, nih_sample: Path) -> None:
    """Explain, the report gallery and predict read index rows through chestdx.io: members open directly."""
    import tarfile

    import pytest

    from chestdx.io import ImageReadError, read_image

    src = sorted((nih_sample / "images").glob("*.png"))[0]
    archive = tmp_path / "images_001.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=f"images/{src.name}")
    got = read_image(member_path(archive, f"images/{src.name}"))
    assert np.array_equal(got, read_image(src))
    with pytest.raises(ImageReadError, match="no such member"):
        read_image(member_path(archive, "images/absent.png"))
