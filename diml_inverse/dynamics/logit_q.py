"""Logit-Q (paper Eq. 2-3): the scores are an exponential filter of the counterfactual payoffs.

``Q(t+1) = (1 - alpha) Q(t) + alpha u(t)`` is :func:`~diml_inverse.dynamics.filters.counterfactual_scores`;
the policy is the logit response of Eq. (3) with exploration ``epsilon``. The state forgets exponentially,
at rate ``alpha``, and ``q0``, ``alpha`` and ``epsilon`` can all be learned.

Shapes: ``E`` episodes, ``T' = T - 1`` updates, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

from torch import Tensor

from diml_inverse.dynamics.filters import as_scalar, counterfactual_scores
from diml_inverse.dynamics.registry import Unroll
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner, LogitQ, logit_log_policy

__all__ = ["logit_q_log_probs"]


def logit_q_log_probs(learner: Learner, unroll: Unroll) -> Tensor:
    """Eq. (2)-(3) for every round at once: ``[E, T', N]`` log-probabilities of the next actions.

    Overrides ``q0`` (``Q(1)``, e.g. a learned ``[N, A]``), ``alpha`` and ``epsilon`` replace the learner's;
    the scores are :func:`~diml_inverse.dynamics.filters.counterfactual_scores` in chunks of
    ``unroll.chunk_size``. ``unroll.own_actions`` is unused (full-information feedback).

    Args:
        learner: A :class:`~mechgym.learners.LogitQ`.
        unroll: The traces and overrides (:class:`~diml_inverse.dynamics.Unroll`).

    Raises:
        ConfigurationError: another learner, bad shapes.
    """
    if not isinstance(learner, LogitQ):
        raise ConfigurationError(f"logit_q_log_probs needs a LogitQ learner; got {type(learner).__name__}")
    payoffs = unroll.payoffs
    scores = counterfactual_scores(
        payoffs, unroll.value("alpha", learner.alpha), unroll.value("q0", learner.q0), unroll.chunk_size
    )
    eps = as_scalar(unroll.value("epsilon", learner.epsilon), "epsilon", payoffs)
    return unroll.log_probs_of(logit_log_policy(scores, learner.beta, eps))  # [E, T', N]
