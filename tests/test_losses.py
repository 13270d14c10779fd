"""chestdx.train.losses: seed weights from training labels, masking of NaN labels, numerical safety."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chestdx.train.losses import (
    FocalLoss,
    MaskedBCE,
    WeightedBCE,
    build_loss,
    class_weights_from_labels,
)

NAN = float("nan")


def _softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def test_class_weights_from_training_labels():
    y = np.array([[1, 0, NAN, NAN],
                  [0, 0, 1, NAN],
                  [0, 0, NAN, NAN],
                  [NAN, 0, 0, NAN]], dtype=np.float32)
    w_pos, w_neg = class_weights_from_labels(y)
    # col 0: 1 pos of 3 known; col 1: no positive; col 2: 1 of 2; col 3: nothing known
    np.testing.assert_allclose(w_pos, [2 / 3, 1.0, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(w_neg, [1 / 3, 0.0, 0.5, 0.5], rtol=1e-6)
    assert w_pos.dtype == np.float32
    with pytest.raises(ValueError):
        class_weights_from_labels(np.zeros(3))


def test_weighted_bce_matches_hand_computation():
    train = np.array([[1, 0], [0, 0], [0, 1], [0, NAN]], dtype=np.float32)  # p = 1/4, 1/3
    loss_fn = build_loss("weighted_bce", train)
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    y = torch.tensor([[1.0, NAN], [0.0, 1.0]])
    w_pos, w_neg = [3 / 4, 2 / 3], [1 / 4, 1 / 3]
    terms = [w_pos[0] * _softplus(-2.0),  # (0,0): positive
             w_neg[0] * _softplus(0.5),   # (1,0): negative
             w_pos[1] * _softplus(-3.0)]  # (1,1): positive; (0,1) unknown: left out
    assert loss_fn(logits, y).item() == pytest.approx(sum(terms) / 3, rel=1e-6)


def test_masked_bce_equals_torch_bce_and_ignores_nan():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g) * 3
    y = (torch.rand(6, 4, generator=g) > 0.5).float()
    ref = F.binary_cross_entropy_with_logits(logits, y)
    assert MaskedBCE()(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)
    y_nan = y.clone()
    y_nan[0, :] = NAN
    y_nan[:, 3] = NAN
    ref = F.binary_cross_entropy_with_logits(logits[1:, :3], y[1:, :3])
    assert build_loss("bce")(logits, y_nan).item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["weighted_bce", "bce", "focal"])
def test_losses_are_finite_and_masked_gradients_zero(name):
    # train set: column 1 has zero positives -> w_pos = 1, w_neg = 0; column 2 never known
    train = np.array([[1, 0, NAN], [0, 0, NAN], [1, 0, NAN]], dtype=np.float32)
    loss_fn = build_loss(name, train)
    logits = torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4], [3.0, -2.0, 0.5]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0, NAN], [1.0, 0.0, NAN], [NAN, 0.0, NAN]])  # badly wrong, saturated logits
    loss = loss_fn(logits, y)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, 2] == 0).all() and logits.grad[2, 0] == 0
    # a batch whose labels are all unknown: 0, finite, zero gradient, still differentiable
    logits2 = torch.randn(4, 3, requires_grad=True)
    loss2 = loss_fn(logits2, torch.full((4, 3), NAN))
    loss2.backward()
    assert loss2.item() == 0.0 and (logits2.grad == 0).all()


def test_loss_of_correct_saturated_logits_is_zero():
    logits = torch.tensor([[1e4, -1e4]])
    y = torch.tensor([[1.0, 0.0]])
    for fn in (MaskedBCE(), FocalLoss(), WeightedBCE([0.5, 0.5], [0.5, 0.5])):
        assert fn(logits, y).item() == 0.0


def test_focal_loss_values():
    logits = torch.tensor([[2.0, -1.0, 0.3]])
    y = torch.tensor([[1.0, 1.0, NAN]])
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, y), MaskedBCE()(logits, y))
    p = [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))]
    expected = [(1 - p[0]) ** 2 * -math.log(p[0]), (1 - p[1]) ** 2 * -math.log(p[1])]
    assert FocalLoss(gamma=2.0)(logits, y).item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    # alpha weighs positives by alpha, negatives by 1 - alpha
    y2 = torch.tensor([[1.0, 0.0, NAN]])
    q = 1 / (1 + math.exp(1.0))  # p(y=1) = sigmoid(-1); for y=0: p_t = 1 - q
    expected2 = [0.25 * (1 - p[0]) ** 2 * -math.log(p[0]), 0.75 * q**2 * -math.log(1 - q)]
    assert FocalLoss(gamma=2.0, alpha=0.25)(logits, y2).item() == pytest.approx(sum(expected2) / 2, rel=1e-5)


def test_focal_small_gamma_gradient_finite():
    z = torch.tensor([[1e4, -1e4]], requires_grad=True)
    FocalLoss(gamma=0.5)(z, torch.tensor([[1.0, 0.0]])).backward()
    assert torch.isfinite(z.grad).all()


def test_build_loss_errors_and_devices():
    with pytest.raises(ValueError, match="training labels"):
        build_loss("weighted_bce")
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge")
    loss_fn = build_loss("weighted_bce", np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert {k for k, _ in loss_fn.named_buffers()} == {"w_pos", "w_neg"}  # follow .to(device)
    with pytest.raises(ValueError, match="weights for 2 labels"):
        loss_fn(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        loss_fn(torch.zeros(1, 2), torch.zeros(2, 2))
    # half-precision logits (mixed precision) are computed in float32
    out = loss_fn(torch.tensor([[30.0, -30.0]], dtype=torch.float16), torch.tensor([[0.0, 1.0]]))
    assert out.dtype == torch.float32 and torch.isfinite(out)
