"""Logit-Q (paper Eq. 2-3): the scores are an exponential filter of the counterfactual payoffs.

``Q(t+1) = (1 - alpha) Q(t) + alpha u(t)`` is :func:`~diml_inverse.dynamics.filters.counterfactual_scores`;
the policy is the logit response of Eq. (3) with exploration ``epsilon``. The state forgets exponentially,
at rate ``alpha``, and ``q0``, ``alpha`` and ``epsilon`` can all be learned.

Shapes: ``E`` episodes, ``T' = T - 1`` updates, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

from torch import Tensor

from diml_inverse.dynamics.filters import as_scalar, logit_filter_log_probs
from diml_inverse.dynamics.registry import Unroll
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner, LogitQ

__all__ = ["logit_q_log_probs"]


def logit_q_log_probs(learner: Learner, unroll: Unroll) -> Tensor:
    """Eq. (2)-(3) for every round at once: ``[E, T', N]`` log-probabilities of the next actions.

    Overrides ``q0`` (``Q(1)``, e.g. a learned ``[N, A]``), ``alpha`` and ``epsilon`` replace the learner's;
    the scores are those of :func:`~diml_inverse.dynamics.filters.counterfactual_scores` in chunks of
    ``unroll.chunk_size``, computed with the policy in one fused pass
    (:func:`~diml_inverse.dynamics.filters.logit_filter_log_probs`). ``unroll.own_actions`` is unused
    (full-information feedback).

    Args:
        learner: A :class:`~mechgym.learners.LogitQ`.
        unroll: The traces and overrides (:class:`~diml_inverse.dynamics.Unroll`).

    Raises:
        ConfigurationError: another learner, bad shapes.
    """
    if not isinstance(learner, LogitQ):
        raise ConfigurationError(f"logit_q_log_probs needs a LogitQ learner; got {type(learner).__name__}")
    alpha = unroll.value("alpha", learner.alpha)
    keep: Tensor | float
    gain: Tensor | float
    if isinstance(alpha, Tensor):  # learned: keep the filter's constants in the graph
        alpha_t = as_scalar(alpha, "alpha", unroll.payoffs)
        keep, gain = 1.0 - alpha_t, alpha_t
    else:  # the learner's own constant: the filter's matrices are built once (decay_matrices)
        keep, gain = 1.0 - float(alpha), float(alpha)
    epsilon = unroll.value("epsilon", learner.epsilon)
    if isinstance(epsilon, Tensor):
        epsilon = as_scalar(epsilon, "epsilon", unroll.payoffs)
    q0 = unroll.value("q0", learner.q0)
    return logit_filter_log_probs(
        unroll.payoffs, keep, gain, q0, learner.beta, epsilon, unroll.next_actions, unroll.chunk_size
    )  # [E, T', N]
