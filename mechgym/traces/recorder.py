"""``RecordTraces``: a PettingZoo ParallelEnv wrapper that records every joint action, whoever plays."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo.utils.env import ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper

from mechgym.errors import ConfigurationError, TraceDatasetError
from mechgym.traces.dataset import TraceDataset, TraceMetadata

#: Marks an agent that did not act in a round (agents that left the episode early).
_MISSING = -1

_DERIVED_FIELDS = ("n_agents", "n_actions")


class RecordTraces(BaseParallelWrapper[Any, Any, Any]):
    """Record the joint actions (and rewards) of every step of a ParallelEnv with Discrete action spaces.

    Whatever picks the actions (mechgym learners, SB3 models, scripted policies, a human), the wrapper
    sees the joint action passed to :meth:`step`. Episodes are kept when they complete (every agent
    terminated or truncated); an episode cut short by :meth:`reset` is dropped. Attributes of the wrapped
    environment (``mechanism``, ``env_id``, ``n_rounds`` ...) are forwarded, and ``unwrapped`` is the
    innermost environment.

    Args:
        env: The environment; every agent needs a ``Discrete(A)`` action space with the same ``A``
            starting at 0.
        record_rewards: Also record each agent's reward.

    Raises:
        ConfigurationError: if the action spaces are not ``Discrete(A)`` with one ``A`` for all agents.

    Example:
        >>> env = RecordTraces(mechgym.make("mechgym/Congestion-v0"))
        >>> ...  # play episodes with any agents
        >>> traces = env.dataset(learner=LogitQ().to_dict(), seed=0)
        >>> traces.save("traces.parquet")
    """

    def __init__(self, env: ParallelEnv[Any, Any, Any], *, record_rewards: bool = True) -> None:
        super().__init__(env)
        self.record_rewards = bool(record_rewards)
        self._agent_order = list(env.possible_agents)
        self._agent_index = {agent: i for i, agent in enumerate(self._agent_order)}
        self._n_actions = self._check_action_spaces(env)
        self._episodes: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._reset_seeds: list[int | None] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[np.ndarray] = []
        self._seed: int | None = None
        self._recording = False

    def _check_action_spaces(self, env: ParallelEnv[Any, Any, Any]) -> int:
        if not self._agent_order:
            raise ConfigurationError("RecordTraces needs an environment with at least one agent in possible_agents")
        sizes = {}
        for agent in self._agent_order:
            space = env.action_space(agent)
            if not isinstance(space, spaces.Discrete) or int(space.start) != 0:
                raise ConfigurationError(
                    f"RecordTraces records Discrete(A) actions numbered from 0; agent {agent!r} has action space "
                    f"{space}"
                )
            sizes[agent] = int(space.n)
        if len(set(sizes.values())) != 1:
            raise ConfigurationError(f"RecordTraces needs the same number of actions for every agent; got {sizes}")
        return next(iter(sizes.values()))

    # -- the ParallelEnv API -----------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, dict[str, Any]]]:
        """Reset the environment and start recording a new episode (an unfinished one is dropped)."""
        result = self.env.reset(seed=seed, options=options)
        self._actions, self._rewards = [], []
        self._seed = None if seed is None else int(seed)
        self._recording = True
        return result

    def step(
        self, actions: dict[Any, Any]
    ) -> tuple[
        dict[Any, Any],
        dict[Any, float],
        dict[Any, bool],
        dict[Any, bool],
        dict[Any, dict[str, Any]],
    ]:
        """Step the environment, then record the joint action (a step the environment rejects is not recorded)."""
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        if self._recording:
            self._actions.append(self._joint_action(actions))
            if self.record_rewards:
                self._rewards.append(self._joint_reward(rewards))
            if not self.env.agents:
                self._finish_episode()
        return observations, rewards, terminations, truncations, infos

    def _joint_action(self, actions: Mapping[Any, Any]) -> np.ndarray:
        joint = np.full(len(self._agent_order), _MISSING, dtype=np.int64)
        for agent, action in actions.items():
            index = self._agent_index.get(agent)
            if index is not None:
                joint[index] = int(np.asarray(action).item())
        return joint

    def _joint_reward(self, rewards: Mapping[Any, Any]) -> np.ndarray:
        joint = np.full(len(self._agent_order), math.nan, dtype=np.float64)
        for agent, reward in rewards.items():
            index = self._agent_index.get(agent)
            if index is not None:
                joint[index] = float(np.asarray(reward).item())
        return joint

    def _finish_episode(self) -> None:
        actions = np.stack(self._actions)
        rewards = np.stack(self._rewards) if self.record_rewards else None
        self._episodes.append((actions, rewards))
        self._reset_seeds.append(self._seed)
        self._actions, self._rewards = [], []
        self._recording = False

    # -- the recording -----------------------------------------------------------------------
    @property
    def n_episodes(self) -> int:
        """Number of completed episodes recorded so far."""
        return len(self._episodes)

    def clear(self) -> None:
        """Forget the completed episodes and drop the episode in progress (recording resumes at the next reset)."""
        self._episodes, self._reset_seeds = [], []
        self._actions, self._rewards = [], []
        self._recording = False

    def dataset(self, **metadata_overrides: Any) -> TraceDataset:
        """The completed episodes as a :class:`TraceDataset` ``[E, T, N]``.

        The metadata holds ``n_agents``, ``n_actions``, ``env_id`` and ``env_kwargs`` of the wrapped
        environment (when it has them) and, in ``extra``, the seed given to each episode's ``reset``.

        Args:
            **metadata_overrides: :class:`TraceMetadata` fields to set, e.g. ``learner`` (a dict or a
                :class:`~mechgym.learners.Learner`), ``seed`` or ``extra`` (merged into the recorded extra).

        Returns:
            The dataset (a copy: recording more episodes does not change it).

        Raises:
            TraceDatasetError: if no episode has completed, episodes have different lengths, an agent skipped
                a round, a reward is missing or not finite, or an override is not a metadata field.
        """
        if not self._episodes:
            raise TraceDatasetError(
                "no completed episodes recorded yet; step the environment until every agent is done "
                "(an episode interrupted by reset() is not kept)"
            )
        lengths = [len(actions) for actions, _ in self._episodes]
        if len(set(lengths)) != 1:
            raise TraceDatasetError(
                f"the recorded episodes have different lengths {sorted(set(lengths))} (rounds); a TraceDataset "
                "needs equal-length episodes: record with a fixed horizon, or clear() and record again"
            )
        actions = np.stack([actions for actions, _ in self._episodes])
        if (actions == _MISSING).any():
            episode, round_, agent = (int(i) for i in np.argwhere(actions == _MISSING)[0])
            raise TraceDatasetError(
                f"agent {self._agent_order[agent]!r} did not act in round {round_} of recorded episode {episode}; "
                "a TraceDataset needs every agent to act in every round"
            )
        rewards = None
        if self.record_rewards:
            rewards = np.stack([rewards for _, rewards in self._episodes])  # type: ignore[misc]
        metadata = self._metadata(metadata_overrides)
        return TraceDataset(actions=actions, rewards=rewards, metadata=metadata)

    def _metadata(self, overrides: dict[str, Any]) -> TraceMetadata:
        known = set(TraceMetadata.__dataclass_fields__) - set(_DERIVED_FIELDS)
        for key in overrides:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise TraceDatasetError(
                    f"cannot set metadata field {key!r}.{hint} Settable fields: {', '.join(sorted(known))}"
                    + (" (n_agents and n_actions come from the environment)" if key in _DERIVED_FIELDS else "")
                )
        overrides = dict(overrides)
        learner = overrides.get("learner")
        if learner is not None and hasattr(learner, "to_dict"):
            overrides["learner"] = learner.to_dict()
        game = self.env.unwrapped
        extra = {"recorded_by": "RecordTraces", "reset_seeds": list(self._reset_seeds)}
        extra.update(overrides.pop("extra", None) or {})
        fields: dict[str, Any] = {
            "n_agents": len(self._agent_order),
            "n_actions": self._n_actions,
            "env_id": getattr(game, "env_id", None),
            "env_kwargs": dict(getattr(game, "env_kwargs", None) or {}),
            "extra": extra,
        }
        fields.update(overrides)
        return TraceMetadata(**fields)
