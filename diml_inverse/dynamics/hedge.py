"""Hedge (Eq. H1-H2 of :mod:`mechgym.learners.hedge`): the scores are a causal cumulative sum of the payoffs.

``S(t+1) = q0 + sum_{s<=t} u(s)``; ``log pi = log((1 - eps) softmax(eta S) + eps / A)``. The sum never
forgets; ``q0`` can be learned.

Shapes: ``E`` episodes, ``T' = T - 1`` updates, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diml_inverse.dynamics.filters import as_scalar, check_payoffs, initial_state
from diml_inverse.dynamics.registry import Unroll
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


def hedge_log_probs(learner: Learner, unroll: Unroll) -> Tensor:
    """Eq. (H1)-(H2) for every round at once: ``[E, T', N]`` log-probabilities of the next actions.

    Overrides ``q0`` (``S(1)``, e.g. a learned ``[N, A]``) and ``epsilon`` replace the learner's; Hedge has no
    ``alpha``. ``unroll.own_actions`` and ``unroll.chunk_size`` are unused (full information, no chunks).

    Args:
        learner: A :class:`~mechgym.learners.Hedge`.
        unroll: The traces and overrides (:class:`~diml_inverse.dynamics.Unroll`).

    Raises:
        ConfigurationError: another learner, ``alpha`` given, bad shapes.
    """
    if not isinstance(learner, Hedge):
        raise ConfigurationError(f"hedge_log_probs needs a Hedge learner; got {type(learner).__name__}")
    unroll.refuse(learner, "alpha")
    scores = hedge_scores(unroll.payoffs, unroll.value("q0", learner.q0))
    eps = as_scalar(unroll.value("epsilon", learner.epsilon), "epsilon", unroll.payoffs)
    return unroll.log_probs_of(logit_log_policy(scores, learner.eta, eps))
