"""OOD gate: Mahalanobis statistics, image-statistics checks, and the Predictor's flag on obvious non-CXRs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from chestdx.inference import Predictor
from chestdx.inference.ood import OODStats, assess, colour_spread, fit_stats, image_checks, mahalanobis_sq, scores


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_fit_stats_threshold_and_roundtrip() -> None:
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.5, 3.0, 20))
    train = rng.multivariate_normal(np.ones(20), cov, 500)
    val = rng.multivariate_normal(np.ones(20), cov, 400)
    stats = fit_stats(train, val, quantile=0.99, normalize="none")
    inlier = scores(mahalanobis_sq(val, stats), stats)
    assert np.mean(inlier > 1) == pytest.approx(0.01, abs=0.006)  # ~1% of validation flagged by construction
    far = scores(mahalanobis_sq(np.ones((5, 20)) + 8.0, stats), stats)
    assert (far > 1).all()
    again = OODStats.from_dict(stats.to_dict())
    np.testing.assert_allclose(mahalanobis_sq(val[:5], again), mahalanobis_sq(val[:5], stats), rtol=1e-5)
    assert "precision" not in stats.to_dict(arrays=False)
    l2 = fit_stats(train, val)  # default: L2-normalized features (direction, not magnitude)
    assert l2.normalize == "l2" and OODStats.from_dict(l2.to_dict()).normalize == "l2"
    np.testing.assert_allclose(mahalanobis_sq(val[:3] * 7.0, l2), mahalanobis_sq(val[:3], l2), rtol=1e-9)


def test_image_checks() -> None:
    rng = np.random.default_rng(0)
    xray_like = rng.random((200, 180)).astype(np.float32)
    assert image_checks(xray_like, 0.0) == []
    assert "blank" in image_checks(np.full((100, 100), 0.5, np.float32))[0]
    assert "aspect" in image_checks(rng.random((50, 300)).astype(np.float32))[0]
    colour = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert colour_spread(_png(colour)) > 0.3
    assert "colour" in image_checks(xray_like, colour_spread(_png(colour)))[0]
    gray_rgb = np.repeat(rng.integers(0, 255, (64, 64, 1), dtype=np.uint8), 3, axis=2)
    assert colour_spread(_png(gray_rgb)) == 0.0
    assert colour_spread(b"\0" * 128 + b"DICM" + b"junk") is None
    res = assess(1.7, ["blank or nearly uniform image"])
    assert res.flag and "score 1.70" in res.warning and len(res.reasons) == 2
    assert not assess(0.4, []).flag and assess(0.4, []).warning is None


def test_predictor_flags_non_cxr(tiny_run: Path) -> None:
    pred = Predictor.from_run(tiny_run, gate=None)  # the OOD information alone (synthetic images: no gate)
    assert pred.ood is not None
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    phantom = Path(config["cache_root"]) / "phantom-v1" / "images"
    cxr = pred.predict(sorted(phantom.glob("*.png"))[:20])
    assert np.mean([p.ood_flag for p in cxr]) <= 0.2  # training-like images pass
    blank = pred.predict([np.zeros((128, 128), np.float32)])[0]
    assert blank.ood_flag and blank.warning
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    p, img = pred.predict_bytes(_png(photo), "photo.png")
    assert p.ood_flag and any("colour" in r for r in p.ood_reasons) and img.shape == (120, 160)
    assert "ood_score" in p.to_dict() and p.to_dict()["warning"]
