"""Losses of the alignment library: one pure function per loss, the paper's equation in its docstring.

Sections:
  * Reward-model losses — pairwise losses on reward margins ``delta = r_A − r_B`` (this file, now).
  * Flow losses — flow matching, Flow-DPO, Flow-RWR (added with ``alignment.flow``).

Every reward loss returns the *per-pair* loss, shape of ``delta``; the caller reduces it with a mask
(``label_mask`` + ``masked_mean``) so that missing labels, or ties for a loss that cannot model them,
contribute nothing to the mean.

Labels everywhere: ``1`` = A better, ``0`` = tie, ``-1`` = B better (``LABEL_MISSING`` = no label).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from alignment.labels import LABEL_A_BETTER, LABEL_B_BETTER, LABEL_MISSING, LABEL_TIE  # noqa: F401 (re-exported)

# --------------------------------------------------------------------------------------------------
# Reward-model losses
# --------------------------------------------------------------------------------------------------


def label_mask(label: torch.Tensor, *, with_ties: bool = True) -> torch.Tensor:
    """Boolean mask of the pairs a loss should average over.

    ``True`` where ``label`` is 1 or −1, and also where it is 0 when ``with_ties``; everything else
    (``LABEL_MISSING``, or ties for plain Bradley–Terry) is excluded.
    """
    decided = (label == LABEL_A_BETTER) | (label == LABEL_B_BETTER)
    return decided | (label == LABEL_TIE) if with_ties else decided


def masked_mean(per_pair: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_pair`` over ``mask``; 0 (still attached to the graph) when the mask is empty."""
    mask = mask.to(per_pair.dtype)
    return (per_pair * mask).sum() / mask.sum().clamp_min(1.0)


def bt_ties_nll(delta: torch.Tensor, label: torch.Tensor, theta: float = 5.0) -> torch.Tensor:
    """Per-pair negative log-likelihood of Bradley–Terry with ties (Rao & Kupper, 1967).

    With ``delta`` = Δ = r_A − r_B and θ > 1 (paper: θ = 5)::

        P(A ≻ B) = σ(Δ − ln θ)
        P(B ≻ A) = σ(−Δ − ln θ)
        P(A = B) = 1 − P(A ≻ B) − P(B ≻ A) = (θ² − 1) · σ(Δ − ln θ) · σ(−Δ − ln θ)

    so the NLL is
        label  1:  −log σ(Δ − ln θ)
        label −1:  −log σ(−Δ − ln θ)
        label  0:  −log σ(Δ − ln θ) − log σ(−Δ − ln θ) − ln(θ² − 1)

    Computed with ``logsigmoid``, so it is finite and exact for any finite Δ. The tie NLL is
    minimal at Δ = 0, where it equals ln((1 + θ)² / (θ² − 1)) = ln((θ + 1)/(θ − 1)).
    Entries whose label is not 1, 0 or −1 get 0; mask them out with ``label_mask``.
    """
    if theta <= 1.0:
        raise ValueError(f"theta must be > 1 for a proper tie probability, got {theta}")
    log_theta = math.log(theta)
    log_p_a = F.logsigmoid(delta - log_theta)  # log P(A ≻ B)
    log_p_b = F.logsigmoid(-delta - log_theta)  # log P(B ≻ A)
    log_p_tie = log_p_a + log_p_b + math.log(theta * theta - 1.0)
    zero = torch.zeros_like(delta)
    nll = torch.where(label == LABEL_A_BETTER, -log_p_a, zero)
    nll = torch.where(label == LABEL_B_BETTER, -log_p_b, nll)
    return torch.where(label == LABEL_TIE, -log_p_tie, nll)


