"""Held-out likelihood: the negative log-likelihood per agent-round of test traces (Eq. 5) and its uniform baseline."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diml_inverse.metrics.inputs import Traces, detached_float, trace_actions
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism
from mechgym.validation import is_integer

__all__ = ["heldout_nll", "uniform_nll"]


def heldout_nll(mechanism: Mechanism, traces: Traces, learner: Learner, q0: Tensor | float | None = None) -> float:
    """Negative log-likelihood per agent-round of held-out traces (Eq. 5, rounds ``t >= 2``).

    Args:
        mechanism: The mechanism whose counterfactual payoffs drive the learners.
        traces: Held-out traces, a :class:`TraceDataset` or a LongTensor ``[E, T, N]`` with ``T >= 2``.
        learner: The learning rule assumed for every agent.
        q0: Initial scores (see :func:`~diml_inverse.likelihood.log_likelihood`); ``None`` for ``learner.q0``.

    Returns:
        ``-mean log pi_i(t)(a_i(t))`` over episodes, rounds ``t >= 2`` and agents; compare with
        :func:`uniform_nll`.
    """
    from diml_inverse.likelihood import log_likelihood

    actions = trace_actions(traces, mechanism.n_agents, mechanism.n_actions)
    with torch.no_grad():
        return -detached_float(log_likelihood(mechanism, actions, learner, q0, reduction="mean"))


def uniform_nll(n_actions: int) -> float:
    """``log A``: the NLL per agent-round of uniformly random play."""
    if not is_integer(n_actions, numpy=False) or n_actions < 1:
        raise ConfigurationError(f"n_actions must be an integer >= 1; got {n_actions!r}")
    return math.log(n_actions)
