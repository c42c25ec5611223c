"""Bandit-feedback Q-learning (Eq. B1 of :mod:`mechgym.learners.bandit_q`): a time-varying filter, in chunks.

Bandit-Q is not a fixed filter of the counterfactual payoffs: the score that moves is the one of the action the
agent played. Given the observed actions it is a time-varying linear filter of the realised payoffs ``r(t)``::

    Q_a(t+1) = (1 - alpha m_a(t)) Q_a(t) + alpha m_a(t) r(t),   m_a(t) = 1[a(t) = a]

whose state after round ``j`` of a chunk is ``(1 - alpha)^{c_a(j)} Q_a(start) + alpha sum_{s<=j} m_a(s) r(s)
(1 - alpha)^{c_a(j) - c_a(s)}`` with ``c_a`` the running count of plays of ``a``. :func:`bandit_q_scores`
evaluates it chunk by chunk (a ``C x C`` weight matrix per chunk, a loop over ``T / C`` chunks).

:func:`bandit_q_trace_log_probs` is the form registered in the dispatch table (it reads the realised payoffs
off the counterfactual ones at the own actions), so :func:`~diml_inverse.log_likelihood` and
:func:`~diml_inverse.fit` accept ``BanditQ``; :func:`bandit_q_log_likelihood` is the stand-alone entry point
that needs only the realised payoffs. The scores of unplayed actions never decay, so the state does not
forget; ``q0`` can be learned.

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents, ``A`` actions; ``T' = T - 1`` updates.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diml_inverse.dynamics.filters import as_scalar, initial_state
from diml_inverse.dynamics.registry import Unroll, next_action_log_probs
from mechgym.devices import device_of
from mechgym.errors import ConfigurationError, InvalidActionError
from mechgym.learners import BanditQ, Learner, logit_log_policy
from mechgym.mechanisms import Mechanism, validate_joint_actions

__all__ = [
    "DEFAULT_BANDIT_CHUNK_SIZE",
    "bandit_q_log_likelihood",
    "bandit_q_log_probs",
    "bandit_q_scores",
    "bandit_q_trace_log_probs",
]

#: Rounds per chunk of the bandit-Q scan (memory ``O(E C^2 N A)`` per chunk).
DEFAULT_BANDIT_CHUNK_SIZE = 16


def bandit_q_scores(
    realised_payoffs: Tensor,
    own_actions: Tensor,
    n_actions: int,
    alpha: Tensor | float,
    q0: Tensor | float = 0.0,
    chunk_size: int | None = None,
) -> Tensor:
    """Bandit-Q scores after every update (Eq. B1), by a chunked scan over rounds.

    Within a chunk starting from ``Q(start)``, with ``c_a(j)`` the plays of ``a`` in the chunk up to round
    ``j`` (inclusive)::

        Q_a(j+1) = (1 - alpha)^{c_a(j)} Q_a(start) + alpha sum_{s<=j} m_a(s) r(s) (1 - alpha)^{c_a(j) - c_a(s)}

    one ``C x C`` weight matrix per (episode, agent, action); the chunk-end state starts the next chunk.
    Exponents are never negative, so every ``alpha`` in (0, 1] is exact (``alpha = 1`` included).

    Args:
        realised_payoffs: ``r(t) = M(a(t))_i``, ``[E, T', N]``.
        own_actions: The actions ``a(t)`` the payoffs were earned with, ``[E, T', N]``.
        n_actions: ``A``.
        alpha: Learning rate (float or one-element tensor, differentiable).
        q0: ``Q(1)``, a scalar or broadcastable to ``[E, N, A]`` (differentiable).
        chunk_size: Rounds per chunk ``C`` (default :data:`DEFAULT_BANDIT_CHUNK_SIZE`).

    Returns:
        ``[E, T', N, A]``, the scores after ``k + 1`` updates at ``[:, k]``.

    Raises:
        ConfigurationError: mismatched shapes, a bad ``chunk_size``, ``alpha`` or ``q0``.
    """
    if realised_payoffs.dim() != 3 or own_actions.shape != realised_payoffs.shape:
        raise ConfigurationError(
            f"realised_payoffs and own_actions must both have shape [E, T, N]; got {tuple(realised_payoffs.shape)} "
            f"and {tuple(own_actions.shape)}"
        )
    if chunk_size is None:
        chunk_size = DEFAULT_BANDIT_CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be None or an integer >= 1; got {chunk_size!r}")
    n_episodes, n_updates, n_agents = realised_payoffs.shape
    alpha_t = as_scalar(alpha, "alpha", realised_payoffs)
    keep = 1.0 - alpha_t
    state = initial_state(q0, n_episodes, n_agents, n_actions, realised_payoffs)
    played = torch.nn.functional.one_hot(own_actions.long(), n_actions).to(realised_payoffs.dtype)  # m [E,T',N,A]
    steps = torch.arange(min(chunk_size, max(n_updates, 1)), device=realised_payoffs.device)
    causal = (steps[:, None] >= steps[None, :])[None, :, :, None, None]  # [1, C(j), C(s), 1, 1]
    chunks = []
    for start in range(0, n_updates, chunk_size):
        m = played[:, start : start + chunk_size]  # [E, C, N, A]
        r = realised_payoffs[:, start : start + chunk_size]  # [E, C, N]
        length = m.shape[1]
        counts = m.cumsum(1)  # c_a(j), inclusive
        lags = (counts[:, :, None] - counts[:, None, :]).clamp(min=0)  # [E, C(j), C(s), N, A]: c_a(j) - c_a(s)
        weights = torch.where(
            causal[:, :length, :length], alpha_t * m[:, None] * torch.pow(keep, lags), torch.zeros((), dtype=m.dtype)
        )
        local = torch.einsum("ejsna,esn->ejna", weights, r)
        scores = local + torch.pow(keep, counts) * state[:, None]
        chunks.append(scores)
        state = scores[:, -1]
    if not chunks:
        return realised_payoffs.new_zeros((n_episodes, 0, n_agents, n_actions))
    return torch.cat(chunks, dim=1)


def bandit_q_log_probs(
    learner: Learner,
    realised_payoffs: Tensor,
    own_actions: Tensor,
    next_actions: Tensor,
    *,
    n_actions: int,
    q0: Tensor | float | None = None,
    alpha: Tensor | float | None = None,
    epsilon: Tensor | float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Eq. (B1)-(B2) for every round: ``[E, T', N]`` log-probabilities of the next actions.

    Args:
        learner: A :class:`~mechgym.learners.BanditQ`.
        realised_payoffs: ``r(1..T')``, ``[E, T', N]``.
        own_actions: Actions of rounds ``1..T'``, ``[E, T', N]``.
        next_actions: Actions of rounds ``2..T``, ``[E, T', N]``.
        n_actions: ``A``.
        q0: ``Q(1)`` overriding ``learner.q0``, or ``None``.
        alpha: Learning rate overriding ``learner.alpha``, or ``None``.
        epsilon: Exploration overriding ``learner.epsilon``, or ``None``.
        chunk_size: Rounds per chunk of :func:`bandit_q_scores`.
    """
    if not isinstance(learner, BanditQ):
        raise ConfigurationError(f"bandit_q_log_probs needs a BanditQ learner; got {type(learner).__name__}")
    scores = bandit_q_scores(
        realised_payoffs,
        own_actions,
        n_actions,
        learner.alpha if alpha is None else alpha,
        learner.q0 if q0 is None else q0,
        chunk_size,
    )
    eps = as_scalar(learner.epsilon if epsilon is None else epsilon, "epsilon", realised_payoffs)
    return next_action_log_probs(logit_log_policy(scores, learner.beta, eps), next_actions)


def bandit_q_trace_log_probs(learner: Learner, unroll: Unroll) -> Tensor:
    """:func:`bandit_q_log_probs` in the shape of the dispatch table (:class:`~diml_inverse.dynamics.TraceLogProbs`).

    The table's functions receive the counterfactual payoffs ``[E, T', N, A]``; bandit-Q learns from the
    realised ones, read at ``unroll.own_actions`` (:meth:`~diml_inverse.dynamics.Unroll.realised_payoffs`).
    It is registered for ``BanditQ``, so :func:`~diml_inverse.log_likelihood` and :func:`~diml_inverse.fit`
    accept bandit-Q.

    Raises:
        ConfigurationError: ``unroll.own_actions`` is ``None``, another learner, a bad override.
    """
    return bandit_q_log_probs(
        learner,
        unroll.realised_payoffs(),  # r(t) = u(a(t), a_-i(t))
        unroll.played(),
        unroll.next_actions,
        n_actions=unroll.payoffs.shape[-1],
        q0=unroll.q0,
        alpha=unroll.alpha,
        epsilon=unroll.epsilon,
        chunk_size=unroll.chunk_size,
    )


def bandit_q_log_likelihood(
    mechanism: Mechanism,
    actions: Tensor,
    learner: BanditQ,
    q0: Tensor | float | None = None,
    *,
    alpha: Tensor | float | None = None,
    epsilon: Tensor | float | None = None,
    reduction: Literal["sum", "mean", "none"] = "sum",
    chunk_size: int | None = None,
    validate: bool = True,
) -> Tensor:
    """Log-likelihood (paper Eq. 5) of action traces under bandit-Q learners playing ``mechanism``.

    The counterpart of :func:`diml_inverse.log_likelihood` for :class:`~mechgym.learners.BanditQ`: the
    realised payoffs come from one batched forward pass of the mechanism on the observed joint actions
    (bandit learners never see counterfactual payoffs, so the mechanism is identified only on path), the
    scores from :func:`bandit_q_scores`, and the policy from Eq. (B2).

    Args:
        mechanism: The (candidate) mechanism; gradients flow to its parameters.
        actions: Observed joint actions, LongTensor ``[E, T, N]`` with ``T >= 2``.
        learner: The assumed bandit-Q learner.
        q0: ``Q(1)`` (scalar or broadcastable to ``[E, N, A]``); ``None`` for ``learner.q0``.
        alpha: Learning rate overriding ``learner.alpha`` (a tensor to learn it).
        epsilon: Exploration overriding ``learner.epsilon``.
        reduction: ``"sum"``, ``"mean"`` or ``"none"`` (``[E, T-1, N]``) as in ``log_likelihood``.
        chunk_size: Rounds per chunk of the scan.
        validate: Check the actions' range (reads a flag back from the device).

    Returns:
        A scalar tensor, or ``[E, T-1, N]`` for ``reduction="none"``.

    Raises:
        InvalidActionError: ``actions`` is not an integer ``[E, T, N]`` tensor with ``T >= 2`` in range.
        ConfigurationError: another learner, a bad reduction or override.
    """
    if not isinstance(mechanism, Mechanism):
        raise ConfigurationError(f"mechanism must be a mechgym Mechanism; got {type(mechanism).__name__}")
    if not isinstance(learner, BanditQ):
        raise ConfigurationError(
            f"bandit_q_log_likelihood needs a BanditQ learner; got {type(learner).__name__}. "
            "Full-information learners go through diml_inverse.log_likelihood"
        )
    if reduction not in ("sum", "mean", "none"):
        raise ConfigurationError(f"reduction must be 'sum', 'mean' or 'none'; got {reduction!r}")
    if not isinstance(actions, Tensor) or actions.dim() != 3 or actions.shape[1] < 2:
        shape = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
        raise InvalidActionError(
            f"actions must be an integer tensor of shape [E, T, N] with T >= 2 (the first round's action has no "
            f"likelihood term, Eq. 5); got {shape}"
        )
    if validate:
        validate_joint_actions(actions, mechanism.n_agents, mechanism.n_actions, where=type(mechanism).__name__)
    actions = actions.to(device=device_of(mechanism), dtype=torch.long)
    realised = mechanism(actions[:, :-1])  # r(1..T-1), [E, T-1, N]
    log_probs = bandit_q_log_probs(
        learner,
        realised,
        actions[:, :-1],
        actions[:, 1:],
        n_actions=mechanism.n_actions,
        q0=q0,
        alpha=alpha,
        epsilon=epsilon,
        chunk_size=chunk_size,
    )
    if reduction == "none":
        return log_probs
    return log_probs.sum() if reduction == "sum" else log_probs.mean()
