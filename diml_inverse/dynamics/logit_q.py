"""Logit-Q (paper Eq. 2-3): the scores are an exponential filter of the counterfactual payoffs.

``Q(t+1) = (1 - alpha) Q(t) + alpha u(t)`` is :func:`~diml_inverse.dynamics.filters.counterfactual_scores`;
the policy is the logit response of Eq. (3) with exploration ``epsilon``. The state forgets exponentially,
at rate ``alpha``, and ``q0``, ``alpha`` and ``epsilon`` can all be learned.

Shapes: ``E`` episodes, ``T' = T - 1`` updates, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

from torch import Tensor

from diml_inverse.dynamics.filters import as_scalar, counterfactual_scores
from diml_inverse.dynamics.registry import next_action_log_probs
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner, LogitQ, logit_log_policy

__all__ = ["logit_q_log_probs"]


def logit_q_log_probs(
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
    """Eq. (2)-(3) for every round at once: ``[E, T', N]`` log-probabilities of the next actions.

    Args:
        learner: A :class:`~mechgym.learners.LogitQ`.
        payoffs: Counterfactual payoffs ``u(1..T')``, ``[E, T', N, A]``.
        next_actions: Actions of rounds ``2..T``, ``[E, T', N]``.
        own_actions: Unused (full-information feedback).
        q0: ``Q(1)`` overriding ``learner.q0`` (e.g. a learned ``[N, A]``), or ``None``.
        alpha: Learning rate overriding ``learner.alpha``, or ``None``.
        epsilon: Exploration overriding ``learner.epsilon``, or ``None``.
        chunk_size: Rounds per chunk of :func:`~diml_inverse.dynamics.filters.counterfactual_scores`.

    Raises:
        ConfigurationError: another learner, bad shapes.
    """
    if not isinstance(learner, LogitQ):
        raise ConfigurationError(f"logit_q_log_probs needs a LogitQ learner; got {type(learner).__name__}")
    scores = counterfactual_scores(
        payoffs,
        learner.alpha if alpha is None else alpha,
        learner.q0 if q0 is None else q0,
        chunk_size,
    )
    eps = as_scalar(learner.epsilon if epsilon is None else epsilon, "epsilon", payoffs)
    return next_action_log_probs(logit_log_policy(scores, learner.beta, eps), next_actions)  # [E, T', N]
