"""Stable-Baselines3 agents (PPO, A2C, DQN) learning to play mechgym games, with every joint action recorded.

Two set-ups (``pip install '.[sb3]'``):

* **independent learners** (``shared=False``): one SB3 model per agent, stepped in lockstep. Every round each
  model's policy picks its agent's action, the joint action steps the game once, and each model stores its
  own transition in its own rollout buffer (PPO, A2C) or replay buffer (DQN) and trains on its own schedule.
  (Round-robin ``learn()`` calls would be a different, alternating dynamic.)
* **parameter sharing** (``shared=True``): one model sees the ``N`` agents as the ``N`` sub-environments of
  :class:`AgentsVecEnv`, whose observations carry a one-hot agent id.

Both run the same loop, a transcription of SB3's own ``collect_rollouts`` (on- and off-policy) with one model
per group of agents, so the number of rounds played is exactly ``n_episodes * n_rounds`` and every one of
them is recorded by a :class:`~mechgym.traces.RecordTraces` wrapper around the game.

The horizon is a truncation, never a termination: at the end of an episode :class:`AgentsVecEnv` reports
``infos[i]["TimeLimit.truncated"] = True`` with the last observation in ``infos[i]["terminal_observation"]``;
PPO and A2C add ``gamma V(terminal observation)`` to the last reward (as SB3 does) and DQN's replay buffer
bootstraps the transition from that observation (``handle_timeout_termination``).

Randomness: SB3 draws from the global generators of ``random``, NumPy and torch (policy initialisation,
action sampling, minibatch order, epsilon-greedy exploration) and seeds them when a model is built with a
seed. :func:`train_sb3` builds model ``k`` with the ``k``-th seed of ``numpy.random.SeedSequence(seed)``
inside a context that restores the caller's generator states afterwards, so a run is reproducible from
``seed`` and leaves the caller's random streams untouched.
"""

from __future__ import annotations

try:
    import stable_baselines3  # noqa: F401  (fail here, with the fix, rather than deep inside a submodule)
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "mechgym.integrations.sb3 needs Stable-Baselines3; install it with pip install '.[sb3]' "
        "(or pip install stable-baselines3)"
    ) from error

from mechgym.integrations.sb3.train import ALGORITHMS, DEFAULT_HYPERPARAMETERS, Algorithm, SB3Agents, train_sb3
from mechgym.integrations.sb3.vec_env import AgentsVecEnv

__all__ = [
    "ALGORITHMS",
    "DEFAULT_HYPERPARAMETERS",
    "AgentsVecEnv",
    "Algorithm",
    "SB3Agents",
    "train_sb3",
]
