"""Logit-Q learning with full-information counterfactual feedback (paper Eq. 2-3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mechgym.learners.base import Learner, check_hyperparameters, is_positive, register_learner


def logit_q_update(q: Tensor, counterfactual_payoffs: Tensor, alpha: float | Tensor) -> Tensor:
    """Eq. (2): ``Q(t+1) = (1 - alpha) Q(t) + alpha u(., a_-i(t))``."""
    return (1.0 - alpha) * q + alpha * counterfactual_payoffs


def logit_log_policy(q: Tensor, beta: float | Tensor, epsilon: float | Tensor) -> Tensor:
    """Log of Eq. (3): ``pi = (1 - eps) softmax(beta Q) + eps / A``, computed stably in log space.

    Differentiable in ``epsilon`` on ``[0, 1)``, ``epsilon = 0`` included, where ``d log pi / d eps = (1/A - p) / p``
    is finite (the plain ``logaddexp`` of ``log(eps / A)`` would give ``0 * inf``). ``fit`` learns ``epsilon``
    through a sigmoid, which never reaches 1.
    """
    logits = beta * q
    log_softmax = logits - logits.logsumexp(-1, keepdim=True)  # faster than torch.log_softmax for small A
    return explore_log_policy(log_softmax, epsilon, q.shape[-1])


def explore_log_policy(log_softmax: Tensor, epsilon: float | Tensor, n_actions: int) -> Tensor:
    """``log((1 - eps) exp(log_softmax) + eps / A)``, element by element: Eq. (3)'s exploration in log space.

    :func:`logit_log_policy` applies it to every action; since it acts on each entry alone, a likelihood may
    apply it to the log-softmax of the played actions only (the same values). Differentiable in ``epsilon``
    on ``[0, 1)``, ``epsilon = 0`` included (see :func:`logit_log_policy`).

    Args:
        log_softmax: ``log softmax(beta Q)`` at any entries, any shape.
        epsilon: Uniform exploration in ``[0, 1]``, a float or a one-element tensor.
        n_actions: ``A``.
    """
    like = log_softmax
    if not isinstance(epsilon, Tensor) and 0.0 < epsilon < 1.0:  # a constant: its logarithms as Python floats
        explore = torch.full((), math.log(epsilon / n_actions), dtype=like.dtype, device=like.device)
        return torch.logaddexp(log_softmax + math.log1p(-epsilon), explore)
    epsilon = torch.as_tensor(epsilon, dtype=like.dtype, device=like.device)
    greedy = torch.log1p(-epsilon) + log_softmax
    if not epsilon.requires_grad:  # the fast path: exact values, no gradient in epsilon needed
        return torch.logaddexp(greedy, torch.log(epsilon / n_actions).expand_as(greedy))
    # log pi = greedy + log1p(r) with r = (eps / A) / ((1 - eps) p), where r <= 1 (no log of eps); else
    # log(eps / A) + log1p(1 / r), where eps > 0. The unused branch of each entry gets safe inputs, so that
    # no 0 * inf reaches the gradient.
    largest_exponent = math.log(torch.finfo(greedy.dtype).max) - 1.0  # exp() of anything below overflows
    ratio = (epsilon / n_actions) * torch.exp(-greedy.clamp(min=-largest_exponent))
    near_greedy = ratio <= 1.0
    from_greedy = greedy + torch.log1p(torch.where(near_greedy, ratio, 0.0))
    explore = torch.log(torch.where(near_greedy, 1.0, epsilon) / n_actions)
    from_explore = explore + torch.log1p(torch.exp(torch.where(near_greedy, -1.0, greedy - explore)))
    return torch.where(near_greedy, from_greedy, from_explore)


def logit_policy(q: Tensor, beta: float | Tensor, epsilon: float | Tensor) -> Tensor:
    """Eq. (3) as probabilities."""
    return (1.0 - epsilon) * torch.softmax(beta * q, dim=-1) + epsilon / q.shape[-1]


@dataclass(frozen=True)
class LogitChoiceLearner(Learner):
    """Scores ``Q`` with ``Q(1) = q0`` and the logit policy of Eq. (3); subclasses define how ``Q`` moves.

    Args:
        alpha: Learning rate in (0, 1].
        beta: Inverse temperature, > 0.
        epsilon: Uniform exploration in [0, 1].
        q0: Initial score of every action.
    """

    alpha: float = 0.25
    beta: float = 3.0
    epsilon: float = 0.06
    q0: float = 0.0

    def __post_init__(self) -> None:
        check_hyperparameters(
            self,
            (
                (0.0 < self.alpha <= 1.0, f"alpha must be in (0, 1]; got {self.alpha}"),
                (is_positive(self.beta), f"beta must be a positive number; got {self.beta}"),
                (0.0 <= self.epsilon <= 1.0, f"epsilon must be in [0, 1]; got {self.epsilon}"),
                (math.isfinite(self.q0), f"q0 must be finite; got {self.q0}"),
            ),
        )

    def log_policy(self, state: Tensor) -> Tensor:
        return logit_log_policy(state, self.beta, self.epsilon)

    def policy(self, state: Tensor) -> Tensor:
        return logit_policy(state, self.beta, self.epsilon)

    def apply_shift(self, alpha_factor: float, beta_factor: float, epsilon_factor: float) -> Learner:
        """The counterfactual-shift learner of the cfkl metric (defaults: the paper's factors; epsilon <= 0.5)."""
        return self.replace(
            alpha=round(min(1.0, self.alpha * alpha_factor), 12),
            beta=round(self.beta * beta_factor, 12),
            epsilon=round(min(0.5, self.epsilon * epsilon_factor), 12),
        )


@register_learner
@dataclass(frozen=True)
class LogitQ(LogitChoiceLearner):
    """Logit-Q learner: exponentially weighted counterfactual payoffs and a logit policy with exploration.

    ``Q(1) = q0``; after each round ``Q <- (1 - alpha) Q + alpha u(., a_-i)`` for every action (Eq. 2);
    actions are drawn from ``(1 - epsilon) softmax(beta Q) + epsilon / A`` (Eq. 3).

    Args:
        alpha: Learning rate in (0, 1].
        beta: Inverse temperature, > 0.
        epsilon: Uniform exploration in [0, 1].
        q0: Initial score of every action.
    """

    name: ClassVar[str] = "logit_q"

    def update(self, state: Tensor, counterfactual_payoffs: Tensor, actions: Tensor) -> Tensor:
        return logit_q_update(state, counterfactual_payoffs, self.alpha)
