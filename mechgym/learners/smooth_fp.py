"""Smooth fictitious play: a logit response to the empirical average of the counterfactual payoffs.

A fictitious player believes the others play their empirical distribution of past joint actions. Against
that belief action ``a`` earns on average ``(1/t) sum_{s<=t} u(a, a_-i(s))``, the mean counterfactual payoff
(paper Eq. 1), so with a prior of weight ``w0`` (pseudo-rounds in which every action paid the same, 0) the
belief and the smoothed best response are (Fudenberg & Kreps, 1993; Fudenberg & Levine, 1998)::

    U(t) = (sum_{s<t} u(., a_-i(s))) / (w0 + t - 1)                                   (F1)
    pi(t) = (1 - epsilon) softmax(beta U(t)) + epsilon / A                             (F2)

i.e. ``U(t+1) = U(t) + (u(t) - U(t)) / (w0 + t)``: logit-Q (Eq. 2) with the decreasing step ``1 / (w0 + t)``
instead of a constant ``alpha``. (F1) is linear in the payoffs (a cumulative mean), which gives the parallel
likelihood of :mod:`diml_inverse.dynamics`.

The step needs the round count, and a learner's state is one ``[..., A]`` tensor, so the state carries the
count in its mean over actions::

    x(t) = C(t) + n(t),   C(t) = sum_{s<t} (u(s) - mean_a u(s)),   n(t) = w0 + t - 1      (F3)

``C`` sums to zero over actions, so ``n(t) = mean_a x(t)`` and ``x - mean_a x = C``. ``C / n`` is the belief
(F1) minus its mean over actions, which gives the same policy (F2) because the softmax is shift-invariant.
The update is ``x(t+1) = x(t) + u(t) - mean_a u(t) + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mechgym.learners.base import Learner, check_hyperparameters, is_positive, register_learner
from mechgym.learners.logit_q import logit_log_policy, logit_policy


def smooth_fp_update(state: Tensor, counterfactual_payoffs: Tensor) -> Tensor:
    """Eq. (F3) one round on: ``x(t+1) = x(t) + u(t) - mean_a u(t) + 1``."""
    return state + (counterfactual_payoffs - counterfactual_payoffs.mean(-1, keepdim=True)) + 1.0


def smooth_fp_belief(state: Tensor) -> Tensor:
    """The centred belief ``U(t) - mean_a U(t) = C(t) / n(t)`` (Eq. F1) from the state ``x(t)`` (Eq. F3)."""
    count = state.mean(-1, keepdim=True)
    return (state - count) / count


@register_learner
@dataclass(frozen=True)
class SmoothFP(Learner):
    """Smooth fictitious play: logit response to the running mean of the counterfactual payoffs.

    The belief is the prior-weighted mean of the counterfactual payoffs so far (F1); actions are drawn from
    ``(1 - epsilon) softmax(beta U) + epsilon / A`` (F2). The state ``[..., A]`` is the centred cumulative
    payoffs plus the count ``w0 + t - 1`` in every entry (F3); :func:`smooth_fp_belief` reads the belief.

    Args:
        beta: Inverse temperature of the smoothed best response, > 0.
        epsilon: Uniform exploration in [0, 1].
        prior_weight: ``w0`` > 0, the weight (in rounds) of the prior belief that all actions pay the same.
            Round 1 is played uniformly (up to exploration); larger values make early beliefs move slower.
    """

    beta: float = 3.0
    epsilon: float = 0.0
    prior_weight: float = 1.0

    name: ClassVar[str] = "smooth_fp"

    def __post_init__(self) -> None:
        check_hyperparameters(
            self,
            (
                (is_positive(self.beta), f"beta must be a positive number; got {self.beta}"),
                (0.0 <= self.epsilon <= 1.0, f"epsilon must be in [0, 1]; got {self.epsilon}"),
                (
                    is_positive(self.prior_weight),
                    f"prior_weight must be a positive number (rounds of prior belief); got {self.prior_weight}",
                ),
            ),
        )

    def initial_state(
        self,
        batch_shape: tuple[int, ...],
        n_actions: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        # C(1) = 0 and n(1) = w0 (Eq. F3)
        return torch.full((*batch_shape, n_actions), self.prior_weight, device=device, dtype=dtype)

    def log_policy(self, state: Tensor) -> Tensor:
        return logit_log_policy(smooth_fp_belief(state), self.beta, self.epsilon)

    def policy(self, state: Tensor) -> Tensor:
        return logit_policy(smooth_fp_belief(state), self.beta, self.epsilon)

    def update(self, state: Tensor, counterfactual_payoffs: Tensor, actions: Tensor) -> Tensor:
        return smooth_fp_update(state, counterfactual_payoffs)

    def apply_shift(self, alpha_factor: float, beta_factor: float, epsilon_factor: float) -> Learner:
        """The counterfactual-shift learner of the cfkl metric (the paper's factors; epsilon <= 0.5).

        The belief's step ``1 / (w0 + t)`` plays logit-Q's ``alpha``: slowing learning by ``alpha_factor``
        divides it at round 1, i.e. ``prior_weight / alpha_factor``; ``beta`` and ``epsilon`` scale as for logit-Q.
        """
        return self.replace(
            beta=round(self.beta * beta_factor, 12),
            epsilon=round(min(0.5, self.epsilon * epsilon_factor), 12),
            prior_weight=round(self.prior_weight / alpha_factor, 12),
        )
