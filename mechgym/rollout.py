"""Vectorised rollouts: all episodes and agents of a mechanism game simulated at once in torch."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mechgym.devices import DeviceLike, device_of, resolve_device
from mechgym.errors import NonFinitePolicyError
from mechgym.learners.base import Learner
from mechgym.mechanisms.base import Mechanism, all_joint_actions
from mechgym.memory import check_memory as check_memory_budget
from mechgym.random import sample_categorical, uniforms
from mechgym.threads import Threads, torch_threads
from mechgym.traces.dataset import TraceDataset, TraceMetadata
from mechgym.validation import check_counter_range, check_int, check_seed

if TYPE_CHECKING:
    from mechgym.env import MechanismGameEnv

#: :func:`simulate` reads the counterfactual payoffs of games whose ``[A**N, N, A]`` table of them has at most this
#: many entries (and ``A**N`` at most the mechanism's ``max_table_size``) from that table, computed once.
MAX_LOOKUP_ELEMENTS = 1 << 24
#: :func:`simulate` hashes the counter-based uniforms of blocks of rounds holding about this many draws at once.
DRAW_BLOCK_ELEMENTS = 1 << 22


def check_simulation_counts(n_episodes: int, n_rounds: int, seed: int, episode_offset: int = 0) -> None:
    """Refuse counts that are not integers, seeds the generator does not tell apart and indices past its counters."""
    check_int(n_episodes, "n_episodes", low=1)
    check_int(n_rounds, "n_rounds", low=1)
    check_seed(seed)
    check_int(episode_offset, "episode_offset", low=0)
    check_counter_range(int(episode_offset), int(n_episodes), "episode indices (episode_offset + episode)")
    check_counter_range(0, int(n_rounds), "round indices")


def simulation_bytes(mechanism: Mechanism, n_episodes: int, n_rounds: int) -> float:
    """An upper estimate of the memory :func:`simulate` holds at once, in bytes.

    The recorded actions (int64) and rewards, a few learner states and counterfactual payoffs ``[E, N, A]``, one
    block of uniforms (float32), the counterfactual lookup of a small game, and the anonymous game's ``A x A`` rows
    of one distinct count vector with their hidden activations (a float estimate: the sizes may be astronomically
    large).
    """
    e, t, n, a = float(n_episodes), float(n_rounds), float(mechanism.n_agents), float(mechanism.n_actions)
    element = 8.0  # float64 states at most
    recorded = e * t * n * (8.0 + element)
    per_round = 6.0 * e * n * a * element + e * n * 8.0 * 4
    draws = min(e * t * n, max(float(DRAW_BLOCK_ELEMENTS), e * n)) * 4.0
    lookup = float(mechanism.n_joint_actions) * n * a * element if uses_lookup(mechanism) else 0.0
    hidden = float(getattr(mechanism, "hidden", 0) or 0)
    unit = a * a * max(hidden, 1.0) * 4.0 * 3 if mechanism.anonymous else n * a * n * 8.0 * 2
    return recorded + per_round + draws + lookup + unit


def uses_lookup(mechanism: Mechanism) -> bool:
    """Whether :func:`simulate` reads the counterfactual payoffs from one table (see :func:`counterfactual_lookup`)."""
    n_joint = mechanism.n_joint_actions
    return (
        n_joint <= mechanism.max_table_size
        and n_joint * mechanism.n_agents * mechanism.n_actions <= MAX_LOOKUP_ELEMENTS
    )


def counterfactual_lookup(mechanism: Mechanism) -> Callable[[Tensor], Tensor]:
    """``joint actions [..., N] -> counterfactual payoffs [..., N, A]`` with the values of
    :meth:`~mechgym.mechanisms.Mechanism.counterfactual_payoffs_batch_invariant`, fast.

    Small games (:func:`uses_lookup`) compute that method once on every joint action, ``[A**N, N, A]``, and then
    read a round's payoffs with one index per joint action. The method's every value is independent of the batch
    it is computed in, so the table gives the same bits as calling it every round (for a game with a payoff table
    both read the same table entries). Larger games call the method itself.
    """
    if not uses_lookup(mechanism):
        return mechanism.counterfactual_payoffs_batch_invariant
    n, a, device = mechanism.n_agents, mechanism.n_actions, device_of(mechanism)
    table = mechanism.counterfactual_payoffs_batch_invariant(all_joint_actions(n, a, device))  # [A**N, N, A]
    strides = a ** torch.arange(n - 1, -1, -1, device=device)
    return lambda joint: table[(joint * strides).sum(-1)]


def _check_finite_policy(probabilities: Tensor, round_index: int, episode_offset: int, learner: Learner) -> None:
    if math.isfinite(float(probabilities.sum())):  # one reduction: a NaN or an infinity makes the sum non-finite
        return
    finite = torch.isfinite(probabilities).all(-1)
    if bool(finite.all()):  # finite values whose sum overflowed
        return
    episode, agent = (int(i) for i in (~finite).nonzero()[0][:2])
    raise NonFinitePolicyError(
        f"the learners' choice probabilities are not finite at episode {episode_offset + episode}, "
        f"round {round_index}, agent {agent} ({learner!r}): payoffs times the learner's sensitivity overflowed the "
        f"{probabilities.dtype} range or the mechanism returned NaN. Scale the mechanism's payoffs down, use a "
        "smaller beta/eta, or check the mechanism for NaN"
    )


@torch.no_grad()
def simulate(
    mechanism: Mechanism,
    learner: Learner,
    n_episodes: int,
    n_rounds: int,
    seed: int,
    *,
    episode_offset: int = 0,
    progress: bool = False,
    initial_state: Tensor | None = None,
    check_memory: bool = True,
) -> tuple[Tensor, Tensor]:
    """Simulate ``n_episodes`` independent episodes of learners playing ``mechanism``, on its device.

    Round ``t`` of episode ``e``: agent ``i`` draws its action from ``learner.policy(state)`` with the
    counter-based uniform ``uniforms(seed, episode_offset + e, t, i)``, receives ``M(a)[i]`` and updates
    its state from the counterfactual payoffs ``M(a', a_-i)[i]`` of every alternative ``a'``
    (:meth:`~mechgym.mechanisms.Mechanism.counterfactual_payoffs_batch_invariant`, so every value is the one a
    single environment step computes). For speed the uniforms of many rounds are hashed at once
    (:data:`DRAW_BLOCK_ELEMENTS`) and small games read the counterfactual payoffs from a table computed once
    (:func:`counterfactual_lookup`); neither changes a bit of the result.

    Args:
        initial_state: Learner state before round 1, broadcastable to ``[E, N, A]`` (default: the learner's).
        check_memory: Refuse sizes whose estimated memory (:func:`simulation_bytes`) exceeds what the device has.

    Returns:
        ``(actions, rewards)``: LongTensor ``[E, T, N]`` and float tensor ``[E, T, N]``.

    Raises:
        ConfigurationError: counts that are not positive integers, a seed outside ``[0, 2**64)``, or episode
            indices past the generator's 32-bit counters.
        MemoryBudgetError: the estimate does not fit (unless ``check_memory=False``).
        NonFinitePolicyError: a choice probability became NaN or infinite (payoffs times beta overflowed).
    """
    check_simulation_counts(n_episodes, n_rounds, seed, episode_offset)
    n, a = mechanism.n_agents, mechanism.n_actions
    device = device_of(mechanism)
    if check_memory:
        check_memory_budget(
            simulation_bytes(mechanism, n_episodes, n_rounds),
            f"a simulation of {n_episodes} episodes x {n_rounds} rounds x {n} agents x {a} actions",
            device=device,
        )
    state = learner.initial_state((n_episodes, n), a, device=device)
    if initial_state is not None:
        state = torch.as_tensor(initial_state, dtype=state.dtype, device=device).expand_as(state).clone()
    counterfactuals = counterfactual_lookup(mechanism)
    episodes = torch.arange(episode_offset, episode_offset + n_episodes, device=device)[:, None, None]
    agents = torch.arange(n, device=device)
    block = max(1, DRAW_BLOCK_ELEMENTS // (n_episodes * n))
    actions = torch.empty(n_episodes, n_rounds, n, dtype=torch.long, device=device)
    rewards = torch.empty(n_episodes, n_rounds, n, dtype=state.dtype, device=device)
    for t in tqdm(range(n_rounds), desc="rollout", unit="round", disable=not progress, leave=False):
        if t % block == 0:  # the uniforms of rounds [t, t + block): [E, block, N]
            rounds = torch.arange(t, min(t + block, n_rounds), device=device)[None, :, None]
            draws = uniforms(seed, episodes, rounds, agents, device=device)
        probabilities = learner.policy(state)
        _check_finite_policy(probabilities, t, episode_offset, learner)
        joint = sample_categorical(probabilities, draws[:, t % block])
        payoffs = counterfactuals(joint)  # [E, N, A]
        actions[:, t] = joint
        rewards[:, t] = payoffs.gather(-1, joint[..., None]).squeeze(-1)
        state = learner.update(state, payoffs, joint)
    return actions, rewards


def rollout(
    env: str | MechanismGameEnv,
    learner: Learner | None = None,
    n_episodes: int = 16,
    n_rounds: int | None = None,
    seed: int = 0,
    *,
    device: DeviceLike = "cpu",
    progress: bool = False,
    episode_offset: int = 0,
    check_memory: bool = True,
    threads: Threads = None,
) -> TraceDataset:
    """Record learners playing a mechgym game, all episodes and agents at once.

    Bit-identical to stepping the PettingZoo environment with one
    :class:`~mechgym.learners.LearnerPolicy` per agent (see :func:`mechgym.play_episodes`) for the same
    learner and seed: both draw from :func:`mechgym.random.uniforms`.

    Args:
        env: A registered id (made with its default kwargs) or an environment from :func:`mechgym.make`.
        learner: The learning rule every agent runs; ``None`` for the environment's default learner.
        n_episodes: Episodes ``E``.
        n_rounds: Rounds ``T`` per episode; ``None`` for the environment's ``n_rounds``.
        seed: Seed of the action draws.
        device: Where to simulate (``"auto"`` picks CUDA when available).
        progress: Show a progress bar over rounds.
        episode_offset: Index of the first episode (to extend a dataset with more episodes).
        check_memory: Refuse sizes whose estimated memory exceeds what the device has (see :func:`simulate`).
        threads: Torch CPU threads while simulating: a count or ``"auto"`` (one thread for small games and on a
            loaded machine; :mod:`mechgym.threads`); ``None`` (the default) keeps torch's current setting, the one
            the PettingZoo loop runs at (the tests check that both give the same traces at 1 and 2 threads).

    Returns:
        A :class:`TraceDataset` with actions, realised payoffs and full provenance metadata.

    Example:
        >>> traces = mechgym.rollout("mechgym/Congestion-v0", n_episodes=48, n_rounds=60, seed=0)
    """
    from mechgym.registration import make

    game = make(env) if isinstance(env, str) else env.unwrapped
    mechanism = game.mechanism
    learner = learner if learner is not None else game.default_learner
    n_rounds = game.n_rounds if n_rounds is None else n_rounds
    target = resolve_device(device)
    if device_of(mechanism) != target:
        mechanism = copy.deepcopy(mechanism).to(target)
    work = n_episodes * mechanism.n_agents * mechanism.n_actions  # the payoffs of one round, [E, N, A]
    with torch_threads(threads, work) if threads is not None else contextlib.nullcontext():
        actions, rewards = simulate(
            mechanism,
            learner,
            n_episodes,
            n_rounds,
            seed,
            episode_offset=episode_offset,
            progress=progress,
            check_memory=check_memory,
        )
    extra = {"episode_offset": episode_offset} if episode_offset else {}
    metadata = TraceMetadata.for_rollout(game, learner, seed, n_rounds=n_rounds, extra=extra)
    return TraceDataset(actions=actions.cpu().numpy(), rewards=rewards.float().cpu().numpy(), metadata=metadata)
