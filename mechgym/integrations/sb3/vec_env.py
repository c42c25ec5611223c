"""The ``N`` agents of one parallel game as the ``N`` sub-environments of an SB3 ``VecEnv``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from pettingzoo.utils.env import ParallelEnv
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

from mechgym.errors import ConfigurationError, MechGymError


class AgentsVecEnv(VecEnv):
    """The ``N`` agents of one parallel game as the ``N`` sub-environments of an SB3 ``VecEnv``.

    ``step(actions)`` plays the joint action ``actions [N]`` (entry ``i`` for ``possible_agents[i]``) and
    returns every agent's observation, reward and done flag. All agents finish together (mechgym games
    truncate after ``n_rounds``); the episode's last observation goes to ``infos[i]["terminal_observation"]``,
    ``infos[i]["TimeLimit.truncated"]`` says whether the end was a truncation (bootstrapped by SB3) rather
    than a termination, and the game is reset. ``seed(s)`` (called by SB3 models built with ``seed=s``)
    seeds the next reset of the game with ``s``.

    With ``agent_id=True`` the observation of agent ``i`` is the game's observation followed by the one-hot
    ``e_i`` (``[D + N]``), so that one parameter-shared policy can tell the agents apart.

    Args:
        env: A parallel environment (e.g. from :func:`mechgym.make`, possibly wrapped in
            :class:`~mechgym.traces.RecordTraces`) whose agents share one ``Box`` observation space and one
            ``Discrete(A)`` action space.
        agent_id: Append the one-hot agent id to the observations.

    Raises:
        ConfigurationError: agents with different or unsupported spaces.

    Example:
        >>> venv = AgentsVecEnv(RecordTraces(mechgym.make("mechgym/Congestion-v0", n_rounds=20)))
        >>> model = stable_baselines3.PPO("MlpPolicy", venv, n_steps=20, seed=0).learn(4 * 20 * 10)
    """

    def __init__(self, env: ParallelEnv[Any, Any, Any], *, agent_id: bool = True) -> None:
        self.env = env
        self.agents = list(env.possible_agents)
        if not self.agents:
            raise ConfigurationError("AgentsVecEnv needs an environment with at least one agent")
        base = env.observation_space(self.agents[0])
        actions = env.action_space(self.agents[0])
        if not isinstance(base, gymnasium.spaces.Box) or len(base.shape) != 1:
            raise ConfigurationError(f"AgentsVecEnv needs flat Box observations; got {base}")
        if not isinstance(actions, gymnasium.spaces.Discrete) or int(actions.start) != 0:
            raise ConfigurationError(f"AgentsVecEnv needs Discrete(A) actions numbered from 0; got {actions}")
        for agent in self.agents[1:]:
            if env.observation_space(agent) != base or env.action_space(agent) != actions:
                raise ConfigurationError(
                    f"AgentsVecEnv needs the same spaces for every agent; {agent!r} has "
                    f"{env.observation_space(agent)} and {env.action_space(agent)}, {self.agents[0]!r} has {base} "
                    f"and {actions}"
                )
        self.agent_id = bool(agent_id)
        n = len(self.agents)
        self._ids = np.eye(n, dtype=np.float32)
        if self.agent_id:
            low = np.concatenate([base.low, np.zeros(n, np.float32)]).astype(np.float32)
            high = np.concatenate([base.high, np.ones(n, np.float32)]).astype(np.float32)
            observation_space = gymnasium.spaces.Box(low, high, dtype=np.float32)
        else:
            observation_space = gymnasium.spaces.Box(base.low, base.high, dtype=np.float32)
        self._actions: np.ndarray | None = None
        super().__init__(n, observation_space, gymnasium.spaces.Discrete(int(actions.n)))

    def _stack(self, observations: Mapping[Any, Any]) -> np.ndarray:
        stacked = np.stack([np.asarray(observations[agent], dtype=np.float32) for agent in self.agents])
        return np.concatenate([stacked, self._ids], axis=1) if self.agent_id else stacked

    def reset(self) -> np.ndarray:
        """Reset the game (with the seed and options set by ``seed()``/``set_options()``, once)."""
        observations, infos = self.env.reset(seed=self._seeds[0], options=self._options[0] or None)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [dict(infos.get(agent, {})) for agent in self.agents]
        return self._stack(observations)

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the joint action ``[N]`` for :meth:`step_wait`."""
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Play the joint action; on the last round fill the terminal infos and reset the game."""
        if self._actions is None:
            raise MechGymError("AgentsVecEnv.step_wait() was called without step_async(actions)")
        joint = {agent: int(action) for agent, action in zip(self.agents, self._actions, strict=True)}
        self._actions = None
        observations, rewards, terminations, truncations, infos = self.env.step(joint)
        stacked = self._stack(observations)
        reward_array = np.array([rewards[agent] for agent in self.agents], dtype=np.float32)
        dones = np.array([terminations[agent] or truncations[agent] for agent in self.agents], dtype=bool)
        info_list = [dict(infos.get(agent, {})) for agent in self.agents]
        if dones.any():
            if not dones.all():
                raise MechGymError(
                    "AgentsVecEnv needs every agent to finish the episode in the same round; "
                    f"done: {[agent for agent, done in zip(self.agents, dones, strict=True) if done]}"
                )
            for i, agent in enumerate(self.agents):
                info_list[i]["terminal_observation"] = stacked[i]
                info_list[i]["TimeLimit.truncated"] = bool(truncations[agent] and not terminations[agent])
            stacked = self.reset()
        return stacked, reward_array, dones, info_list

    def close(self) -> None:
        """Close the game."""
        self.env.close()

    def _count(self, indices: VecEnvIndices) -> int:
        return len(list(self._get_indices(indices)))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The game's attribute, once per index (all sub-environments are the same game)."""
        return [getattr(self.env, attr_name)] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the game (shared by all sub-environments)."""
        setattr(self.env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the game once; its result is repeated for each index."""
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(
        self, wrapper_class: type[gymnasium.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Always ``False``: the sub-environments are agents of a PettingZoo game, not Gymnasium envs."""
        return [False] * self._count(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No images: mechgym games render text."""
        return [None] * self.num_envs
