"""Pixel cache: reuse, rebuild of changed files, crash safety, bad files; the Dataset over it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image

from chestdx.data.cache import PixelCache
from chestdx.data.dataset import AugmentConfig, CXRDataset
from chestdx.data.pipeline import cache_table
from chestdx.data.readers import build_index
from chestdx.data.transforms import to_uint8_square
from chestdx.io import read_image


def _images(folder, n=6, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_second_build_reads_from_cache_and_changed_files_are_rebuilt(tmp_path):
    paths = _images(tmp_path / "img")
    cache = PixelCache(tmp_path / "c", 32)
    first = cache.build(paths)
    assert (first.decoded, first.reused) == (6, 0)
    expected = to_uint8_square(read_image(paths[2]), 32)
    assert np.array_equal(cache.pixels[cache.slots([paths[2]])[0]], expected)
    again = PixelCache(tmp_path / "c", 32).build(paths)  # a new process/run
    assert (again.decoded, again.reused) == (0, 6)
    time.sleep(0.01)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(paths[2])
    cache = PixelCache(tmp_path / "c", 32)
    assert cache.lookup(paths[2]) is None
    changed = cache.build(paths)
    assert (changed.decoded, changed.reused) == (1, 5)
    assert cache.pixels[cache.slots([paths[2]])[0]].max() == 0
    assert PixelCache(tmp_path / "c", 64).lookup(paths[0]) is None  # sizes are separate stores


def test_torn_writes_are_ignored(tmp_path):
    paths = _images(tmp_path / "img")
    cache = PixelCache(tmp_path / "c", 32)
    cache.build(paths[:3])
    with open(cache.data_path, "ab") as fh:  # a kill after pixels were written, before the manifest line
        fh.write(b"\x07" * 500)
    with open(cache.manifest_path, "a") as fh:  # and a kill in the middle of a manifest line
        fh.write("3,12345")
    reopened = PixelCache(tmp_path / "c", 32)
    assert all(reopened.lookup(p) is not None for p in paths[:3])
    report = reopened.build(paths)
    assert (report.decoded, report.reused) == (3, 3)
    for p in paths:
        assert np.array_equal(reopened.pixels[reopened.slots([p])[0]], to_uint8_square(read_image(p), 32))


def test_killed_build_resumes_without_corruption(kermany, tmp_path):
    paths = build_index(kermany)["path"].tolist()[:3000]
    lst = tmp_path / "paths.txt"
    lst.write_text("\n".join(paths))
    code = ("import sys; from chestdx.data.cache import PixelCache; "
            "PixelCache(sys.argv[1], 64).build(open(sys.argv[2]).read().split(chr(10)), workers=1)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "c"), str(lst)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    manifest = tmp_path / "c" / "s64" / "manifest.csv"
    deadline = time.time() + 60
    while time.time() < deadline and (not manifest.exists() or manifest.stat().st_size < 20_000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = PixelCache(tmp_path / "c", 64)
    done = [p for p in paths if cache.lookup(p) is not None]
    assert 0 < len(done) < len(paths), "the kill should land mid-build"
    for p in done[-5:] + done[:2]:  # the last entries before the kill are intact
        assert np.array_equal(cache.pixels[cache.slots([p])[0]], to_uint8_square(read_image(p), 64))
    report = cache.build(paths)
    assert report.reused == len(done) and report.decoded == len(paths) - len(done) and not report.failures


def test_bad_files_are_skipped_and_listed(tmp_path):
    paths = _images(tmp_path / "img", n=4)
    bad = []
    for name, content in (("trunc.png", open(paths[0], "rb").read()[:60]), ("empty.png", b""),
                          ("text.png", b"hello, not an image")):
        (tmp_path / "img" / name).write_bytes(content)
        bad.append(str(tmp_path / "img" / name))
    df = pd.DataFrame({"path": paths + bad, "image_id": [os.path.basename(p) for p in paths + bad]})
    cache, kept, report = cache_table(df, 32, tmp_path / "c", show_progress=False)
    assert len(kept) == 4 and sorted(p for p, _ in report.failures) == sorted(bad)
    assert all(os.path.basename(p) in reason for p, reason in report.failures)


def test_dataset_augments_train_only_and_deterministically(tmp_path):
    paths = _images(tmp_path / "img", n=4, size=64)
    cache = PixelCache(tmp_path / "c", 64)
    cache.build(paths)
    labels = np.array([[1, np.nan]] * 4, np.float32)
    slots = cache.slots(paths)
    val = CXRDataset(cache.pixels, slots, labels)
    x, y, meta = val[1]
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32 and meta.shape == (0,)
    assert torch.allclose(x[0], torch.from_numpy(cache.pixels[slots[1]] / 255.0).float())
    assert y[0] == 1 and torch.isnan(y[1])
    train = CXRDataset(cache.pixels, slots, labels, augment=AugmentConfig(), seed=3)
    a = train[1][0]
    assert not torch.allclose(a, x) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, CXRDataset(cache.pixels, slots, labels, augment=AugmentConfig(), seed=3)[1][0])
    train.set_epoch(1)
    assert not torch.equal(a, train[1][0])


def test_process_workers_give_the_same_store_as_one_worker(tmp_path):
    paths = _images(tmp_path / "img", n=40, size=50)
    (tmp_path / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    paths.insert(17, str(tmp_path / "img" / "bad.png"))
    one = PixelCache(tmp_path / "c1", 32)
    two = PixelCache(tmp_path / "c2", 32)
    r1, r2 = one.build(paths, workers=1), two.build(paths, workers=2)
    assert (r1.decoded, r2.decoded) == (40, 40) and [p for p, _ in r1.failures] == [p for p, _ in r2.failures]
    assert one.data_path.read_bytes() == two.data_path.read_bytes()  # same slots, in input order
    assert one.manifest_path.read_text() == two.manifest_path.read_text()
    assert list(one.slots(paths[:17] + paths[18:])) == list(range(40))
