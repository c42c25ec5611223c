"""The learning-dynamics likelihood of action traces (paper Eq. 5), in parallel over rounds and agents.

The counterfactual payoffs ``u_i(., a_-i(t))`` (Eq. 1) depend only on the observed actions and the
mechanism, never on the learners' scores. The logit-Q update (Eq. 2) is therefore a fixed linear filter of
those payoffs::

    Q(t+1) = (1 - alpha)^t Q(1) + alpha * sum_{s <= t} (1 - alpha)^(t - s) u(s)

so Algorithm 1's double loop over rounds and agents collapses into

1. one batched :meth:`~mechgym.mechanisms.Mechanism.counterfactual_payoffs` call on ``[E, T-1, N]``,
2. a causal filter over rounds (:func:`~diml_inverse.dynamics.filters.linear_filter`: a lower-triangular
   decay matrix product, chunked so that memory stays linear in ``T``), and
3. one vectorised log-policy (Eq. 3) gathered at the next observed actions.

Steps 2 and 3 are the assumed learner's rule, looked up with :func:`~diml_inverse.dynamics.dynamics_for`
(logit-Q, Hedge, smooth fictitious play and bandit-Q are built in; :func:`~diml_inverse.dynamics.register_dynamics`
adds more). This module validates the inputs, evaluates the mechanism and reduces the terms.

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diml_inverse.dynamics import (
    DEFAULT_CHUNK_SIZE,
    WHOLE_HORIZON_MAX_ROUNDS,
    Unroll,
    counterfactual_scores,
    dynamics_for,
    linear_filter,
)
from mechgym.devices import device_of
from mechgym.errors import ConfigurationError, InvalidActionError
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism, validate_joint_actions
from mechgym.mechanisms.tables import TableIndex

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "WHOLE_HORIZON_MAX_ROUNDS",
    "counterfactual_scores",
    "linear_filter",
    "log_likelihood",
    "trace_terms",
]

Reduction = Literal["sum", "mean", "none"]


def _check_actions(actions: Tensor, mechanism: Mechanism, validate: bool) -> None:
    if not isinstance(actions, Tensor) or actions.dim() != 3:
        shape = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
        raise InvalidActionError(
            f"actions must be an integer tensor of shape [E, T, N] = [episodes, rounds, {mechanism.n_agents}]; "
            f"got {shape}. Add an episode axis with actions[None] for a single episode."
        )
    n_episodes, n_rounds, _ = actions.shape
    if n_episodes < 1 or n_rounds < 2:
        raise InvalidActionError(
            f"actions need at least 1 episode and 2 rounds (the first round's action has no likelihood term, "
            f"Eq. 5); got shape {tuple(actions.shape)}"
        )
    if validate:
        validate_joint_actions(actions, mechanism.n_agents, mechanism.n_actions, where=type(mechanism).__name__)
    elif actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise InvalidActionError(f"actions must be integers (torch.long); got dtype {actions.dtype}")
    elif actions.shape[-1] != mechanism.n_agents:
        raise InvalidActionError(f"actions must have shape [E, T, {mechanism.n_agents}]; got {tuple(actions.shape)}")


def log_likelihood(
    mechanism: Mechanism,
    actions: Tensor,
    learner: Learner,
    q0: Tensor | float | None = None,
    *,
    alpha: Tensor | float | None = None,
    epsilon: Tensor | float | None = None,
    reduction: Reduction = "sum",
    chunk_size: int | None = None,
    validate: bool = True,
) -> Tensor:
    """Log-likelihood of action traces under learners playing ``mechanism`` (paper Eq. 5), in parallel.

    ``sum_{episodes} sum_{t=1}^{T-1} sum_i log pi_i(t+1)(a_i(t+1))`` with ``pi`` from Eq. (2)-(3): the same
    value and gradients as Algorithm 1's loop over rounds and agents, computed with one batched
    counterfactual-payoff call, an exponential filter over rounds and one vectorised log-policy.
    The first round's action has no term. Everything runs on the mechanism's device; ``actions`` are
    moved there.

    Args:
        mechanism: The (candidate) mechanism ``M_theta``; gradients flow to its parameters.
        actions: Observed joint actions, LongTensor ``[E, T, N]`` with ``T >= 2``.
        learner: The learning rule assumed for every agent: a learner with registered dynamics
            (:func:`~diml_inverse.dynamics.dynamics_for`), e.g. :class:`~mechgym.learners.LogitQ`.
        q0: Initial scores ``Q(1)``: a scalar or a tensor broadcastable to ``[E, N, A]`` (e.g. ``[N, A]``,
            learnable); ``None`` for ``learner.q0``.
        alpha: Learning rate overriding ``learner.alpha`` (a tensor to learn it jointly).
        epsilon: Exploration overriding ``learner.epsilon`` (a tensor to learn it jointly). ``beta`` is
            always the learner's (it only sets the payoff scale, paper Remark 1).
        reduction: ``"sum"`` (Eq. 5 summed over episodes, the negative of Eq. 4's loss), ``"mean"`` (per
            agent-round term) or ``"none"`` (the terms, ``[E, T-1, N]``; entry ``[e, k, i]`` is
            ``log pi_i(k+2)(a_i(k+2))`` in 1-indexed rounds, i.e. of ``actions[e, k+1, i]``).
        chunk_size: Rounds per chunk of the score filter (see :func:`counterfactual_scores`); ``None``
            picks one.
        validate: Check that the actions lie in ``[0, A)``. This reads a flag back from the device; pass
            ``False`` in a training loop over data validated once at load time.

    Returns:
        A scalar tensor, or ``[E, T-1, N]`` for ``reduction="none"``.

    Raises:
        InvalidActionError: ``actions`` is not an integer ``[E, T, N]`` tensor with ``T >= 2``, ``N`` the
            mechanism's agents and values in ``[0, A)``.
        ConfigurationError: An unsupported learner or reduction, or badly shaped ``q0``/``alpha``/``epsilon``.

    Example:
        >>> model = NeuralJointMechanism(3, 6, seed=1)
        >>> nll = -log_likelihood(model, actions, LogitQ(0.25, 3.0, 0.06)) / actions[:, 1:].numel()
        >>> nll.backward()
    """
    if reduction not in ("sum", "mean", "none"):
        raise ConfigurationError(f"reduction must be 'sum', 'mean' or 'none'; got {reduction!r}")
    log_probs, _ = trace_terms(
        mechanism, actions, learner, q0, alpha=alpha, epsilon=epsilon, chunk_size=chunk_size, validate=validate
    )
    if reduction == "none":
        return log_probs
    return log_probs.sum() if reduction == "sum" else log_probs.mean()


def trace_terms(
    mechanism: Mechanism,
    actions: Tensor,
    learner: Learner,
    q0: Tensor | float | None = None,
    *,
    alpha: Tensor | float | None = None,
    epsilon: Tensor | float | None = None,
    chunk_size: int | None = None,
    agents: Tensor | None = None,
    validate: bool = True,
    table_index: TableIndex | None = None,
) -> tuple[Tensor, Tensor]:
    """The terms of Eq. (5) and the realised payoffs they were computed from, for all or some agents.

    The sum of the first output over agents is :func:`log_likelihood`'s ``reduction="none"``; restricted to
    a subset of agents it is an unbiased minibatch of the likelihood over agents (the counterfactual
    payoffs of a round still see every agent's action).

    Args:
        mechanism, actions, learner, q0, alpha, epsilon, chunk_size, validate: as in :func:`log_likelihood`.
        agents: Optional LongTensor ``[K]`` of agent indices; ``None`` for all ``N``. A ``q0`` with an agent
            axis (``[N, A]`` or ``[E, N, A]``) is indexed by it.
        table_index: The payoff-table index of ``actions[:, :-1]`` and ``agents``
            (:meth:`~mechgym.mechanisms.Mechanism.table_index`, then ``.select``), made once for traces scored
            many times (a fit's training episodes); ``None`` computes it. It must be that of these actions.

    Returns:
        ``(log_probs, payoffs)``, both ``[E, T-1, K]``: ``log pi_i(k+2)(a_i(k+2))`` and the realised payoff
        ``M(a(k+1))[i]`` of rounds ``1..T-1`` (1-indexed; the last round's payoff is not needed).
    """
    if not isinstance(mechanism, Mechanism):
        raise ConfigurationError(f"mechanism must be a mechgym Mechanism; got {type(mechanism).__name__}")
    trace_log_probs = dynamics_for(learner).log_probs
    _check_actions(actions, mechanism, validate)
    device = device_of(mechanism)
    actions = actions.to(device=device, dtype=torch.long)
    if agents is not None:
        agents = torch.as_tensor(agents, dtype=torch.long, device=device)
        if (
            agents.dim() != 1
            or agents.numel() == 0
            or (validate and (int(agents.min()) < 0 or int(agents.max()) >= actions.shape[-1]))
        ):
            raise ConfigurationError(
                f"agents must be a non-empty 1-D list of indices in [0, {actions.shape[-1]}); got {agents.tolist()}"
            )
        if isinstance(q0, Tensor) and q0.dim() >= 2:
            q0 = q0[..., agents, :]
    played = actions[:, :-1] if agents is None else actions[:, :-1, agents]
    # u(1..T-1), Eq. (1), [E, T-1, K, A], and the realised payoffs M(a(t))_i, [E, T-1, K]
    payoffs, realised = mechanism.counterfactual_and_realised_payoffs(actions[:, :-1], agents, index=table_index)
    next_actions = actions[:, 1:] if agents is None else actions[:, 1:, agents]
    unroll = Unroll(
        payoffs, next_actions, played, q0=q0, alpha=alpha, epsilon=epsilon, chunk_size=chunk_size, realised=realised
    )
    return trace_log_probs(learner, unroll), unroll.realised_payoffs()
