"""Hedge (multiplicative weights) with full-information counterfactual feedback.

Each agent accumulates the counterfactual payoff of every action (paper Eq. 1) and plays in proportion
to the exponentiated sum (Freund & Schapire, 1997)::

    S(1) = q0,    S(t+1) = S(t) + u(., a_-i(t))                                   (H1)
    pi(t) = (1 - epsilon) softmax(eta S(t)) + epsilon / A                         (H2)

(H2) with ``epsilon = 0`` is the multiplicative-weights rule ``w_a(t+1) = w_a(t) exp(eta u_a(t))``,
``pi(t) = w(t) / sum_a w_a(t)``, written in log space so that it never overflows. The state is linear in the
payoffs (a cumulative sum), which gives the parallel likelihood of :mod:`diml_inverse.dynamics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from mechgym.learners.base import Learner, check_hyperparameters, is_positive, register_learner
from mechgym.learners.logit_q import logit_log_policy, logit_policy


def hedge_update(cumulative: Tensor, counterfactual_payoffs: Tensor) -> Tensor:
    """Eq. (H1): ``S(t+1) = S(t) + u(., a_-i(t))``."""
    return cumulative + counterfactual_payoffs


@register_learner
@dataclass(frozen=True)
class Hedge(Learner):
    """Hedge / multiplicative weights: cumulative counterfactual payoffs and an exponential-weights policy.

    ``S(1) = q0``; after each round ``S <- S + u(., a_-i)`` for every action (H1); actions are drawn from
    ``(1 - epsilon) softmax(eta S) + epsilon / A`` (H2). The state ``[..., A]`` is ``S``.

    Args:
        eta: Learning rate of the exponential weights, > 0. After ``t`` rounds the policy is a logit
            response with inverse temperature ``eta * t`` to the average payoff, so ``eta`` should be of the
            order of ``1 / (T * payoff scale)`` to keep exploring over ``T`` rounds.
        epsilon: Uniform exploration mixed into the policy, in [0, 1] (0 is plain Hedge).
        q0: Initial cumulative score of every action. A constant does not change play (the softmax is
            shift-invariant); a per-action ``Q(1)`` learned by :func:`diml_inverse.fit` (``learn_q0``) does.
    """

    eta: float = 0.1
    epsilon: float = 0.0
    q0: float = 0.0

    name: ClassVar[str] = "hedge"

    def __post_init__(self) -> None:
        check_hyperparameters(
            self,
            (
                (is_positive(self.eta), f"eta must be a positive number; got {self.eta}"),
                (0.0 <= self.epsilon <= 1.0, f"epsilon must be in [0, 1]; got {self.epsilon}"),
                (math.isfinite(self.q0), f"q0 must be finite; got {self.q0}"),
            ),
        )

    def log_policy(self, state: Tensor) -> Tensor:
        return logit_log_policy(state, self.eta, self.epsilon)

    def policy(self, state: Tensor) -> Tensor:
        return logit_policy(state, self.eta, self.epsilon)

    def update(self, state: Tensor, counterfactual_payoffs: Tensor, actions: Tensor) -> Tensor:
        return hedge_update(state, counterfactual_payoffs)

    def apply_shift(self, alpha_factor: float, beta_factor: float, epsilon_factor: float) -> Learner:
        """The counterfactual-shift learner of the cfkl metric (the paper's factors; epsilon <= 0.5).

        ``eta`` is both Hedge's learning speed and its inverse temperature, so it takes both factors:
        ``eta * alpha_factor * beta_factor``.
        """
        return self.replace(
            eta=round(self.eta * alpha_factor * beta_factor, 12),
            epsilon=round(min(0.5, self.epsilon * epsilon_factor), 12),
        )
