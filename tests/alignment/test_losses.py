import math

import pytest
import torch

from alignment.losses import (
    LABEL_MISSING,
    bt_nll,
    bt_ties_nll,
    label_mask,
    masked_mean,
    regression_loss,
    reward_loss,
)

LN5 = math.log(5.0)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_bt_ties_hand_computed_values():
    delta = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    label = torch.tensor([1, 0, -1, 1, 0, -1])
    nll = bt_ties_nll(delta, label, theta=5.0)
    expected = [
        -math.log(sigmoid(-LN5)),  # = ln 6
        -math.log(24 * sigmoid(-LN5) ** 2),  # = ln(36/24) = ln 1.5
        -math.log(sigmoid(-LN5)),
        -math.log(sigmoid(1 - LN5)),
        -math.log(24 * sigmoid(1 - LN5) * sigmoid(-1 - LN5)),
        -math.log(sigmoid(-1 - LN5)),
    ]
    assert nll.tolist() == pytest.approx(expected, rel=1e-12)
    assert nll[0].item() == pytest.approx(math.log(6.0))
    assert nll[1].item() == pytest.approx(math.log(1.5))


def test_bt_ties_probabilities_sum_to_one():
    delta = torch.linspace(-6, 6, 25, dtype=torch.float64)
    total = sum(torch.exp(-bt_ties_nll(delta, torch.full_like(delta, lab, dtype=torch.long))) for lab in (1, 0, -1))
    assert torch.allclose(total, torch.ones_like(delta), atol=1e-12)


def test_bt_ties_symmetry_swapping_a_and_b():
    delta = torch.randn(50, dtype=torch.float64) * 3
    label = torch.randint(-1, 2, (50,))
    assert torch.allclose(bt_ties_nll(delta, label), bt_ties_nll(-delta, -label))


def test_bt_ties_limits_and_stability():
    big = torch.tensor([1e4, -1e4, 1e4, -1e4, 1e4, -1e4], dtype=torch.float32)
    label = torch.tensor([1, -1, -1, 1, 0, 0])
    nll = bt_ties_nll(big, label)
    assert torch.isfinite(nll).all()
    assert nll[0].item() == pytest.approx(0.0, abs=1e-6)  # A better, Δ → +∞: certain
    assert nll[1].item() == pytest.approx(0.0, abs=1e-6)
    assert nll[2].item() == pytest.approx(1e4 + LN5, rel=1e-4)  # wrong direction: linear growth
    assert nll[4].item() == pytest.approx(1e4 + LN5 - math.log(24), rel=1e-6)  # tie at Δ → ∞: linear growth


def test_bt_ties_tie_is_minimal_at_zero_and_theta_validated():
    delta = torch.linspace(-3, 3, 61, dtype=torch.float64)
    tie = bt_ties_nll(delta, torch.zeros_like(delta, dtype=torch.long), theta=3.0)
    assert tie.argmin().item() == 30
    assert tie.min().item() == pytest.approx(math.log(4 / 2))
    with pytest.raises(ValueError, match="theta"):
        bt_ties_nll(delta, torch.zeros_like(delta, dtype=torch.long), theta=1.0)


def test_bt_ties_gradient_direction():
    delta = torch.zeros(3, requires_grad=True)
    bt_ties_nll(delta, torch.tensor([1, -1, 0])).sum().backward()
    assert delta.grad[0] < 0 < delta.grad[1]  # descent raises Δ for A-better, lowers it for B-better
    assert delta.grad[2].item() == pytest.approx(0.0, abs=1e-7)


def test_bt_plain_values_and_ties_dropped():
    delta = torch.tensor([0.0, 2.0, 2.0, 5.0], dtype=torch.float64)
    label = torch.tensor([1, 1, -1, 0])
    nll = bt_nll(delta, label)
    assert nll.tolist() == pytest.approx([math.log(2), -math.log(sigmoid(2)), -math.log(sigmoid(-2)), 0.0])
    assert label_mask(label, with_ties=False).tolist() == [True, True, True, False]
    assert reward_loss(delta, label, kind="bt").item() == pytest.approx(nll[:3].mean().item())


def test_regression_loss_and_missing_labels():
    delta = torch.tensor([0.5, 0.5, 0.5, 9.0], dtype=torch.float64)
    label = torch.tensor([1, 0, -1, LABEL_MISSING])
    assert regression_loss(delta, label).tolist() == pytest.approx([0.125, 0.125, 1.125, 0.0])
    mask = label_mask(label)
    assert mask.tolist() == [True, True, True, False]
    per_pair = bt_ties_nll(delta, label)
    assert per_pair[3].item() == 0.0
    assert masked_mean(per_pair, mask).item() == pytest.approx(per_pair[:3].mean().item())


def test_masked_mean_of_empty_mask_is_zero_and_differentiable():
    delta = torch.ones(2, requires_grad=True)
    loss = reward_loss(delta, torch.tensor([0, 0]), kind="bt")
    loss.backward()
    assert loss.item() == 0.0 and delta.grad is not None
    with pytest.raises(ValueError, match="unknown reward loss"):
        reward_loss(delta, torch.tensor([0, 0]), kind="hinge")
