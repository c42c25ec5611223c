"""The causal linear filter every parallel likelihood rests on, and the input checks the rules share.

The counterfactual payoffs ``u(t)`` (paper Eq. 1) depend only on the observed actions and the mechanism,
never on the learners' state, so a rule whose state is a fixed linear filter of them gets every state of
every round from one batched counterfactual evaluation and a causal filter over rounds, with no loop over
rounds. Logit-Q (Eq. 2) is the exponential filter::

    Q(t+1) = (1 - alpha)^t Q(1) + alpha * sum_{s <= t} (1 - alpha)^(t - s) u(s)

computed by :func:`linear_filter` (a lower-triangular decay matrix product, chunked so that memory stays
linear in ``T``, the chunk-end states carried by the same filter one level up).

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechgym.constants import constant_tensors
from mechgym.errors import ConfigurationError
from mechgym.learners import explore_log_policy

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "WHOLE_HORIZON_MAX_ROUNDS",
    "as_scalar",
    "check_payoffs",
    "counterfactual_scores",
    "decay_matrices",
    "initial_state",
    "linear_filter",
    "logit_filter_log_probs",
    "resolve_chunk_size",
    "time_major_filter",
]

#: Horizons of at most this many updates are filtered in one piece (one ``T x T`` decay matrix).
WHOLE_HORIZON_MAX_ROUNDS = 256
#: Chunk length of the filter for longer horizons (memory ``O(E T N A + C^2)``).
DEFAULT_CHUNK_SIZE = 128


def as_scalar(value: Tensor | float, name: str, like: Tensor) -> Tensor:
    """``value`` as a 0-dim tensor with ``like``'s dtype and device (differentiable if it was a tensor).

    Raises:
        ConfigurationError: ``value`` has more than one element (the message names it ``name``).
    """
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if tensor.numel() != 1:
        raise ConfigurationError(
            f"{name} must be a scalar (a float or a one-element tensor); got shape {tuple(tensor.shape)}"
        )
    return tensor.reshape(())


def initial_state(q0: Tensor | float, n_episodes: int, n_agents: int, n_actions: int, like: Tensor) -> Tensor:
    """``Q(1)`` broadcast to ``[E, N, A]`` (from a scalar, ``[A]``, ``[N, A]``, ``[E, N, A]``...).

    Raises:
        ConfigurationError: ``q0`` does not broadcast to ``[E, N, A]``.
    """
    target = (n_episodes, n_agents, n_actions)
    tensor = torch.as_tensor(q0, dtype=like.dtype, device=like.device)
    try:
        fits = torch.broadcast_shapes(tensor.shape, target) == target
    except RuntimeError:
        fits = False
    if not fits:
        raise ConfigurationError(
            f"q0 must be a scalar or a tensor broadcastable to [E, N, A] = {list(target)} (e.g. [N, A] per agent "
            f"and action); got shape {list(tensor.shape)}"
        )
    return tensor.expand(target)


def check_payoffs(payoffs: Tensor) -> None:
    """Raise :class:`~mechgym.errors.ConfigurationError` unless ``payoffs`` is 4-D, ``[E, T, N, A]``."""
    if payoffs.dim() != 4:
        raise ConfigurationError(f"payoffs must have shape [E, T, N, A]; got {tuple(payoffs.shape)}")


def resolve_chunk_size(chunk_size: int | None, n_updates: int) -> int:
    """The filter's chunk length for ``n_updates`` rounds: ``chunk_size`` capped at the horizon, or a default.

    ``None`` filters horizons of up to :data:`WHOLE_HORIZON_MAX_ROUNDS` in one piece and longer ones in chunks
    of :data:`DEFAULT_CHUNK_SIZE`.

    Raises:
        ConfigurationError: ``chunk_size`` is neither ``None`` nor a positive integer.
    """
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
    states = time_major_filter(time_major, keep, gain, initial.reshape(n_episodes * n_channels), chunk_size)
    return states.reshape(n_rounds, n_episodes, n_channels).transpose(0, 1)


def time_major_filter(
    inputs: Tensor, keep: Tensor | float, gain: Tensor | float, initial: Tensor | None, chunk_size: int
) -> Tensor:
    """:func:`linear_filter` on time-major ``inputs [T, M]`` and ``initial [M]``: states ``[T, M]``.

    ``keep`` and ``gain`` may be Python floats (then the decay matrices are built once per value, chunk, dtype
    and device, :func:`decay_matrices`) or 0-dim tensors (differentiable); ``initial=None`` is a zero state.
    """
    n_rounds, n_channels = inputs.shape
    chunk = min(max(chunk_size, 2), n_rounds)
    decay, initial_decay = decay_matrices(keep, gain, chunk, inputs)
    if n_rounds <= chunk:
        filtered = decay @ inputs
        return filtered if initial is None else filtered + initial_decay * initial

    n_chunks = -(-n_rounds // chunk)
    padded = torch.nn.functional.pad(inputs, (0, 0, 0, n_chunks * chunk - n_rounds))  # zeros after the end
    blocks = padded.reshape(n_chunks, chunk, n_channels).transpose(0, 1).reshape(chunk, n_channels * n_chunks)
    local = (decay @ blocks).reshape(chunk, n_chunks, n_channels)  # each chunk filtered from a zero state
    # state before chunk k: x_k = keep^C x_{k-1} + local_end_{k-1}, x_0 = initial
    keep_chunk = keep**chunk if isinstance(keep, float) else torch.pow(keep, chunk)
    carried = time_major_filter(local[-1, :-1], keep_chunk, 1.0, initial, chunk)
    # [n_chunks, M]: the state before each chunk (a zero state first when there is no initial one)
    before = torch.nn.functional.pad(carried, (0, 0, 1, 0)) if initial is None else torch.cat([initial[None], carried])
    states = local + initial_decay[:, :, None] * before
    return states.transpose(0, 1).reshape(n_chunks * chunk, n_channels)[:n_rounds]


def decay_matrices(keep: Tensor | float, gain: Tensor | float, chunk: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """The filter's ``[C, C]`` matrix ``gain keep^(j - s)`` (``s <= j``) and ``[C, 1]`` column ``keep^(j + 1)``.

    With float ``keep`` and ``gain`` (a learner's own constants) both are built once per value, chunk, dtype and
    device and shared, read-only, by every later call (a training step otherwise spends a dozen small
    operations on them); with tensors (learned parameters) they are built on every call, in the graph.
    """
    if isinstance(keep, float) and isinstance(gain, float):
        return _constant_decay_matrices(keep, gain, chunk, like.dtype, like.device)
    keep_t = torch.as_tensor(keep, dtype=like.dtype, device=like.device)
    gain_t = torch.as_tensor(gain, dtype=like.dtype, device=like.device)
    return _build_decay_matrices(keep_t, gain_t, chunk)


def _build_decay_matrices(keep: Tensor, gain: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    steps = torch.arange(chunk, device=keep.device, dtype=keep.dtype)
    lags = steps[:, None] - steps[None, :]
    # decay[j, s] = gain keep^(j - s) for s <= j; torch.pow keeps 0^0 = 1, so keep = 0 (alpha = 1) works
    decay = torch.where(lags >= 0, gain * torch.pow(keep, lags.clamp(min=0)), torch.zeros_like(lags))
    return decay, torch.pow(keep, steps + 1)[:, None]  # [C, C], [C, 1]: keep^(j + 1)


@constant_tensors(maxsize=64)
def _constant_decay_matrices(
    keep: float, gain: float, chunk: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    like = torch.empty((), dtype=dtype, device=device)
    return _build_decay_matrices(torch.full_like(like, keep), torch.full_like(like, gain), chunk)


def logit_filter_log_probs(
    payoffs: Tensor,
    keep: Tensor | float,
    gain: Tensor | float,
    q0: Tensor | float,
    beta: Tensor | float,
    epsilon: Tensor | float,
    next_actions: Tensor,
    chunk_size: int | None,
) -> Tensor:
    """Log-probabilities ``[E, T', N]`` of the next actions under a logit policy over linearly filtered scores.

    The scores are ``Q = linear_filter(u, keep, gain, q0)`` (:func:`linear_filter`; logit-Q: ``keep = 1 - alpha``,
    ``gain = alpha``, Eq. 2), the policy ``(1 - eps) softmax(beta Q) + eps / A`` (Eq. 3), read at
    ``next_actions``. The values are those of :func:`counterfactual_scores`, then
    :func:`~mechgym.learners.logit_log_policy` and the gather, to float rounding, computed in fewer and cheaper
    operations:

    * in round-major layout ``[T', A, E N]``: one copy of the payoffs, then one matrix product over all channels
      and no transpose after it; the log-softmax runs over the action axis, which is not the innermost one
      (torch's CPU reductions over a short innermost axis are several times slower);
    * ``beta`` folded into the filter (it is linear): ``beta Q`` is the filter with gain ``beta gain`` from
      ``beta q0``, and a zero ``q0`` adds nothing;
    * the exploration (:func:`~mechgym.learners.explore_log_policy`, element by element) applied to the played
      actions' log-softmax only, ``A`` times fewer entries.

    Args:
        payoffs: Counterfactual payoffs ``u(1..T')``, ``[E, T', N, A]``.
        keep: The filter's decay, a float or a 0-dim tensor (differentiable).
        gain: Its input weight, a float or a 0-dim tensor (differentiable).
        q0: Initial scores ``Q(1)``, a scalar or broadcastable to ``[E, N, A]`` (differentiable).
        beta: The logit policy's inverse temperature.
        epsilon: Its uniform exploration, a float or a one-element tensor (differentiable).
        next_actions: Actions of rounds ``2..T``, ``[E, T', N]``.
        chunk_size: Rounds per chunk of the filter (:func:`resolve_chunk_size`).

    Returns:
        ``[E, T', N]`` (a transposed view of a round-major tensor).

    Raises:
        ConfigurationError: ``payoffs`` is not 4-D, ``q0`` does not broadcast, or a bad ``chunk_size``.
    """
    check_payoffs(payoffs)
    n_episodes, n_updates, n_agents, n_actions = payoffs.shape
    chunk = resolve_chunk_size(chunk_size, n_updates)
    n_channels = n_actions * n_episodes * n_agents
    initial = None
    if isinstance(q0, Tensor) or q0 != 0.0:
        state = initial_state(q0, n_episodes, n_agents, n_actions, payoffs)  # [E, N, A]
        initial = (beta * state).permute(2, 0, 1).reshape(n_channels)
    if n_updates == 0:
        return payoffs.new_zeros(n_episodes, 0, n_agents)
    time_major = payoffs.permute(1, 3, 0, 2).reshape(n_updates, n_channels)  # [T', A E N]
    logits = time_major_filter(time_major, keep, gain * beta, initial, chunk)
    log_softmax = torch.log_softmax(logits.view(n_updates, n_actions, n_episodes * n_agents), dim=1)
    played = next_actions.long().permute(1, 0, 2).reshape(n_updates, 1, n_episodes * n_agents)
    picked = log_softmax.gather(1, played).view(n_updates, n_episodes, n_agents)
    return explore_log_policy(picked, epsilon, n_actions).transpose(0, 1)


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
    check_payoffs(payoffs)
    n_episodes, n_updates, n_agents, n_actions = payoffs.shape
    alpha_t = as_scalar(alpha, "alpha", payoffs)
    initial = initial_state(q0, n_episodes, n_agents, n_actions, payoffs).reshape(n_episodes, 1, n_agents * n_actions)
    chunk = resolve_chunk_size(chunk_size, n_updates)
    if n_updates == 0:
        return payoffs + initial.reshape(n_episodes, 1, n_agents, n_actions)[:, :0]
    flat = payoffs.reshape(n_episodes, n_updates, n_agents * n_actions)
    scores = linear_filter(flat, 1.0 - alpha_t, alpha_t, initial, chunk)
    return scores.reshape(n_episodes, n_updates, n_agents, n_actions)
