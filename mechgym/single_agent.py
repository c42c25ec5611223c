"""A single-agent Gymnasium view of a mechanism game: one agent learns, the others are simulated.

Every mechgym id is also registered in Gymnasium's registry, so ``gymnasium.make("mechgym:mechgym/Congestion-v0")``
(the ``mechgym:`` prefix imports mechgym first, which registers the ids) returns a :class:`SingleAgentView`
that Stable-Baselines3 and other single-agent libraries can train on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import gymnasium
import numpy as np
import torch

from mechgym.env import MechanismGameEnv, RenderMode
from mechgym.errors import ConfigurationError
from mechgym.learners.base import Learner
from mechgym.learners.policy import LearnerPolicy
from mechgym.random import sample_categorical, uniforms
from mechgym.validation import is_integer

Others = Literal["learners", "uniform"] | Sequence[float] | np.ndarray

#: ``reset()`` without a seed and no earlier seed draws the others' seed below this bound.
_SEED_BOUND = 2**31


class FixedPolicy:
    """A policy that plays fixed probabilities, drawing from the same counter-based numbers as :class:`LearnerPolicy`.

    Args:
        probabilities: Choice probabilities ``[A]``.
        agent_index: The agent's position ``i`` in ``possible_agents``.
        seed: The rollout seed.
        episode: Episode index (round ``t`` draws ``uniforms(seed, episode, t, agent_index)``).
    """

    def __init__(self, probabilities: np.ndarray, agent_index: int, seed: int, episode: int = 0) -> None:
        self._probabilities = torch.as_tensor(probabilities, dtype=torch.float32)
        self.agent_index = int(agent_index)
        self.seed = int(seed)
        self.reset(episode)

    def reset(self, episode: int) -> None:
        """Start a new episode at round 0."""
        self.episode = int(episode)
        self.round = 0

    def probabilities(self) -> np.ndarray:
        """The choice probabilities ``[A]``."""
        return self._probabilities.numpy()

    def act(self, observation: Any = None) -> int:
        """Draw this round's action."""
        u = uniforms(self.seed, self.episode, self.round, self.agent_index)
        return int(sample_categorical(self._probabilities, u))

    def observe(self, counterfactual_payoffs: Any, action: int) -> None:
        """Advance the round (a fixed policy does not learn)."""
        self.round += 1


def _fixed_probabilities(others: Sequence[float] | np.ndarray, n_actions: int) -> np.ndarray:
    probabilities = np.asarray(others, dtype=np.float64)
    if probabilities.shape != (n_actions,):
        raise ConfigurationError(
            f"others as a probability vector must have shape ({n_actions},) (one entry per action); "
            f"got shape {probabilities.shape}"
        )
    total = probabilities.sum()
    if not np.isfinite(probabilities).all() or (probabilities < 0).any() or abs(total - 1.0) > 1e-6:
        raise ConfigurationError(
            f"others as a probability vector must be non-negative and sum to 1; got {probabilities.tolist()}"
        )
    return (probabilities / total).astype(np.float32)


