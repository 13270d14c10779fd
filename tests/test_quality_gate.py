"""The input quality gate shipped as package data: loading, decisions, corrections, real CXRs, non-CXRs, no torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from chestdx.data.transforms import to_uint8_square
from chestdx.inference.quality import ACTIONS, CARD_FORMATS, CLASSES, QualityGate, QualityResult, decide

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def gate() -> QualityGate:
    return QualityGate.default()


def _result(corrected: str | None, action: str = "corrected") -> QualityResult:
    return QualityResult(verdict=corrected or "frontal", probs={c: 0.0 for c in CLASSES}, prob=0.99, action=action,
                         corrected=corrected, note=None)


def test_default_loads_package_data(gate: QualityGate) -> None:
    assets = resources.files("chestdx.inference") / "assets"
    card = json.loads((assets / "quality_gate.json").read_text())
    assert card["classes"] == list(CLASSES) and gate.size == card["input_size"] == 128
    assert hashlib.sha256((assets / "quality_gate.onnx").read_bytes()).hexdigest() == card["onnx_sha256"]
    assert (assets / "quality_gate.onnx").stat().st_size < 5_000_000  # truncated Lite0 trunk + head, fp32
    assert gate.version == "3" and card["format"] == "chestdx-quality-gate/3"
    x = np.zeros((2, 1, gate.size, gate.size), np.float32)  # the graph contract: image (B,1,S,S) -> (B,6)
    assert gate.session.run(None, {"image": x})[0].shape == (2, len(CLASSES))
    assert all(0.5 <= gate.thresholds[k] < 1 for k in ("ok", "correct", "refuse"))
    assert card["format"] in CARD_FORMATS
    assert QualityGate.default() is gate  # loaded once


def test_older_card_format_loads_and_bad_cards_fail() -> None:
    """chestdx-quality-gate/1 and /2 cards still load (same reading: input size from the card); unknown formats
    and missing thresholds fail."""
    assets = resources.files("chestdx.inference") / "assets"
    data = (assets / "quality_gate.onnx").read_bytes()
    card = json.loads((assets / "quality_gate.json").read_text())
    for fmt in ("chestdx-quality-gate/1", "chestdx-quality-gate/2"):
        old = dict(card, format=fmt, thresholds={"ok": 0.5, "correct": 0.5, "refuse": 0.85})
        g = QualityGate(data, old)
        assert g.thresholds["refuse"] == 0.85 and g.assess(np.zeros((40, 40))).action in ACTIONS
    with pytest.raises(ValueError, match="card format"):
        QualityGate(data, dict(card, format="chestdx-quality-gate/9"))
    with pytest.raises(ValueError, match="missing"):
        QualityGate(data, dict(card, thresholds={"ok": 0.5}))


def test_mirror_averaging_is_in_the_graph(gate: QualityGate) -> None:
    """With test-time mirror averaging, the left-right mirror of any image gets the same probabilities with
    rot90 and rot270 swapped (a mirrored rot90 CXR is a rot270 one); without it, the card must say so."""
    if not gate.card.get("test_time_mirror"):
        pytest.skip("gate exported without test-time mirror averaging")
    u8 = (np.random.default_rng(3).random((4, gate.size, gate.size)) * 255).astype(np.uint8)
    p, q = gate.probs_u8(u8), gate.probs_u8(np.ascontiguousarray(u8[:, :, ::-1]))
    assert np.abs(q[:, [0, 3, 2, 1, 4, 5]] - p).max() < 1e-5


def test_decide_rules() -> None:
    thr = {"ok": 0.6, "correct": 0.9, "refuse": 0.8}
    probs = np.array([[0.9, 0.02, 0.02, 0.02, 0.02, 0.02],   # ok
                      [0.55, 0.45, 0, 0, 0, 0],              # frontal but not confident -> uncertain
                      [0.02, 0.0, 0.93, 0.0, 0.0, 0.05],     # rot180 confident -> corrected
                      [0.2, 0.0, 0.0, 0.0, 0.65, 0.15],      # inverted 0.65/0.85 = 0.76 given a CXR -> uncertain
                      [0.05, 0, 0, 0, 0.1, 0.85],            # not_cxr -> refused
                      [0.25, 0, 0, 0, 0, 0.75],              # not_cxr below 0.8, frontal 0.25 -> uncertain
                      [0.0, 0.3, 0.0, 0.0, 0.0, 0.7]])       # probably not a CXR, but clearly rot90 if it is one
    verdict, actions = decide(probs, thr)
    assert [CLASSES[v] for v in verdict] == ["frontal", "frontal", "rot180", "inverted", "not_cxr", "not_cxr",
                                             "rot90"]
    assert actions == ["ok", "uncertain", "corrected", "uncertain", "refused", "uncertain", "corrected"]


def test_correct_undoes_np_rot90_and_inversion() -> None:
    img = np.random.default_rng(0).random((30, 47)).astype(np.float32)
    for k, name in ((1, "rot90"), (2, "rot180"), (3, "rot270")):
        restored = QualityGate.correct(np.rot90(img, k), _result(name))
        assert restored.shape == img.shape and np.array_equal(restored, img)
    inv = QualityGate.correct(1 - img, _result("inverted"))
    assert inv.dtype == img.dtype and np.abs(inv - img).max() < 1e-6
    assert np.array_equal(to_uint8_square(inv, 64), to_uint8_square(img, 64))
    assert QualityGate.correct(img, _result(None, "ok")) is img
    assert QualityGate.correct(img, _result(None, "uncertain")) is img


def test_any_size_and_result_fields(gate: QualityGate) -> None:
    rng = np.random.default_rng(1)
    imgs = [rng.random((37, 91)).astype(np.float32), rng.random((900, 300)), np.zeros((64, 64), np.float32)]
    batch = gate.assess_batch(imgs, batch_size=2)
    for img, r in zip(imgs, batch, strict=True):
        one = gate.assess(img)
        assert one.verdict == r.verdict and abs(one.prob - r.prob) < 1e-6
        assert set(r.probs) == set(CLASSES) and abs(sum(r.probs.values()) - 1) < 1e-5
        assert r.action in ACTIONS and r.prob == pytest.approx(r.probs[r.verdict])
        assert set(r.to_dict()) == {"verdict", "probs", "prob", "action", "corrected", "note"}
    with pytest.raises(ValueError, match="2-D"):
        gate.assess(np.zeros((8, 8, 3)))


def _text_page(rng: np.random.Generator) -> np.ndarray:
    im = Image.new("L", (400, 520), 245)
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(14)
    for y in range(10, 500, 20):
        d.text((12, y), " ".join(rng.choice(["lorem", "ipsum", "dolor", "report", "42", "signed"], 6)), fill=20,
               font=font)
    return np.asarray(im, np.float32) / 255


def test_synthetic_non_cxr_refused(gate: QualityGate) -> None:
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:256, 0:256] / 256
    imgs = [rng.random((256, 320)).astype(np.float32) for _ in range(3)] + [_text_page(rng) for _ in range(3)]
    imgs += [(xx * 0.8 + yy * 0.2).astype(np.float32), np.full((200, 200), 0.5, np.float32)]
    results = gate.assess_batch(imgs)
    refused = [r.action == "refused" for r in results]
    assert sum(refused) >= len(imgs) - 1, [(r.verdict, round(r.prob, 3), r.action) for r in results]
    assert not any(r.action == "ok" for r in results)
    assert all("refused" in r.note for r in results if r.action == "refused")


@pytest.mark.data
def test_real_cxrs_detected_and_restored(gate: QualityGate, nih_sample: Path, kermany: Path) -> None:
    """Held-out (test-split) NIH and Kermany CXRs named in the card: upright passes, each rotation/inversion
    is detected and corrected back to the exact original array."""
    from chestdx.io import read_image

    names = gate.card["test_examples"]
    root = nih_sample.parent
    imgs = [read_image(root / n) for n in names]
    assert len(imgs) >= 12
    up = gate.assess_batch(imgs)
    assert sum(r.action == "ok" for r in up) >= len(imgs) - 1
    assert not any(r.action in ("refused", "corrected") for r in up)
    for k, name in ((1, "rot90"), (2, "rot180"), (3, "rot270"), (0, "inverted")):
        variants = [np.rot90(img, k) if k else (1 - img) for img in imgs]
        res = gate.assess_batch(variants)
        right = [r.action == "corrected" and r.corrected == name for r in res]
        assert sum(right) >= len(imgs) - 1, (name, [(r.verdict, round(r.prob, 3), r.action) for r in res])
        assert not any(r.action == "ok" for r in res)
        for img, var, r, ok in zip(imgs, variants, res, right, strict=True):
            if ok:
                back = gate.correct(var, r)
                assert back.shape == img.shape
                if k:
                    assert np.array_equal(back, img)
                else:
                    assert np.abs(back - img).max() < 1e-6
                assert r.note and ("turned back" in r.note or "inverted back" in r.note)


def test_note_wording_matches_np_rot90() -> None:
    """np.rot90(img, 1) turns counter-clockwise: the note must say so and that it was turned back clockwise."""
    from chestdx.inference.quality import _note

    n90, n270 = _note("rot90", 0.99, "corrected"), _note("rot270", 0.99, "corrected")
    assert "rotated 90 degrees counter-clockwise" in n90 and "turned back 90 degrees clockwise" in n90
    assert "rotated 90 degrees clockwise" in n270 and "turned back 90 degrees counter-clockwise" in n270
    assert "refused" in _note("not_cxr", 0.99, "refused") and _note("frontal", 0.99, "ok") is None
    assert "uncertain" in _note("rot180", 0.4, "uncertain")
    assert "may not be a chest X-ray" in _note("rot90", 0.3, "corrected", 0.7)


def test_imports_and_runs_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from chestdx.inference.quality import QualityGate\n"
            "r = QualityGate.default().assess(np.random.default_rng(0).random((100, 80)))\n"
            "assert r.action in ('ok', 'corrected', 'refused', 'uncertain')\n"
            "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m])\n"
            "print('ok')\n")
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.data
def test_fast_preprocess_matches_shared_resize(gate: QualityGate, nih_fullres: Path) -> None:
    """Large images are block-averaged before to_uint8_square: a few grey levels at most from the direct resize
    (mean < 0.5) and the same verdict with probabilities within 0.01."""
    from chestdx.io import read_image

    for path in sorted((nih_fullres / "images").glob("*.png"))[:4]:
        img = read_image(path)
        fast, direct = gate.preprocess(img), to_uint8_square(img, gate.size)
        diff = np.abs(fast.astype(int) - direct.astype(int))
        assert diff.max() <= 8 and diff.mean() < 0.5
        p_fast, p_direct = gate.probs_u8(fast[None]), gate.probs_u8(direct[None])
        assert p_fast.argmax() == p_direct.argmax() and np.abs(p_fast - p_direct).max() < 0.01


def test_gate_and_image_preparer_pickle_for_worker_processes() -> None:
    """Spawned DataLoader workers receive the ImagePreparer pickled: the gate rebuilds its onnxruntime session
    from its ONNX bytes and gives the same verdicts (forked workers rebuild it once via ``fresh``)."""
    import pickle

    from chestdx.inference.prepare import ImagePreparer

    gate = QualityGate.default()
    img = np.rot90(np.linspace(0, 1, 96 * 80, dtype=np.float32).reshape(96, 80), 1)
    twin = pickle.loads(pickle.dumps(gate))
    assert twin.session is not gate.session
    assert twin.assess(img).probs == pytest.approx(gate.assess(img).probs, abs=1e-6)
    assert gate.fresh(threads=1).assess(img).probs == pytest.approx(gate.assess(img).probs, abs=1e-6)
    prep = ImagePreparer(32, gate)
    copy = pickle.loads(pickle.dumps(prep))
    (p1, x1), (p2, x2) = prep.prepare(img), copy.prepare(img)
    assert (p1.quality, p1.corrected, p1.error) == (p2.quality, p2.corrected, p2.error)
    assert (x1 is None and x2 is None) or np.array_equal(x1, x2)


def test_undo_turns_each_correctable_class_back() -> None:
    from chestdx.inference.quality import undo

    img = np.random.default_rng(3).random((12, 20)).astype(np.float32)
    for k in (1, 2, 3):
        assert np.array_equal(undo(np.rot90(img, k), f"rot{90 * k}"), img)
    np.testing.assert_allclose(undo(1 - img, "inverted"), img, atol=1e-7)
    with pytest.raises(ValueError, match="'frontal': not a correctable"):
        undo(img, "frontal")
