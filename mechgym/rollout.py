"""Vectorised rollouts: all episodes and agents of a mechanism game simulated at once in torch."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mechgym.devices import DeviceLike, resolve_device
from mechgym.errors import ConfigurationError
from mechgym.learners.base import Learner
from mechgym.mechanisms.base import Mechanism
from mechgym.random import sample_categorical, uniforms
from mechgym.traces.dataset import TraceDataset, TraceMetadata

if TYPE_CHECKING:
    from mechgym.env import MechanismGameEnv


def _check_counts(n_episodes: int, n_rounds: int, seed: int) -> None:
    for name, value, low in (("n_episodes", n_episodes, 1), ("n_rounds", n_rounds, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigurationError(f"{name} must be an integer >= {low}; got {value!r}")


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
) -> tuple[Tensor, Tensor]:
    """Simulate ``n_episodes`` independent episodes of learners playing ``mechanism``, on its device.

    Round ``t`` of episode ``e``: agent ``i`` draws its action from ``learner.policy(state)`` with the
    counter-based uniform ``uniforms(seed, episode_offset + e, t, i)``, receives ``M(a)[i]`` and updates
    its state from the counterfactual payoffs ``M(a', a_-i)[i]`` of every alternative ``a'``.

    Args:
        initial_state: Learner state before round 1, broadcastable to ``[E, N, A]`` (default: the learner's).

    Returns:
        ``(actions, rewards)``: LongTensor ``[E, T, N]`` and float tensor ``[E, T, N]``.
    """
    _check_counts(n_episodes, n_rounds, seed)
    n, a = mechanism.n_agents, mechanism.n_actions
    device = mechanism._device()
    state = learner.initial_state((n_episodes, n), a, device=device)
    if initial_state is not None:
        state = torch.as_tensor(initial_state, dtype=state.dtype, device=device).expand_as(state).clone()
    episodes = torch.arange(episode_offset, episode_offset + n_episodes, device=device)[:, None]
    agents = torch.arange(n, device=device)[None, :]
    actions = torch.empty(n_episodes, n_rounds, n, dtype=torch.long, device=device)
    rewards = torch.empty(n_episodes, n_rounds, n, dtype=state.dtype, device=device)
    for t in tqdm(range(n_rounds), desc="rollout", unit="round", disable=not progress, leave=False):
        joint = sample_categorical(learner.policy(state), uniforms(seed, episodes, t, agents, device=device))
        payoffs = mechanism.counterfactual_payoffs(joint)  # [E, N, A]
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
    if mechanism._device() != target:
        mechanism = copy.deepcopy(mechanism).to(target)
    actions, rewards = simulate(
        mechanism, learner, n_episodes, n_rounds, seed, episode_offset=episode_offset, progress=progress
    )
    extra = {"episode_offset": episode_offset} if episode_offset else {}
    env_kwargs = dict(game.env_kwargs)
    if n_rounds != game.n_rounds:
        env_kwargs["n_rounds"] = n_rounds
    metadata = TraceMetadata(
        n_agents=mechanism.n_agents,
        n_actions=mechanism.n_actions,
        env_id=game.env_id,
        env_kwargs=env_kwargs,
        learner=learner.to_dict(),
        seed=seed,
        extra=extra,
    )
    return TraceDataset(actions=actions.cpu().numpy(), rewards=rewards.float().cpu().numpy(), metadata=metadata)
