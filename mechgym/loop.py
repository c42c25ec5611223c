"""The plain PettingZoo loop: one :class:`~mechgym.learners.LearnerPolicy` per agent, one ``step`` per round.

It is the reference that :func:`mechgym.rollout` reproduces bit for bit, and the baseline of the rollout
benchmark.
"""

from __future__ import annotations

import numpy as np

from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError
from mechgym.learners.base import Learner
from mechgym.learners.policy import LearnerPolicy
from mechgym.traces.dataset import TraceDataset, TraceMetadata
from mechgym.validation import check_counter_range, check_int, check_seed


def play_episodes(
    env: MechanismGameEnv,
    learner: Learner | None,
    n_episodes: int,
    seed: int,
    n_rounds: int | None = None,
) -> TraceDataset:
    """Record ``n_episodes`` episodes of every agent running ``learner``, stepping the PettingZoo API.

    Episode ``e`` resets the environment with ``seed + e`` and gives agent ``i`` the policy
    ``LearnerPolicy(learner, A, i, seed, episode=e)``; every round each agent acts, the environment steps,
    and each agent observes its ``infos[agent]["counterfactual_payoffs"]`` and its own action.

    Args:
        env: The game (made with ``counterfactual_info=True``, the default).
        learner: The learning rule of every agent; ``None`` for ``env.default_learner``.
        n_episodes: Episodes ``E``.
        seed: Seed of the action draws (non-negative).
        n_rounds: Rounds ``T`` per episode; ``None`` for ``env.n_rounds``. Another value plays
            :meth:`MechanismGameEnv.with_n_rounds` (the same mechanism with that horizon), and the metadata's
            ``env_kwargs["n_rounds"]`` records it.

    Returns:
        A :class:`TraceDataset` with actions ``[E, T, N]``, realised payoffs ``[E, T, N]`` and metadata
        (environment id and kwargs, ``learner.to_dict()``, ``seed``).

    Raises:
        ConfigurationError: for counts out of range, or an environment without counterfactual infos.

    Example:
        >>> traces = mechgym.play_episodes(mechgym.make("mechgym/Congestion-v0"), LogitQ(), n_episodes=4, seed=0)
        >>> traces.actions.shape
        (4, 60, 4)
    """
    game = env.unwrapped
    if not isinstance(game, MechanismGameEnv):
        raise ConfigurationError(f"env must be a MechanismGameEnv; got {type(game).__name__}")
    n_episodes = check_int(n_episodes, "n_episodes", low=1)
    check_counter_range(0, n_episodes, "episode indices")
    seed = check_seed(seed)
    if not game.counterfactual_info:
        raise ConfigurationError(
            "play_episodes feeds the learners the counterfactual payoffs in the infos; "
            "make the environment with counterfactual_info=True"
        )
    if n_rounds is not None and check_int(n_rounds, "n_rounds", low=1) != game.n_rounds:
        env = game = game.with_n_rounds(n_rounds)
    learner = learner if learner is not None else game.default_learner
    n_agents, n_actions, horizon = game.n_agents, game.n_actions, game.n_rounds
    agents = game.possible_agents

    actions = np.empty((n_episodes, horizon, n_agents), dtype=np.int64)
    rewards = np.empty((n_episodes, horizon, n_agents), dtype=np.float32)
    for episode in range(n_episodes):
        observations, _ = env.reset(seed=seed + episode)
        policies = {
            agent: LearnerPolicy(learner, n_actions, i, seed, episode=episode) for i, agent in enumerate(agents)
        }
        for t in range(horizon):
            joint = {agent: policies[agent].act(observations[agent]) for agent in agents}
            observations, step_rewards, _, _, infos = env.step(joint)
            for i, agent in enumerate(agents):
                policies[agent].observe(infos[agent]["counterfactual_payoffs"], joint[agent])
                actions[episode, t, i] = joint[agent]
                rewards[episode, t, i] = step_rewards[agent]

    return TraceDataset(actions=actions, rewards=rewards, metadata=TraceMetadata.for_rollout(game, learner, seed))
