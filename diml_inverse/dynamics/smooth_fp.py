"""Smooth fictitious play (Eq. F1-F2 of :mod:`mechgym.learners.smooth_fp`): a causal cumulative mean.

``U(t+1) = sum_{s<=t} u(s) / (w0 + t)``; ``log pi`` is the logit policy of ``U``. The mean never forgets,
and the rule has no ``q0`` (its prior is ``w0`` rounds of equal payoffs), so nothing of it is learned.

Shapes: ``E`` episodes, ``T' = T - 1`` updates, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diml_inverse.dynamics.filters import as_scalar, check_payoffs
from diml_inverse.dynamics.registry import Unroll
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner, SmoothFP, logit_log_policy

__all__ = ["smooth_fp_beliefs", "smooth_fp_log_probs"]


def smooth_fp_beliefs(payoffs: Tensor, prior_weight: Tensor | float) -> Tensor:
    """Beliefs after every update (Eq. F1): ``output[:, k] = sum_{s<=k} u(s) / (w0 + k + 1)``.

    Args:
        payoffs: Counterfactual payoffs ``[E, T', N, A]``.
        prior_weight: ``w0`` > 0.

    Returns:
        ``[E, T', N, A]``, the belief after ``k + 1`` updates at ``[:, k]``.
    """
    check_payoffs(payoffs)
    weight = as_scalar(prior_weight, "prior_weight", payoffs)
    counts = weight + torch.arange(1, payoffs.shape[1] + 1, dtype=payoffs.dtype, device=payoffs.device)
    return torch.cumsum(payoffs, dim=1) / counts[:, None, None]


def smooth_fp_log_probs(learner: Learner, unroll: Unroll) -> Tensor:
    """Eq. (F1)-(F2) for every round at once: ``[E, T', N]`` log-probabilities of the next actions.

    Only ``epsilon`` can be overridden: the prior is ``prior_weight`` rounds of equal payoffs (no ``q0``) and
    the step is ``1 / (w0 + t)`` (no ``alpha``). ``unroll.own_actions`` and ``unroll.chunk_size`` are unused.

    Args:
        learner: A :class:`~mechgym.learners.SmoothFP`.
        unroll: The traces and overrides (:class:`~diml_inverse.dynamics.Unroll`).

    Raises:
        ConfigurationError: another learner, ``q0`` or ``alpha`` given, bad shapes.
    """
    if not isinstance(learner, SmoothFP):
        raise ConfigurationError(f"smooth_fp_log_probs needs a SmoothFP learner; got {type(learner).__name__}")
    unroll.refuse(learner, "q0", "alpha")
    beliefs = smooth_fp_beliefs(unroll.payoffs, learner.prior_weight)
    eps = as_scalar(unroll.value("epsilon", learner.epsilon), "epsilon", unroll.payoffs)
    return unroll.log_probs_of(logit_log_policy(beliefs, learner.beta, eps))
