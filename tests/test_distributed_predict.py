"""Distributed batch prediction (Lightning Trainer.predict, DDP on 2 CPU processes): same rows as 1 process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import chestdx
from chestdx.serve.batch import predict_paths
from chestdx.serve.distributed import predict_distributed, shard_batches

pytestmark = pytest.mark.data


def test_shards_cover_every_index_once_in_whole_batches() -> None:
    for n, bs, world in ((200, 16, 2), (7, 3, 4), (0, 5, 2), (33, 8, 3)):
        shards = [shard_batches(n, bs, r, world) for r in range(world)]
        flat = sorted(i for s in shards for b in s for i in b)
        assert flat == list(range(n))
        assert [b for s in shards for b in s if len(b) != bs] in ([], [list(range(n - n % bs, n))])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, nih_sample: Path) -> list[str]:
    """198 NIH PNGs with 2 unreadable files among them (200 inputs)."""
    root = tmp_path_factory.mktemp("dist")
    files = [str(p) for p in sorted((nih_sample / "images").glob("*.png"))[:198]]
    (root / "cut.png").write_bytes(Path(files[0]).read_bytes()[:300])
    (root / "text.png").write_text("not an image")
    from PIL import Image  # a sideways CXR (the quality gate turns it back) and a photo-like non-CXR
    Image.open(files[1]).transpose(Image.Transpose.ROTATE_90).save(root / "sideways.png")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((300, 400)) * 255).astype(np.uint8)).save(root / "noise.png")
    return (files[:50] + [str(root / "cut.png")] + files[50:120] + [str(root / "text.png")] + files[120:197]
            + [str(root / "sideways.png"), str(root / "noise.png")])


def test_two_ranks_give_exactly_the_rows_of_one(tiny_run: Path, inputs: list[str], tmp_path: Path) -> None:
    one = predict_distributed(tiny_run, inputs, tmp_path / "one.csv", devices=1, batch_size=16, num_workers=1,
                              threads=1)
    two = predict_distributed(tiny_run, inputs, tmp_path / "two.csv", devices=2, batch_size=16, num_workers=1,
                              threads=1)
    assert one.read_text() == two.read_text()
    df = pd.read_csv(two, keep_default_na=False)
    assert df["path"].tolist() == inputs  # input order, no padding duplicates
    errors = df[df["error"] != ""]
    assert [Path(p).name for p in errors["path"]][:2] == ["cut.png", "text.png"]
    assert not Path(str(two) + ".parts").exists()
    # the probabilities are those of the plain single-process batch prediction
    plain = predict_paths(chestdx.load(tiny_run), inputs, batch_size=16)
    ref = pd.DataFrame(plain.rows)
    probs = [c for c in df.columns if c.startswith("prob_")]
    ok = (df["error"] == "").to_numpy()
    assert np.allclose(df.loc[ok, probs].astype(float).to_numpy(), ref.loc[ok, probs].astype(float).to_numpy(),
                       atol=1e-6)
    # the quality gate and the image checks saw the full-resolution decode, as in the single-process path
    ref = ref.astype(object).where(ref.notna(), "").astype(str)
    for col in ("error", "quality", "corrected", "findings", "warning"):
        assert df[col].astype(str).tolist() == ref[col].tolist(), col
    assert np.allclose(pd.to_numeric(df.loc[ok, "quality_prob"]), pd.to_numeric(ref.loc[ok, "quality_prob"]))
    assert df.loc[df["path"].str.endswith("sideways.png"), "corrected"].item() != ""


def test_default_split_shares_a_rank_s_cores_between_decoding_and_the_model() -> None:
    from chestdx.serve.distributed import default_split

    assert default_split(1) == (1, 1)  # never zero: at least one of each
    assert default_split(2) == (1, 1)  # the measured best on 2 cores (docs/benchmarks.md)
    assert default_split(16) == (8, 8)
    assert default_split(7) == (3, 4)
    assert default_split(16, "gpu") == (15, 1)
