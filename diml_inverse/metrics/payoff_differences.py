"""diff_mse (paper §6.3): the error of the payoff differences ``u_i(a, a_-i) - u_i(a', a_-i)`` on held-out contexts.

Payoff differences are the identifiable part of a mechanism (Theorem 1): adding any ``c_i(a_-i)`` to a
mechanism's payoffs changes none of them, so none of these metrics. Every mechanism evaluates its differences
with :meth:`~mechgym.mechanisms.Mechanism.deviation_payoffs` (its own choice of a payoff-table gather, the
anonymous count path or forward passes), on its own device.

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents, ``A`` actions, ``K`` sampled contexts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from diml_inverse.metrics.inputs import Traces, check_same_game, derive_seed, detached_float, trace_actions
from mechgym.errors import ConfigurationError
from mechgym.mechanisms import Mechanism
from mechgym.validation import is_integer

__all__ = [
    "DiffContexts",
    "best_scale",
    "diff_mse",
    "payoff_differences",
    "rescaled_diff_mse",
    "sample_diff_contexts",
    "zero_baseline_diff_mse",
]


class DiffContexts(NamedTuple):
    """The ``K`` contexts of :func:`diff_mse`: agent ``i`` at round ``t`` of episode ``e``, two actions.

    Attributes:
        joint: Observed joint actions ``a(e, t)``, LongTensor ``[K, N]``.
        episode: Episode index ``e``, ``[K]``.
        round: Round index ``t``, ``[K]``.
        agent: Deviating agent ``i``, ``[K]``.
        deviations: The two actions ``(a, a')`` of agent ``i``, ``[K, 2]`` (independent, may be equal).
    """

    joint: Tensor
    episode: Tensor
    round: Tensor
    agent: Tensor
    deviations: Tensor


def sample_diff_contexts(
    traces: Traces, n_agents: int, n_actions: int, n_samples: int = 20_000, seed: int = 0
) -> DiffContexts:
    """Draw :func:`diff_mse`'s contexts: ``K = min(n_samples, E*T*N)`` (episode, round, agent) triples.

    The triples are drawn uniformly *without* replacement (so with ``n_samples >= E*T*N`` every context is
    used exactly once), the two actions of each uniformly and independently from ``[0, A)``. The draws come
    from a CPU ``torch.Generator`` seeded with ``derive_seed(seed, "diff_mse")``, so they are the same for
    every device and every mechanism.

    Args:
        traces: Held-out traces, a :class:`TraceDataset` or a LongTensor ``[E, T, N]``.
        n_agents: ``N`` of the game.
        n_actions: ``A`` of the game.
        n_samples: Number of contexts wanted.
        seed: Evaluation seed.

    Returns:
        The contexts, on the traces' device (the CPU for a dataset).

    Raises:
        ConfigurationError: ``n_samples < 1`` or a bad seed.
        InvalidActionError, TraceDatasetError: traces of another game or malformed traces.
    """
    if not is_integer(n_samples, numpy=False) or n_samples < 1:
        raise ConfigurationError(f"n_samples must be an integer >= 1; got {n_samples!r}")
    actions = trace_actions(traces, n_agents, n_actions)
    n_episodes, n_rounds, _ = actions.shape
    n_contexts = n_episodes * n_rounds * n_agents
    generator = torch.Generator().manual_seed(derive_seed(seed, "diff_mse"))
    flat = torch.randperm(n_contexts, generator=generator)[: min(n_samples, n_contexts)]
    deviations = torch.randint(0, n_actions, (flat.numel(), 2), generator=generator)
    flat, deviations = flat.to(actions.device), deviations.to(actions.device)
    rows, agent = flat // n_agents, flat % n_agents
    return DiffContexts(
        joint=actions.reshape(-1, n_agents)[rows],
        episode=rows // n_rounds,
        round=rows % n_rounds,
        agent=agent,
        deviations=deviations,
    )


@torch.no_grad()
def payoff_differences(mechanism: Mechanism, contexts: DiffContexts) -> Tensor:
    """``u_i(a, a_-i) - u_i(a', a_-i)`` for every context, ``[K]``, on the mechanism's device.

    Two payoffs per context from :meth:`~mechgym.mechanisms.Mechanism.deviation_payoffs`.
    """
    payoffs = mechanism.deviation_payoffs(contexts.joint, contexts.agent, contexts.deviations)  # [K, 2]
    return payoffs[:, 0] - payoffs[:, 1]


def diff_mse(truth: Mechanism, estimate: Mechanism, traces: Traces, n_samples: int = 20_000, seed: int = 0) -> float:
    """Payoff-difference error (paper §6.3), the identifiable part of a mechanism (Theorem 1)::

        E_(e,t,i) E_(a,a' ~ U(A)) [ ((u_i(a, a_-i) - u_i(a', a_-i)) - (û_i(a, a_-i) - û_i(a', a_-i)))^2 ]

    with ``a_-i`` the others' actions at round ``t`` of held-out episode ``e``. The contexts are drawn by
    :func:`sample_diff_contexts` (``K = min(n_samples, E*T*N)``, without replacement); each mechanism
    evaluates all of them in one vectorised call on its own device. Invariant to adding any ``c_i(a_-i)``
    to either mechanism's payoffs.

    Args:
        truth: The true mechanism ``M*``.
        estimate: The fitted mechanism ``M̂`` (may live on another device).
        traces: Held-out traces, a :class:`TraceDataset` or a LongTensor ``[E, T, N]``.
        n_samples: Contexts to average over (the reference: 20,000 for E1-E3, 50,000 for E4).
        seed: Evaluation seed (see :func:`derive_seed`); the same seed gives the same contexts.

    Returns:
        The mean squared error (a float, computed in float64 from the float payoff differences).

    Raises:
        ConfigurationError: the two mechanisms differ in ``N`` or ``A``, or bad ``n_samples``/``seed``.
        InvalidActionError, TraceDatasetError: traces of another game or malformed traces.
    """
    check_same_game(truth, estimate)
    contexts = sample_diff_contexts(traces, truth.n_agents, truth.n_actions, n_samples, seed)
    reference = payoff_differences(truth, contexts)
    fitted = payoff_differences(estimate, contexts).to(reference.device)
    return detached_float(((reference.double() - fitted.double()) ** 2).mean())


def rescaled_diff_mse(
    truth: Mechanism, estimate: Mechanism, traces: Traces, n_samples: int = 20_000, seed: int = 0
) -> tuple[float, float]:
    """The estimate's payoff-difference scale and its :func:`diff_mse` after the best rescaling by it.

    The scale is ``c* = max(0, <d, d̂> / <d̂, d̂>)`` over :func:`diff_mse`'s contexts (``d`` true, ``d̂`` fitted
    differences), the error ``E[(d - c* d̂)^2]``. A logit learner's inverse temperature ``beta`` and the
    payoff scale are confounded (Remark 1), so a fit that assumes the wrong ``beta`` (or a learner of
    another kind) can recover the *shape* of the incentives but not their units: this error measures the
    shape alone. It is at most both :func:`diff_mse` (``c = 1``) and the zero baseline (``c = 0``).

    Returns:
        ``(c*, rescaled error)``; ``c* = 0`` when the estimate's differences are all zero.
    """
    check_same_game(truth, estimate)
    contexts = sample_diff_contexts(traces, truth.n_agents, truth.n_actions, n_samples, seed)
    reference = payoff_differences(truth, contexts).double()
    fitted = payoff_differences(estimate, contexts).to(reference.device).double()
    scale = best_scale(reference, fitted)
    return scale, detached_float(((reference - scale * fitted) ** 2).mean())


def best_scale(reference: Tensor, fitted: Tensor) -> float:
    """``max(0, <reference, fitted> / <fitted, fitted>)`` (0 for an all-zero ``fitted``)."""
    norm = float((fitted * fitted).sum())
    return max(0.0, float((reference * fitted).sum()) / norm) if norm > 0 else 0.0


def zero_baseline_diff_mse(truth: Mechanism, traces: Traces, n_samples: int = 20_000, seed: int = 0) -> float:
    """:func:`diff_mse` of the zero mechanism, ``E[(u_i(a, a_-i) - u_i(a', a_-i))^2]``, on the same contexts.

    With the same arguments it equals ``diff_mse(truth, zero_mechanism, ...)`` exactly; report it next to
    every diff_mse (behaviour is near-uniform, so a small diff_mse alone says little).
    """
    contexts = sample_diff_contexts(traces, truth.n_agents, truth.n_actions, n_samples, seed)
    return detached_float((payoff_differences(truth, contexts).double() ** 2).mean())