def bt_nll(delta: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-pair negative log-likelihood of plain Bradley–Terry (Bradley & Terry, 1952).

    P(A ≻ B) = σ(Δ), so the NLL is −log σ(y · Δ) with y = ±1.
    BT cannot express a tie: ties (and missing labels) get 0 and must be dropped by the caller
    (``label_mask(label, with_ties=False)``).
    """
    sign = label.to(delta.dtype)
    decided = (label == LABEL_A_BETTER) | (label == LABEL_B_BETTER)
    return torch.where(decided, -F.logsigmoid(sign * delta), torch.zeros_like(delta))


def regression_loss(delta: torch.Tensor, label: torch.Tensor, target_margin: float = 1.0) -> torch.Tensor:
    """Per-pair squared error of the reward margin against the label (the ablation's regression loss).

        L = ½ (Δ − m · y)²,   y ∈ {1, 0, −1}, m = ``target_margin``

    A tie asks for equal rewards; a preference asks for a margin of ``m``. Missing labels get 0.
    """
    target = label.to(delta.dtype) * target_margin
    valid = label_mask(label, with_ties=True)
    return torch.where(valid, 0.5 * (delta - target) ** 2, torch.zeros_like(delta))


REWARD_LOSSES: dict[str, tuple[Callable[..., torch.Tensor], bool]] = {
    "bt_ties": (bt_ties_nll, True),
    "bt": (bt_nll, False),
    "regression": (regression_loss, True),
}
"""name → (per-pair loss function, whether it trains on ties)."""


def reward_loss(delta: torch.Tensor, label: torch.Tensor, *, kind: str = "bt_ties", theta: float = 5.0) -> torch.Tensor:
    """Mean reward loss over the pairs the loss can use (see ``REWARD_LOSSES``)."""
    if kind not in REWARD_LOSSES:
        raise ValueError(f"unknown reward loss {kind!r}; choose one of {sorted(REWARD_LOSSES)}")
    loss_fn, with_ties = REWARD_LOSSES[kind]
    per_pair = loss_fn(delta, label, theta) if kind == "bt_ties" else loss_fn(delta, label)
    return masked_mean(per_pair, label_mask(label, with_ties=with_ties))


# --------------------------------------------------------------------------------------------------
# Flow losses (flow matching, Flow-DPO, Flow-RWR) — added with alignment.flow
# --------------------------------------------------------------------------------------------------
#
# Time convention (diffusers' FlowMatch schedulers): σ ∈ [0, 1] is the noise level, σ = 1 pure noise,
#     x_σ = (1 − σ) · x₀ + σ · ε,        target velocity  v = dx_σ/dσ = ε − x₀.
# "‖·‖²" below is the mean of the squared error over a sample's elements (as Diffusion-DPO's code does),
# so β does not depend on the video's size.


def flow_matching_error(velocity_pred: torch.Tensor, velocity_target: torch.Tensor) -> torch.Tensor:
    """Per-sample flow-matching error ‖v − v_θ(x_σ, σ, y)‖², the mean over every dim but the first: (B,)."""
    squared = (velocity_pred.float() - velocity_target.float()) ** 2
    return squared.flatten(1).mean(1)


def flow_matching_loss(velocity_pred: torch.Tensor, velocity_target: torch.Tensor) -> torch.Tensor:
    """Conditional flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2023):

        L = E_{σ, x₀, ε} ‖(ε − x₀) − v_θ(x_σ, σ, y)‖²,   x_σ = (1 − σ) x₀ + σ ε

    The mean over the batch of ``flow_matching_error``.
    """
    return flow_matching_error(velocity_pred, velocity_target).mean()


FLOW_DPO_BETA_SCHEDULES = ("constant", "time")


def flow_dpo_beta(sigma: torch.Tensor, beta: float, schedule: str = "constant") -> torch.Tensor:
    """β per sample: constant β (the paper's choice), or β_t = β (1 − t)² with t = σ.

    The time-dependent form is what Diffusion-DPO's ε-prediction objective becomes for a velocity model:
    ε − ε_θ = (1 − σ)(v − v_θ) when x_σ = (1 − σ) x₀ + σ ε, so its squared errors carry (1 − σ)². The paper
    found it reward-hacks (docs/ml/flow.md §6); it is here for the ablation.
    """
    if schedule == "constant":
        return torch.full_like(sigma, beta, dtype=torch.float32)
    if schedule == "time":
        return beta * (1.0 - sigma.float()) ** 2
    raise ValueError(f"beta schedule {schedule!r}: choose one of {', '.join(FLOW_DPO_BETA_SCHEDULES)}")


def flow_dpo_loss(
    policy_error_w: torch.Tensor,
    policy_error_l: torch.Tensor,
    reference_error_w: torch.Tensor,
    reference_error_l: torch.Tensor,
    beta: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow-DPO (Liu et al. 2025, "Improving Video Generation with Human Feedback", eq. for Flow-DPO):

        L = −log σ( −(β/2) · [ (‖v_w − v_θ(x_t^w)‖² − ‖v_w − v_ref(x_t^w)‖²)
                             − (‖v_l − v_θ(x_t^l)‖² − ‖v_l − v_ref(x_t^l)‖²) ] )

    with winner w and loser l noised at the same t with the same noise. Arguments are the per-sample
    errors ``flow_matching_error`` (B,) and β, a float or per-sample (B,) from ``flow_dpo_beta``.
    Returns ``(loss, logits)``: the mean loss, and the per-pair logits inside the sigmoid — positive
    when the policy improved on the winner more than on the loser (the implicit preference accuracy is
    ``(logits > 0).mean()``). When policy = reference the logits are 0 and the loss is ln 2.
    """
    winner_gain = policy_error_w - reference_error_w  # (B,) < 0 when the policy fits the winner better
    loser_gain = policy_error_l - reference_error_l
    logits = -0.5 * beta * (winner_gain - loser_gain)
    return -F.logsigmoid(logits).mean(), logits


RWR_MAX_EXPONENT = 30.0
"""r/τ is clamped here (e^30 ≈ 1e13) so a stray reward cannot overflow float32; standardised rewards never reach it
at τ ≥ 0.2 unless a reward lies 6 standard deviations out."""


def flow_rwr_weights(rewards: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Flow-RWR's sample weights, w_i = exp(r_i / τ), each from its own reward alone (no gradient).

    Not normalised over the batch: a softmax over each micro-batch made every weight 1 at a micro-batch of one
    (RWR became plain fine-tuning on every video, losers included) and made the weights depend on how a batch
    was split. The rewards are standardised over the whole training set before training instead
    (``alignment.flow.preference.standardised_rewards``), which fixes the scale τ acts on.
    """
    if temperature <= 0:
        raise ValueError(f"RWR temperature must be > 0, got {temperature}")
    return torch.exp((rewards.detach().float() / temperature).clamp(max=RWR_MAX_EXPONENT))


def flow_rwr_loss(
    velocity_pred: torch.Tensor, velocity_target: torch.Tensor, rewards: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Flow-RWR (reward-weighted regression for flow, Liu et al. 2025), the batch mean of

        w_i ‖(ε_i − x₀,i) − v_θ(x_σ,i, σ_i, y_i)‖²,   w_i = exp(r_i / τ)

    with rewards standardised over the training set upstream. A mean of per-sample terms: splitting a batch into
    equal micro-batches (gradient accumulation, several GPUs) leaves the loss and its gradient unchanged, and two
    samples with the same error and rewards +1 and −1 weigh e^{2/τ} apart at any batch size. Zero rewards give
    plain flow matching (``flow_matching_loss``).
    """
    weights = flow_rwr_weights(rewards, temperature).to(velocity_pred.device)
    return (weights * flow_matching_error(velocity_pred, velocity_target)).mean()
