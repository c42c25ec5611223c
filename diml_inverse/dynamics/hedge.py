"""Hedge (Eq. H1-H2 of :mod:`mechgym.learners.hedge`): the scores are a causal cumulative sum of the payoffs.

``S(t+1) = q0 + sum_{s<=t} u(s)``; ``log pi = log((1 - eps) softmax(eta S) + eps / A)``. The sum never
forgets; ``q0`` can be learned.

Shapes: ``E`` episodes, ``T' = T - 1`` updates, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diml_inverse.dynamics.filters import as_scalar, check_payoffs, initial_state
from diml_inverse.dynamics.registry import next_action_log_probs, refuse_overrides
from mechgym.errors import ConfigurationError
from mechgym.learners import Hedge, Learner, logit_log_policy

__all__ = ["hedge_log_probs", "hedge_scores"]


def hedge_scores(payoffs: Tensor, q0: Tensor | float = 0.0) -> Tensor:
    """Cumulative scores after every update (Eq. H1): ``output[:, k] = q0 + sum_{s<=k} u(s)``.

    Args:
        payoffs: Counterfactual payoffs ``[E, T', N, A]``.
        q0: ``S(1)``, a scalar or broadcastable to ``[E, N, A]`` (differentiable).

    Returns:
        ``[E, T', N, A]``, the state after ``k + 1`` updates at ``[:, k]``.
    """
    check_payoffs(payoffs)
    n_episodes, _, n_agents, n_actions = payoffs.shape
    initial = initial_state(q0, n_episodes, n_agents, n_actions, payoffs)
    return initial[:, None] + torch.cumsum(payoffs, dim=1)


def hedge_log_probs(
    learner: Learner,
    payoffs: Tensor,
    next_actions: Tensor,
    *,
    own_actions: Tensor | None = None,
    q0: Tensor | float | None,
    alpha: Tensor | float | None,
    epsilon: Tensor | float | None,
    chunk_size: int | None,
) -> Tensor:
    """Eq. (H1)-(H2) for every round at once: ``[E, T', N]`` log-probabilities of the next actions.

    Args:
        learner: A :class:`~mechgym.learners.Hedge`.
        payoffs: Counterfactual payoffs ``u(1..T')``, ``[E, T', N, A]``.
        next_actions: Actions of rounds ``2..T``, ``[E, T', N]``.
        own_actions: Unused (full-information feedback).
        q0: ``S(1)`` overriding ``learner.q0`` (e.g. a learned ``[N, A]``), or ``None``.
        alpha: Must be ``None`` (Hedge has no ``alpha``).
        epsilon: Exploration overriding ``learner.epsilon``, or ``None``.
        chunk_size: Unused (the cumulative sum needs no chunking).

    Raises:
        ConfigurationError: another learner, ``alpha`` given, bad shapes.
    """
    if not isinstance(learner, Hedge):
        raise ConfigurationError(f"hedge_log_probs needs a Hedge learner; got {type(learner).__name__}")
    refuse_overrides(learner, alpha=alpha)
    scores = hedge_scores(payoffs, learner.q0 if q0 is None else q0)
    eps = as_scalar(learner.epsilon if epsilon is None else epsilon, "epsilon", payoffs)
    return next_action_log_probs(logit_log_policy(scores, learner.eta, eps), next_actions)
