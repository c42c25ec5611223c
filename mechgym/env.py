"""The PettingZoo adapter: a repeated stateless game whose payoffs come from a mechanism.

Shapes: ``N`` agents, ``A`` actions per agent, ``T`` rounds per episode.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, Literal

import gymnasium
import numpy as np
import torch
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from mechgym.devices import device_of
from mechgym.errors import ConfigurationError, InvalidActionError, MechGymError, suggest
from mechgym.learners.base import Learner
from mechgym.learners.logit_q import LogitQ
from mechgym.mechanisms.base import Mechanism
from mechgym.memory import check_memory
from mechgym.validation import is_integer

RenderMode = Literal["ansi", "rgb_array"]

#: Colours (RGB) of the ``rgb_array`` frame.
_BACKGROUND = (255, 255, 255)
_CELL = (228, 228, 228)
_PLAYED = (31, 119, 180)
_GAIN = (44, 160, 44)
_LOSS = (214, 39, 40)
_PROGRESS = (110, 110, 110)


#: Measured memory of one agent's spaces, name, index entry and step dicts (about 1.8-2.0 KB), rounded up.
ENV_BYTES_PER_AGENT = 2048


def _check_n_rounds(n_rounds: Any) -> int:
    if not is_integer(n_rounds) or n_rounds < 1:
        raise ConfigurationError(f"n_rounds must be an integer >= 1; got {n_rounds!r}")
    return int(n_rounds)


def _check_render_mode(render_mode: Any, supported: list[str]) -> None:
    """Refuse a render mode the game does not draw, naming the ones it does."""
    if render_mode is None or render_mode in supported:
        return
    hint = (
        " mechgym opens no window: make the game with render_mode='rgb_array' and show or save the frames"
        if render_mode == "human"
        else ""
    )
    raise ConfigurationError(f"{suggest(str(render_mode), supported, 'render_mode')} Pass None for no rendering.{hint}")


class MechanismGameEnv(ParallelEnv[str, np.ndarray, int]):
    """A repeated stateless game: every round each agent picks one of ``A`` actions and is paid ``M(a)[i]``.

    Agents are ``"agent_0"`` … ``"agent_{N-1}"``; the episode is truncated (never terminated) after
    ``n_rounds`` rounds, when :attr:`agents` becomes empty.

    Observation (the same for every agent): the previous round's joint action, float32 in ``[0, 1]`` and
    all zeros in round 0 —

    * non-anonymous mechanisms: one-hot per agent, flattened, ``Box(0, 1, (N*A,))``
      (entry ``i*A + a`` is 1 when agent ``i`` played ``a``);
    * anonymous mechanisms (``mechanism.anonymous``): the share of agents on each action, ``Box(0, 1, (A,))``.

    Reward of agent ``i``: ``M(a)[i]``, read from the counterfactual payoffs ``U[i, a'] = M(a', a_-i)[i]``
    (paper Eq. 1) that the step computes anyway with
    :meth:`~mechgym.mechanisms.Mechanism.counterfactual_payoffs_batch_invariant`, so it equals
    :func:`mechgym.rollout` on the same device bit for bit, at any thread count.
    With ``counterfactual_info=True`` each agent's info carries ``"counterfactual_payoffs"`` (float32
    ``[A]``, the full-information feedback of the paper's learners) and ``"round"`` (the index ``t`` of the
    round just played, from 0).

    The environment reads the mechanism and never changes it. Environments from :func:`mechgym.make` hold a
    frozen mechanism; pass a frozen one here as well (``mechanism.freeze()``): no gradients are then recorded.

    Args:
        mechanism: The payoff rule (ground truth).
        n_rounds: Rounds ``T`` per episode.
        default_learner: The learning rule the game is meant to be played by (used by
            :func:`mechgym.rollout`, :func:`mechgym.play_episodes` and the single-agent view when no other
            learner is given); ``None`` for ``LogitQ()``.
        counterfactual_info: Put every agent's counterfactual payoff vector in its info.
        render_mode: ``None``, ``"ansi"`` (``render()`` returns the last joint action and payoffs as text) or
            ``"rgb_array"`` (a small uint8 image ``[H, W, 3]`` of the same, see :meth:`render`).

    Attributes:
        mechanism: The payoff rule.
        n_rounds: Rounds per episode.
        default_learner: The game's default learning rule.
        counterfactual_info: Whether infos carry counterfactual payoffs.
        env_id: The registered id when made by :func:`mechgym.make`, else ``None``.
        env_kwargs: JSON-serialisable keyword arguments that rebuild the environment with
            ``mechgym.make(env_id, **env_kwargs)`` (empty for an environment built directly).

    Example:
        >>> env = mechgym.make("mechgym/PublicGoods-v0", n_rounds=5)
        >>> observations, infos = env.reset(seed=0)
        >>> while env.agents:
        ...     actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        ...     observations, rewards, terminations, truncations, infos = env.step(actions)
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 - PettingZoo declares metadata as a plain class attribute
        "name": "mechanism_game_v0",
        "render_modes": ["ansi", "rgb_array"],
        "is_parallelizable": True,
        "render_fps": 4,
    }

    def __init__(
        self,
        mechanism: Mechanism,
        n_rounds: int = 60,
        *,
        default_learner: Learner | None = None,
        counterfactual_info: bool = True,
        render_mode: RenderMode | None = None,
    ) -> None:
        if not isinstance(mechanism, Mechanism):
            raise ConfigurationError(
                f"mechanism must be a mechgym Mechanism (a torch module from joint actions to payoffs); "
                f"got {type(mechanism).__name__}"
            )
        if default_learner is not None and not isinstance(default_learner, Learner):
            raise ConfigurationError(
                "default_learner must be a mechgym Learner (e.g. LogitQ()) or None; "
                f"got {type(default_learner).__name__}"
            )
        _check_render_mode(render_mode, self.metadata["render_modes"])
        self.mechanism = mechanism
        self.n_rounds = _check_n_rounds(n_rounds)
        self.default_learner: Learner = default_learner if default_learner is not None else LogitQ()
        self.counterfactual_info = bool(counterfactual_info)
        self.render_mode = render_mode
        self.env_id: str | None = None
        self.env_kwargs: dict[str, Any] = {}

        n, a = mechanism.n_agents, mechanism.n_actions
        obs_size = a if mechanism.anonymous else n * a
        check_memory(
            float(n) * (ENV_BYTES_PER_AGENT + 3 * 4 * (obs_size + a)) + 10.0 * n * a,
            f"a PettingZoo environment of {n} agents x {a} actions (its per-agent spaces and one step's dicts)",
            option=None,
        )
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents: list[str] = []
        self._index = {agent: i for i, agent in enumerate(self.possible_agents)}
        # one space object per agent, built once: spaces are seeded per agent and must be returned as is
        self.observation_spaces = {
            agent: gymnasium.spaces.Box(0.0, 1.0, (obs_size,), np.float32) for agent in self.possible_agents
        }
        self.action_spaces = {agent: gymnasium.spaces.Discrete(a) for agent in self.possible_agents}
        self.state_space = gymnasium.spaces.Box(0.0, 1.0, (n * a,), np.float32)

        self._np_random: np.random.Generator | None = None
        self._np_random_seed: int | None = None
        self._round = 0
        self._last_joint: np.ndarray | None = None  # [N]
        self._last_rewards: list[float] | None = None  # [N]

    # -- spaces and sizes --------------------------------------------------------------------
    @property
    def n_agents(self) -> int:
        """``N``."""
        return self.mechanism.n_agents

    @property
    def n_actions(self) -> int:
        """``A``."""
        return self.mechanism.n_actions

    @property
    def round(self) -> int:
        """Rounds played in the current episode (the index of the next round)."""
        return self._round

    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        """The observation space of ``agent`` (the same object on every call)."""
        return self.observation_spaces[self._check_agent(agent)]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        """The action space ``Discrete(A)`` of ``agent`` (the same object on every call)."""
        return self.action_spaces[self._check_agent(agent)]

    @property
    def np_random(self) -> np.random.Generator:
        """The environment's generator, seeded by ``reset(seed=...)`` (the game itself draws nothing)."""
        if self._np_random is None:
            self._np_random, self._np_random_seed = seeding.np_random()
        return self._np_random

    @np_random.setter
    def np_random(self, value: np.random.Generator) -> None:
        self._np_random, self._np_random_seed = value, -1

    # -- the game ------------------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode: every agent is live and observes zeros.

        Args:
            seed: Seeds :attr:`np_random` (the game is deterministic given the actions).
            options: Accepted for API compatibility and ignored.

        Returns:
            ``(observations, infos)`` keyed by every agent; infos are empty until the first step.
        """
        if seed is not None or self._np_random is None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        self.agents = list(self.possible_agents)
        self._round = 0
        self._last_joint = None
        self._last_rewards = None
        observation = self._observation(None)
        return {agent: observation.copy() for agent in self.agents}, {agent: {} for agent in self.agents}

    def step(
        self, actions: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict[str, Any]]]:
        """Play one round with one action per live agent.

        Args:
            actions: ``{agent: action}`` for every live agent; an action is an integer in ``[0, A)``
                (Python or NumPy integer, or a 0-d integer array).

        Returns:
            ``(observations, rewards, terminations, truncations, infos)`` keyed by the agents that acted.
            ``truncations`` are ``True`` after round ``n_rounds``; ``terminations`` are always ``False``.

        Raises:
            InvalidActionError: if an agent is missing or unknown, or an action is not an integer in range.
            MechGymError: if the episode is over or ``reset`` was never called.
        """
        if not self.agents:
            state = "was never reset" if self._last_joint is None else f"is over after {self.n_rounds} rounds"
            raise MechGymError(f"the episode of {self._label()} {state}; call reset() before step()")
        joint = self._joint_actions(actions)
        joint_tensor = torch.as_tensor(joint, dtype=torch.long, device=device_of(self.mechanism))
        with torch.no_grad():
            payoffs = self.mechanism.counterfactual_payoffs_batch_invariant(joint_tensor[None])[0].cpu()  # [N, A]
        rewards = payoffs.gather(-1, joint_tensor.cpu()[:, None]).squeeze(-1).tolist()  # [N] floats

        round_index = self._round
        self._round += 1
        self._last_joint = joint
        self._last_rewards = rewards
        agents = self.agents
        observation = self._observation(joint)
        observations = {agent: observation.copy() for agent in agents}
        reward_dict = {agent: rewards[i] for i, agent in enumerate(agents)}
        done = self._round >= self.n_rounds
        terminations = dict.fromkeys(agents, False)
        truncations = dict.fromkeys(agents, done)
        if self.counterfactual_info:
            counterfactual = payoffs.to(torch.float32).numpy()
            infos = {
                agent: {"round": round_index, "counterfactual_payoffs": counterfactual[i]}
                for i, agent in enumerate(agents)
            }
        else:
            infos = {agent: {"round": round_index} for agent in agents}
        if done:
            self.agents = []
        return observations, reward_dict, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The global state: the previous joint action one-hot, flattened, float32 ``[N*A]`` (zeros in round 0)."""
        return self._one_hot(self._last_joint)

    def render(self) -> str | np.ndarray | None:
        """The current round: the last joint action and payoffs, as text or as an image.

        With ``render_mode="ansi"``: the round, the last joint action and the payoffs as text. With
        ``render_mode="rgb_array"``: a uint8 image ``[H, W, 3]`` whose shape stays the same over an episode —
        a grey progress strip (rounds played out of ``n_rounds``) above one row of ``A`` cells per agent
        (the cell of the action it played last is blue) and, to their right, one payoff bar per agent that
        starts at the middle of the bar area, where the payoff is zero (green to the right for a gain, red to
        the left for a loss, scaled by the round's largest ``|payoff|``). Before the first step the cells and
        bars are empty. Cells are ``clip(256 // max(N, A), 1, 16)`` pixels wide.

        Returns:
            The text, the image, or ``None`` (with a warning) when the game was made without a render mode.
        """
        if self.render_mode is None:
            gymnasium.logger.warn(
                "render() was called on a mechgym environment without a render mode; "
                "make it with render_mode='ansi' (text) or render_mode='rgb_array' (an image)"
            )
            return None
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        header = f"{self._label()}, round {self._round}/{self.n_rounds}"
        if self._last_joint is None or self._last_rewards is None:
            return f"{header}: no actions yet"
        actions = " ".join(str(int(a)) for a in self._last_joint)
        payoffs = " ".join(f"{r:+.3f}" for r in self._last_rewards)
        return f"{header}\nactions: {actions}\npayoffs: {payoffs}"

    def close(self) -> None:
        """Nothing to release."""

    def with_n_rounds(self, n_rounds: int) -> MechanismGameEnv:
        """A fresh environment over the same mechanism with another horizon.

        ``env_id`` is kept and ``env_kwargs["n_rounds"]`` set to the new horizon, so the provenance of
        traces recorded on it stays truthful (and rebuildable with :func:`mechgym.make`).
        """
        other = MechanismGameEnv(
            self.mechanism,
            n_rounds,
            default_learner=self.default_learner,
            counterfactual_info=self.counterfactual_info,
            render_mode=self.render_mode,
        )
        other.env_id = self.env_id
        other.env_kwargs = {**self.env_kwargs, "n_rounds": other.n_rounds}
        return other

    def __repr__(self) -> str:
        name = self.env_id or f"{type(self.mechanism).__name__} game"
        return (
            f"MechanismGameEnv({name}, n_agents={self.n_agents}, n_actions={self.n_actions}, n_rounds={self.n_rounds})"
        )

    # -- helpers -------------------------------------------------------------------------------
    def _label(self) -> str:
        return self.env_id or f"an unregistered {type(self.mechanism).__name__} game"

    def _check_agent(self, agent: str) -> str:
        if agent not in self._index:
            raise ConfigurationError(suggest(str(agent), self.possible_agents, f"agent of {self._label()}"))
        return agent

    def _joint_actions(self, actions: Mapping[str, Any]) -> np.ndarray:
        """Validate ``{agent: action}`` and return the joint action ``[N]`` (int64)."""
        label = self._label()
        if not isinstance(actions, Mapping):
            raise InvalidActionError(
                f"actions for {label} must be a dict from agent name to action; got {type(actions).__name__}"
            )
        live = set(self.agents)
        unknown = [key for key in actions if key not in live]
        if unknown:
            raise InvalidActionError(
                f"actions for {label} name agents that are not live: {unknown}; "
                f"expected exactly the keys {self._short_list(self.agents)}"
            )
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise InvalidActionError(
                f"actions for {label} lack {self._short_list(missing)}; every live agent acts in every round"
            )
        n_actions = self.n_actions
        joint = np.empty(len(self.agents), dtype=np.int64)
        for agent in self.agents:
            value = actions[agent]
            try:
                if isinstance(value, bool | np.bool_):
                    raise TypeError("a bool is not an action")
                action = operator.index(value)
            except TypeError:
                raise InvalidActionError(
                    f"actions must be integers in [0, {n_actions}) for {label}; got {value!r} "
                    f"({type(value).__name__}) for {agent}. Pass a Python or NumPy integer"
                ) from None
            if not 0 <= action < n_actions:
                raise InvalidActionError(
                    f"actions must be integers in [0, {n_actions}) for {label}; got {action} for {agent}"
                )
            joint[self._index[agent]] = action
        return joint

    @staticmethod
    def _short_list(names: list[Any], limit: int = 6) -> str:
        shown = ", ".join(repr(name) for name in names[:limit])
        return f"[{shown}{', …' if len(names) > limit else ''}] ({len(names)} agents)"

    def _render_rgb(self) -> np.ndarray:
        """The ``rgb_array`` frame ``[H, W, 3]`` described in :meth:`render`."""
        n, a = self.n_agents, self.n_actions
        cell = max(1, min(16, 256 // max(n, a)))  # pixels per cell: 16 for small games, 1 from 256 agents up
        pad = 1 if cell >= 4 else 0  # a white border inside each cell when cells are big enough to show it
        strip = max(2, cell // 2)
        top = strip + cell  # the rows of the agents start one cell below the progress strip
        grid_width, half = a * cell, max(cell, a * cell // 2)  # half: the payoff bars' room on either side
        bars_left = grid_width + cell
        frame = np.full((top + n * cell, bars_left + 2 * half, 3), _BACKGROUND, dtype=np.uint8)
        frame[:strip] = _CELL
        frame[:strip, : frame.shape[1] * self._round // self.n_rounds] = _PROGRESS

        cells = np.full((n, a, 3), _CELL, dtype=np.uint8)  # [N, A, rgb]
        bars = np.full((n, 2 * half, 3), _BACKGROUND, dtype=np.uint8)  # [N, 2 * half, rgb]
        if self._last_joint is not None and self._last_rewards is not None:
            cells[np.arange(n), self._last_joint] = _PLAYED
            rewards = np.asarray(self._last_rewards, dtype=np.float64)
            rewards = np.where(np.isfinite(rewards), rewards, 0.0)
            scale = float(np.abs(rewards).max())
            lengths = np.zeros(n, dtype=np.int64)
            if scale > 0.0:
                lengths = np.where(rewards != 0.0, np.maximum(1, np.rint(np.abs(rewards) / scale * half)), 0)
            filled = np.arange(half)[None, :] < lengths[:, None]  # [N, half]
            bars[:, half:][filled & (rewards > 0.0)[:, None]] = _GAIN  # to the right of the zero line
            bars[:, :half][(filled & (rewards < 0.0)[:, None])[:, ::-1]] = _LOSS  # to its left
        pixels = np.full((n, a, cell, 3), _BACKGROUND, dtype=np.uint8)  # [N, A, x in the cell, rgb]
        pixels[:, :, pad : cell - pad] = cells[:, :, None]
        rows = np.full((n, cell, frame.shape[1], 3), _BACKGROUND, dtype=np.uint8)  # [N, y in the row, W, rgb]
        rows[:, pad : cell - pad, :grid_width] = pixels.reshape(n, 1, grid_width, 3)
        rows[:, pad : cell - pad, bars_left:] = bars[:, None]
        frame[top:] = rows.reshape(n * cell, frame.shape[1], 3)
        return frame

    def _one_hot(self, joint: np.ndarray | None) -> np.ndarray:
        n, a = self.n_agents, self.n_actions
        encoded = np.zeros(n * a, dtype=np.float32)
        if joint is not None:
            encoded[np.arange(n) * a + joint] = 1.0
        return encoded

    def _observation(self, joint: np.ndarray | None) -> np.ndarray:
        if not self.mechanism.anonymous:
            return self._one_hot(joint)
        if joint is None:
            return np.zeros(self.n_actions, dtype=np.float32)
        counts = np.bincount(joint, minlength=self.n_actions).astype(np.float32)
        return counts / np.float32(self.n_agents)