class SingleAgentView(gymnasium.Env[np.ndarray, np.int64]):
    """One agent of a :class:`MechanismGameEnv` as a Gymnasium environment; the other agents are simulated.

    The learning agent sees the game's observation (the previous joint action, see
    :class:`MechanismGameEnv`), earns its payoff and is truncated after ``n_rounds`` rounds. The others play
    either learners (``others="learners"``: one :class:`~mechgym.learners.LearnerPolicy` each, running
    ``others_learner`` or the game's default learner) or a fixed mixed strategy (``"uniform"`` or a
    probability vector ``[A]``). Their draws come from :func:`mechgym.random.uniforms` with the seed of the
    last seeded ``reset``; each unseeded ``reset`` after it starts the next episode of that seed.

    Args:
        env: The game.
        agent: Index of the learning agent.
        others: How the other agents play.
        others_learner: The others' learning rule when ``others="learners"``; ``None`` for
            ``env.default_learner``.

    Attributes:
        env: The underlying parallel environment.
        agent: The learning agent's name (e.g. ``"agent_0"``).

    Example:
        >>> env = gymnasium.make("mechgym:mechgym/Congestion-v0", n_rounds=30)
        >>> model = stable_baselines3.PPO("MlpPolicy", env).learn(10_000)
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 - Gymnasium declares metadata as a plain class attribute
        "render_modes": MechanismGameEnv.metadata["render_modes"],
        "render_fps": MechanismGameEnv.metadata["render_fps"],
    }

    def __init__(
        self,
        env: MechanismGameEnv,
        agent: int = 0,
        others: Others = "learners",
        others_learner: Learner | None = None,
    ) -> None:
        if not isinstance(env, MechanismGameEnv):
            raise ConfigurationError(f"env must be a MechanismGameEnv; got {type(env).__name__}")
        if not is_integer(agent) or not 0 <= agent < env.n_agents:
            raise ConfigurationError(f"agent must be an index in [0, {env.n_agents}); got {agent!r}")
        if others_learner is not None and not isinstance(others_learner, Learner):
            raise ConfigurationError(f"others_learner must be a mechgym Learner or None; got {others_learner!r}")
        self.env = env
        self.agent_index = int(agent)
        self.agent = env.possible_agents[self.agent_index]
        self.render_mode: RenderMode | None = env.render_mode
        self.observation_space = env.observation_space(self.agent)
        self.action_space = env.action_space(self.agent)

        self._learner: Learner | None = None
        self._probabilities: np.ndarray | None = None
        if isinstance(others, str):
            if others == "learners":
                if not env.counterfactual_info:
                    raise ConfigurationError(
                        "others='learners' needs the counterfactual payoffs in the infos; "
                        "make the game with counterfactual_info=True"
                    )
                self._learner = others_learner if others_learner is not None else env.default_learner
            elif others == "uniform":
                self._probabilities = np.full(env.n_actions, 1.0 / env.n_actions, dtype=np.float32)
            else:
                raise ConfigurationError(
                    f"others must be 'learners', 'uniform' or a probability vector; got {others!r}"
                )
        else:
            self._probabilities = _fixed_probabilities(others, env.n_actions)

        self._seed: int | None = None
        self._episode = 0
        self._policies: dict[str, LearnerPolicy | FixedPolicy] = {}

    @property
    def others(self) -> dict[str, LearnerPolicy | FixedPolicy]:
        """The other agents' policies of the current episode, by agent name."""
        return self._policies

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: the game resets and the other agents start afresh.

        Args:
            seed: Seeds :attr:`np_random`, the game and the others' draws (episode 0 of this seed).
                Without a seed the next episode of the last seed is played.
            options: Ignored.

        Returns:
            ``(observation, info)`` of the learning agent.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._seed, self._episode = int(seed), 0
        elif self._seed is None:
            self._seed, self._episode = int(self.np_random.integers(_SEED_BOUND)), 0
        else:
            self._episode += 1
        observations, infos = self.env.reset(seed=seed)
        n_actions = self.env.n_actions
        self._policies = {}
        for index, name in enumerate(self.env.possible_agents):
            if index == self.agent_index:
                continue
            if self._learner is not None:
                self._policies[name] = LearnerPolicy(self._learner, n_actions, index, self._seed, self._episode)
            else:
                assert self._probabilities is not None
                self._policies[name] = FixedPolicy(self._probabilities, index, self._seed, self._episode)
        return observations[self.agent], infos[self.agent]

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play one round: the learning agent's ``action`` against the others' draws.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``terminated`` is always ``False`` and
            ``truncated`` is ``True`` after ``n_rounds`` rounds.

        Raises:
            InvalidActionError: if ``action`` is not an integer in ``[0, A)``.
        """
        actions: dict[str, Any] = {name: policy.act() for name, policy in self._policies.items()}
        actions[self.agent] = action
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        for name, policy in self._policies.items():
            policy.observe(infos[name].get("counterfactual_payoffs"), actions[name])
        return (
            observations[self.agent],
            rewards[self.agent],
            terminations[self.agent],
            truncations[self.agent],
            infos[self.agent],
        )

    def render(self) -> str | np.ndarray | None:
        """The game's rendering of the current round (see :meth:`MechanismGameEnv.render`).

        Text with ``render_mode="ansi"``, a uint8 image ``[H, W, 3]`` with ``"rgb_array"`` (the learning agent is
        the row of :attr:`agent`), ``None`` without a render mode.
        """
        return self.env.render()

    def close(self) -> None:
        """Close the game."""
        self.env.close()

    def __repr__(self) -> str:
        return f"SingleAgentView({self.env!r}, agent={self.agent!r})"


def make_single_agent_env(
    env_id: str,
    *,
    agent: int = 0,
    others: Others = "learners",
    others_learner: Learner | dict[str, Any] | None = None,
    render_mode: RenderMode | None = None,
    **env_kwargs: Any,
) -> SingleAgentView:
    """Gymnasium's entry point for every mechgym id: ``mechgym.make(env_id, **env_kwargs)`` seen by one agent.

    Args:
        env_id: The registered id.
        agent: Index of the learning agent.
        others: ``"learners"``, ``"uniform"`` or a probability vector ``[A]``.
        others_learner: The others' learning rule (a Learner or its ``to_dict()``); ``None`` for the game's.
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"`` (Stable-Baselines3's ``make_vec_env`` asks for
            ``"rgb_array"``).
        **env_kwargs: Keyword arguments of the game (see :func:`mechgym.make`).

    Raises:
        ConfigurationError: for another render mode (and see :func:`mechgym.make` and :class:`SingleAgentView`).
    """
    from mechgym.envs import resolve_learner
    from mechgym.registration import make

    env = make(env_id, render_mode=render_mode, **env_kwargs)
    learner = resolve_learner(others_learner, env.default_learner)
    return SingleAgentView(env, agent=agent, others=others, others_learner=learner)
