"""The learning-dynamics likelihood of action traces (paper Eq. 5), in parallel over rounds and agents.

The counterfactual payoffs ``u_i(., a_-i(t))`` (Eq. 1) depend only on the observed actions and the
mechanism, never on the learners' scores. The logit-Q update (Eq. 2) is therefore a fixed linear filter of
those payoffs::

    Q(t+1) = (1 - alpha)^t Q(1) + alpha * sum_{s <= t} (1 - alpha)^(t - s) u(s)

so Algorithm 1's double loop over rounds and agents collapses into

1. one batched :meth:`~mechgym.mechanisms.Mechanism.counterfactual_payoffs` call on ``[E, T-1, N]``,
2. a causal exponential filter over rounds (a lower-triangular decay matrix product, chunked so that
   memory stays linear in ``T``, the chunk-end states carried by the same filter one level up), and
3. one vectorised log-policy (Eq. 3) gathered at the next observed actions.

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor

from diml_inverse.dynamics import _as_scalar as _scalar
from diml_inverse.dynamics import _initial_state, bandit_q_trace_log_probs, hedge_log_probs, smooth_fp_log_probs
from mechgym.errors import ConfigurationError, InvalidActionError
from mechgym.learners import BanditQ, Hedge, Learner, LogitQ, SmoothFP, logit_log_policy
from mechgym.mechanisms import Mechanism, validate_joint_actions

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "WHOLE_HORIZON_MAX_ROUNDS",
    "counterfactual_scores",
    "linear_filter",
    "log_likelihood",
    "trace_terms",
]

#: Horizons of at most this many updates are filtered in one piece (one ``T x T`` decay matrix).
WHOLE_HORIZON_MAX_ROUNDS = 256
#: Chunk length of the filter for longer horizons (memory ``O(E T N A + C^2)``).
DEFAULT_CHUNK_SIZE = 128

Reduction = Literal["sum", "mean", "none"]


def _initial_scores(q0: Tensor | float, payoffs: Tensor) -> Tensor:
    """``Q(1)`` broadcast to ``[E, N, A]`` for payoffs ``[E, T, N, A]``."""
    n_episodes, _, n_agents, n_actions = payoffs.shape
    return _initial_state(q0, n_episodes, n_agents, n_actions, payoffs)


def _resolve_chunk_size(chunk_size: int | None, n_updates: int) -> int:
    if chunk_size is None:
        return max(n_updates, 1) if n_updates <= WHOLE_HORIZON_MAX_ROUNDS else DEFAULT_CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be None or an integer >= 1; got {chunk_size!r}")
    return min(chunk_size, max(n_updates, 1))


def linear_filter(inputs: Tensor, keep: Tensor, gain: Tensor, initial: Tensor, chunk_size: int) -> Tensor:
    """Every state of ``x(t+1) = keep * x(t) + gain * u(t)``, ``x(1) = initial``, by a chunked causal filter.

    ``output[:, k] = keep^(k+1) initial + gain * sum_{s<=k} keep^(k-s) inputs[:, s]``, the state after
    ``k+1`` updates. Logit-Q (Eq. 2) is ``keep = 1 - alpha, gain = alpha``; cumulative-payoff rules
    (Hedge) are ``keep = 1``.

    Within a chunk of ``C`` rounds the filter is one product with a ``C x C`` lower-triangular decay
    matrix, applied to all chunks at once. The states at the chunk ends follow the same recursion one
    level up (decay ``keep^C``, gain 1), solved by the same function, so there is no loop over rounds or
    chunks and memory is ``O(E T K + C^2)``.

    Args:
        inputs: ``u``, ``[E, T, K]`` (``K`` independent channels, e.g. ``N * A``).
        keep: The decay, a 0-dim tensor.
        gain: The input weight, a 0-dim tensor.
        initial: ``x(1)``, ``[E, 1, K]``.
        chunk_size: ``C`` (1 is taken as 2, so that each level shortens the horizon).

    Returns:
        States ``[E, T, K]``.
    """
    n_episodes, n_rounds, n_channels = inputs.shape
    time_major = inputs.transpose(0, 1).reshape(n_rounds, n_episodes * n_channels)  # one GEMM over all channels
    states = _time_major_filter(time_major, keep, gain, initial.reshape(n_episodes * n_channels), chunk_size)
    return states.reshape(n_rounds, n_episodes, n_channels).transpose(0, 1)


def _time_major_filter(inputs: Tensor, keep: Tensor, gain: Tensor, initial: Tensor, chunk_size: int) -> Tensor:
    """:func:`linear_filter` on ``inputs [T, M]`` and ``initial [M]``."""
    n_rounds, n_channels = inputs.shape
    chunk = min(max(chunk_size, 2), n_rounds)
    steps = torch.arange(chunk, device=inputs.device, dtype=inputs.dtype)
    lags = steps[:, None] - steps[None, :]
    # decay[j, s] = gain keep^(j - s) for s <= j; torch.pow keeps 0^0 = 1, so keep = 0 (alpha = 1) works
    decay = torch.where(lags >= 0, gain * torch.pow(keep, lags.clamp(min=0)), torch.zeros_like(lags))
    initial_decay = torch.pow(keep, steps + 1)[:, None]  # [C, 1]: keep^(j + 1)
    if n_rounds <= chunk:
        return decay @ inputs + initial_decay * initial

    n_chunks = -(-n_rounds // chunk)
    padded = torch.nn.functional.pad(inputs, (0, 0, 0, n_chunks * chunk - n_rounds))  # zeros after the end
    blocks = padded.reshape(n_chunks, chunk, n_channels).transpose(0, 1).reshape(chunk, n_chunks * n_channels)
    local = (decay @ blocks).reshape(chunk, n_chunks, n_channels)  # each chunk filtered from a zero state
    # state before chunk k: x_k = keep^C x_{k-1} + local_end_{k-1}, x_0 = initial
    carried = _time_major_filter(local[-1, :-1], torch.pow(keep, chunk), torch.ones_like(gain), initial, chunk)
    before = torch.cat([initial[None], carried])  # [n_chunks, M]
    states = local + initial_decay[:, :, None] * before
    return states.transpose(0, 1).reshape(n_chunks * chunk, n_channels)[:n_rounds]


def counterfactual_scores(
    payoffs: Tensor, alpha: Tensor | float, q0: Tensor | float = 0.0, chunk_size: int | None = None
) -> Tensor:
    """Logit-Q scores after every update (Eq. 2), for all episodes, rounds and agents at once.

    ``output[:, k]`` is ``Q(k+2)`` in the paper's 1-indexed rounds, the state after ``k+1`` updates::

        Q(t+1) = (1 - alpha)^t q0 + alpha * sum_{s=1}^{t} (1 - alpha)^(t - s) u(s)

    computed as a causal filter (:func:`linear_filter`): within a chunk of ``C`` rounds a ``C x C``
    lower-triangular decay matrix, the chunk-end states carried by the same filter one level up. Memory
    is ``O(E T N A + C^2)``.

    Args:
        payoffs: Counterfactual payoffs ``u(1..T')`` (Eq. 1), ``[E, T', N, A]``.
        alpha: Learning rate: a float or a one-element tensor (differentiable; ``alpha = 1`` is allowed).
        q0: Initial scores ``Q(1)``: a scalar or a tensor broadcastable to ``[E, N, A]`` (differentiable).
        chunk_size: Rounds per chunk ``C``; ``None`` filters horizons of up to
            :data:`WHOLE_HORIZON_MAX_ROUNDS` in one piece and longer ones in chunks of
            :data:`DEFAULT_CHUNK_SIZE`.

    Returns:
        Scores ``[E, T', N, A]`` with ``payoffs``'s dtype and device.

    Raises:
        ConfigurationError: ``payoffs`` is not 4-D, ``alpha`` is not a scalar, ``q0`` does not broadcast, or
            ``chunk_size`` is not a positive integer.
    """
    if payoffs.dim() != 4:
        raise ConfigurationError(f"payoffs must have shape [E, T, N, A]; got {tuple(payoffs.shape)}")
    n_episodes, n_updates, n_agents, n_actions = payoffs.shape
    alpha_t = _scalar(alpha, "alpha", payoffs)
    initial = _initial_scores(q0, payoffs).reshape(n_episodes, 1, n_agents * n_actions)
    chunk = _resolve_chunk_size(chunk_size, n_updates)
    if n_updates == 0:
        return payoffs + initial.reshape(n_episodes, 1, n_agents, n_actions)[:, :0]
    flat = payoffs.reshape(n_episodes, n_updates, n_agents * n_actions)
    scores = linear_filter(flat, 1.0 - alpha_t, alpha_t, initial, chunk)
    return scores.reshape(n_episodes, n_updates, n_agents, n_actions)


class _TraceLogProbs(Protocol):
    """``[E, T-1, N]`` log-probabilities of the next actions given the counterfactual payoffs ``[E, T-1, N, A]``."""

    def __call__(
        self,
        learner: Learner,
        payoffs: Tensor,
        next_actions: Tensor,
        *,
        own_actions: Tensor,
        q0: Tensor | float | None,
        alpha: Tensor | float | None,
        epsilon: Tensor | float | None,
        chunk_size: int | None,
    ) -> Tensor: ...


def _logit_q_log_probs(
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
    """Eq. (2)-(3): scores by the exponential filter, then the logit policy with exploration."""
    assert isinstance(learner, LogitQ)  # guaranteed by the dispatch table
    scores = counterfactual_scores(
        payoffs,
        learner.alpha if alpha is None else alpha,
        learner.q0 if q0 is None else q0,
        chunk_size,
    )
    eps = _scalar(learner.epsilon if epsilon is None else epsilon, "epsilon", payoffs)
    log_policy = logit_log_policy(scores, learner.beta, eps)  # [E, T-1, N, A]
    return log_policy.gather(-1, next_actions[..., None]).squeeze(-1)


#: Parallel trace likelihoods by learner class. A learner whose state is a linear filter of the
#: counterfactual payoffs (e.g. Hedge: cumulative payoffs, decay 1) plugs in here.
_TRACE_LOG_PROBS: dict[type[Learner], _TraceLogProbs] = {
    LogitQ: _logit_q_log_probs,
    Hedge: hedge_log_probs,  # cumulative sum of u (diml_inverse.dynamics)
    SmoothFP: smooth_fp_log_probs,  # cumulative mean of u (diml_inverse.dynamics)
    BanditQ: bandit_q_trace_log_probs,  # time-varying filter of the realised payoffs (diml_inverse.dynamics)
}


def _trace_log_probs_for(learner: Learner) -> _TraceLogProbs:
    for cls in type(learner).__mro__:
        if cls in _TRACE_LOG_PROBS:
            return _TRACE_LOG_PROBS[cls]
    supported = ", ".join(f"{cls.__name__} ({cls.name!r})" for cls in _TRACE_LOG_PROBS)
    raise ConfigurationError(
        f"log_likelihood has no parallel form for learner {type(learner).__name__}; supported: {supported}. "
        "Pass one of those learners."
    )


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
        learner: The learning rule assumed for every agent (now :class:`~mechgym.learners.LogitQ`).
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
) -> tuple[Tensor, Tensor]:
    """The terms of Eq. (5) and the realised payoffs they were computed from, for all or some agents.

    The sum of the first output over agents is :func:`log_likelihood`'s ``reduction="none"``; restricted to
    a subset of agents it is an unbiased minibatch of the likelihood over agents (the counterfactual
    payoffs of a round still see every agent's action).

    Args:
        mechanism, actions, learner, q0, alpha, epsilon, chunk_size, validate: as in :func:`log_likelihood`.
        agents: Optional LongTensor ``[K]`` of agent indices; ``None`` for all ``N``. A ``q0`` with an agent
            axis (``[N, A]`` or ``[E, N, A]``) is indexed by it.

    Returns:
        ``(log_probs, payoffs)``, both ``[E, T-1, K]``: ``log pi_i(k+2)(a_i(k+2))`` and the realised payoff
        ``M(a(k+1))[i]`` of rounds ``1..T-1`` (1-indexed; the last round's payoff is not needed).
    """
    if not isinstance(mechanism, Mechanism):
        raise ConfigurationError(f"mechanism must be a mechgym Mechanism; got {type(mechanism).__name__}")
    trace_log_probs = _trace_log_probs_for(learner)
    _check_actions(actions, mechanism, validate)
    device = mechanism._device()
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
    payoffs = mechanism.counterfactual_payoffs(actions[:, :-1], agents)  # [E, T-1, K, A]: u(1..T-1), Eq. (1)
    next_actions = actions[:, 1:] if agents is None else actions[:, 1:, agents]
    log_probs = trace_log_probs(
        learner, payoffs, next_actions, own_actions=played, q0=q0, alpha=alpha, epsilon=epsilon, chunk_size=chunk_size
    )
    return log_probs, payoffs.gather(-1, played[..., None]).squeeze(-1)
