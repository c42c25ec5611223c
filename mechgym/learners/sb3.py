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

import contextlib
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import gymnasium
import numpy as np
import torch
from pettingzoo.utils.env import ParallelEnv
from tqdm.auto import tqdm

from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError, MechGymError
from mechgym.traces.dataset import TraceDataset
from mechgym.traces.recorder import RecordTraces

try:
    import stable_baselines3
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
    from stable_baselines3.common.type_aliases import TrainFrequencyUnit
    from stable_baselines3.common.utils import get_device, obs_as_tensor
    from stable_baselines3.common.vec_env import VecEnv
    from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "mechgym.learners.sb3 needs Stable-Baselines3; install it with pip install '.[sb3]' "
        "(or pip install stable-baselines3)"
    ) from error

__all__ = [
    "ALGORITHMS",
    "DEFAULT_HYPERPARAMETERS",
    "AgentsVecEnv",
    "SB3Agents",
    "train_sb3",
]

Algorithm = Literal["ppo", "a2c", "dqn"]

#: SB3 classes by algorithm name.
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {
    "ppo": stable_baselines3.PPO,
    "a2c": stable_baselines3.A2C,
    "dqn": stable_baselines3.DQN,
}

#: Constructor arguments used unless overridden: short rollouts and a shorter discount suit repeated games
#: of tens of rounds (SB3's defaults target long single-agent tasks: PPO collects 2048 steps per update).
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 4, "gamma": 0.9, "ent_coef": 0.01},
    "a2c": {"n_steps": 8, "gamma": 0.9, "ent_coef": 0.01},
    "dqn": {
        "learning_starts": 100,
        "buffer_size": 10_000,
        "train_freq": 4,
        "batch_size": 32,
        "target_update_interval": 200,
        "exploration_fraction": 0.3,
        "gamma": 0.9,
    },
}

#: Constructor arguments that train_sb3 sets itself.
_RESERVED = ("policy", "env", "seed", "device", "verbose", "_init_setup_model")


# -- the vector-env adapter -------------------------------------------------------------------------
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


class _LockstepSeat(gymnasium.Env[np.ndarray, np.int64]):
    """The spaces of one agent's seat, to build an independent model; :func:`train_sb3` steps the game itself."""

    def __init__(self, observation_space: gymnasium.spaces.Box, n_actions: int) -> None:
        self.observation_space = observation_space
        self.action_space = gymnasium.spaces.Discrete(n_actions)

    def _refuse(self) -> MechGymError:
        return MechGymError(
            "this model was trained in lockstep with the other agents by mechgym.learners.sb3.train_sb3 and has "
            "no environment of its own; play the game with SB3Agents.act(observations) or model.predict(obs)"
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        raise self._refuse()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        raise self._refuse()


# -- one model driving a group of agents --------------------------------------------------------------
def _silent_logger() -> Logger:
    return Logger(folder=None, output_formats=[])


class _OnPolicyDriver:
    """SB3's ``OnPolicyAlgorithm.collect_rollouts`` and ``learn`` loop, one round at a time."""

    def __init__(self, model: OnPolicyAlgorithm, total_timesteps: int, first_observation: np.ndarray) -> None:
        self.model = model
        model.set_logger(_silent_logger())
        model.num_timesteps = 0
        model._total_timesteps = total_timesteps
        model._last_obs = first_observation
        model._last_episode_starts = self._episode_starts = np.ones(model.n_envs, dtype=bool)
        model.rollout_buffer.reset()
        model.policy.set_training_mode(False)
        self._pending: tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor] | None = None

    def act(self, observation: np.ndarray) -> np.ndarray:
        model = self.model
        with torch.no_grad():
            actions, values, log_probs = model.policy(obs_as_tensor(observation, model.device))
        chosen = actions.cpu().numpy()
        self._pending = (observation, chosen, values, log_probs)
        return chosen

    def observe(
        self, new_observation: np.ndarray, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> None:
        assert self._pending is not None  # act() comes first
        model = self.model
        observation, actions, values, log_probs = self._pending
        model.num_timesteps += model.n_envs
        rewards = rewards.astype(np.float32)
        for j, done in enumerate(dones):
            # truncation is not termination: bootstrap with the value of the episode's last observation
            if done and infos[j].get("terminal_observation") is not None and infos[j].get("TimeLimit.truncated", False):
                terminal = model.policy.obs_to_tensor(infos[j]["terminal_observation"])[0]
                with torch.no_grad():
                    rewards[j] += model.gamma * float(model.policy.predict_values(terminal)[0].item())
        model.rollout_buffer.add(observation, actions.reshape(-1, 1), rewards, self._episode_starts, values, log_probs)
        model._last_obs = new_observation
        model._last_episode_starts = self._episode_starts = dones
        if model.rollout_buffer.full:
            with torch.no_grad():
                last_values = model.policy.predict_values(obs_as_tensor(new_observation, model.device))
            model.rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
            model._update_current_progress_remaining(model.num_timesteps, model._total_timesteps)
            model.train()
            model.rollout_buffer.reset()
            model.policy.set_training_mode(False)


class _OffPolicyDriver:
    """SB3's ``OffPolicyAlgorithm.collect_rollouts`` and ``learn`` loop (DQN), one round at a time."""

    def __init__(self, model: OffPolicyAlgorithm, total_timesteps: int, first_observation: np.ndarray) -> None:
        self.model = model
        if model.train_freq.unit != TrainFrequencyUnit.STEP:  # type: ignore[union-attr]
            raise ConfigurationError(
                f"train_freq must count steps (e.g. train_freq=4) for lockstep training; got {model.train_freq}"
            )
        model.set_logger(_silent_logger())
        model.num_timesteps = 0
        model._total_timesteps = total_timesteps
        model._last_obs = first_observation
        model.policy.set_training_mode(False)
        self._steps = 0
        self._buffer_actions: np.ndarray | None = None

    def act(self, observation: np.ndarray) -> np.ndarray:
        model = self.model
        model._last_obs = observation
        # uniform actions before learning_starts, then the policy with its exploration (epsilon-greedy for DQN)
        actions, self._buffer_actions = model._sample_action(model.learning_starts, None, model.n_envs)
        return np.asarray(actions)

    def observe(
        self, new_observation: np.ndarray, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> None:
        assert self._buffer_actions is not None  # act() comes first
        model = self.model
        model.num_timesteps += model.n_envs
        self._steps += 1
        # next observation of a finished episode = infos["terminal_observation"]; truncations are not dones
        # for the TD target (the replay buffer reads infos["TimeLimit.truncated"])
        assert model.replay_buffer is not None
        model._store_transition(model.replay_buffer, self._buffer_actions, new_observation, rewards, dones, infos)
        model._update_current_progress_remaining(model.num_timesteps, model._total_timesteps)
        model._on_step()  # DQN: target network sync and the exploration schedule
        frequency = model.train_freq.frequency  # type: ignore[union-attr]
        if self._steps % frequency == 0 and model.num_timesteps > model.learning_starts:
            gradient_steps = model.gradient_steps if model.gradient_steps >= 0 else frequency
            if gradient_steps > 0:
                model.train(batch_size=model.batch_size, gradient_steps=gradient_steps)


_Driver = _OnPolicyDriver | _OffPolicyDriver


# -- training -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _restored_global_generators(device: torch.device) -> Iterator[None]:
    """Let SB3 seed and draw from the global generators, then give the caller back their states."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _check_count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigurationError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


def _build_model(
    algorithm: str, policy: str, env: Any, hyperparameters: dict[str, Any], seed: int, device: str
) -> BaseAlgorithm:
    cls = ALGORITHMS[algorithm]
    try:
        return cls(policy, env, seed=seed, device=device, verbose=0, **hyperparameters)
    except TypeError as error:
        import inspect

        accepted = sorted(set(inspect.signature(cls.__init__).parameters) - {"self", *_RESERVED})
        raise ConfigurationError(
            f"bad hyperparameters for {cls.__name__}: {error}; its constructor accepts {', '.join(accepted)}"
        ) from None


@dataclass
class SB3Agents:
    """SB3 models trained on a mechgym game by :func:`train_sb3`, and the traces of their training.

    Attributes:
        algorithm: ``"ppo"``, ``"a2c"`` or ``"dqn"``.
        shared: ``True`` for one parameter-shared model, ``False`` for one model per agent.
        models: The models: one per agent in ``possible_agents`` order, or the single shared one.
        agents: The agents' names.
        traces: Every joint action (and payoff) of training, ``[E, T, N]``; the metadata's ``extra["sb3"]``
            names the algorithm, the mode, the hyperparameters and the model seeds, ``seed`` is the run's seed
            and ``learner`` is ``None`` (SB3 agents have no likelihood model: DIML fits need an assumed learner).
        hyperparameters: The constructor arguments every model was built with (besides policy, env, seed).
    """

    algorithm: str
    shared: bool
    models: list[BaseAlgorithm]
    agents: list[str]
    traces: TraceDataset
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> dict[str, int]:
        """Every agent's action for the game's observations ``{agent: obs}`` (with ``model.predict``).

        Stochastic actions (``deterministic=False``) draw from the global generators, as SB3 does.
        """
        stacked = np.stack([np.asarray(observations[agent], dtype=np.float32) for agent in self.agents])
        if self.shared:
            inputs = np.concatenate([stacked, np.eye(len(self.agents), dtype=np.float32)], axis=1)
            actions, _ = self.models[0].predict(inputs, deterministic=deterministic)
        else:
            actions = np.array(
                [
                    model.predict(obs, deterministic=deterministic)[0]
                    for model, obs in zip(self.models, stacked, strict=True)
                ]
            )
        return {agent: int(action) for agent, action in zip(self.agents, np.asarray(actions).reshape(-1), strict=True)}


def train_sb3(
    env: str | MechanismGameEnv,
    algorithm: Algorithm,
    n_episodes: int,
    *,
    seed: int = 0,
    shared: bool = False,
    hyperparameters: Mapping[str, Any] | None = None,
    n_rounds: int | None = None,
    policy: str = "MlpPolicy",
    device: str = "cpu",
    progress: bool = False,
) -> SB3Agents:
    """Train SB3 agents on a mechgym game for ``n_episodes`` episodes, recording every joint action.

    Every round, each model's policy acts for its agents (sampling, or DQN's epsilon-greedy), the joint
    action steps the game, and each model stores its own transitions: PPO and A2C fill their rollout
    buffers and train whenever one is full (every ``n_steps`` rounds), with the returns bootstrapped from
    the value of the last observation (at the horizon: ``r + gamma V(terminal observation)``, a truncation);
    DQN adds to its replay buffer and trains every ``train_freq`` rounds after ``learning_starts``, with its
    exploration rate following its schedule over the ``n_episodes * n_rounds`` rounds. A rollout buffer that
    is not full when the last episode ends is not trained on.

    Args:
        env: A registered id or a game from :func:`mechgym.make`.
        algorithm: ``"ppo"``, ``"a2c"`` or ``"dqn"``.
        n_episodes: Episodes ``E`` of training (all recorded).
        seed: Seed of the run (the game's reset, the models' seeds, SB3's draws).
        shared: One parameter-shared model over all agents (observations with a one-hot agent id) instead of
            one model per agent.
        hyperparameters: SB3 constructor arguments overriding :data:`DEFAULT_HYPERPARAMETERS` (e.g.
            ``{"learning_rate": 1e-3, "n_steps": 32}``); ``policy``, ``seed`` and ``device`` are arguments here.
        n_rounds: Rounds ``T`` per episode; ``None`` for the game's.
        policy: SB3 policy name (``"MlpPolicy"``).
        device: torch device of the models (``"cpu"``, ``"cuda"``, ``"auto"``).
        progress: Show a progress bar over rounds.

    Returns:
        The trained models and the traces ``[E, T, N]`` of their training.

    Raises:
        ConfigurationError: an unknown algorithm, bad counts, hyperparameters SB3 does not accept or that
            :func:`train_sb3` sets itself.

    Example:
        >>> agents = train_sb3("mechgym/Congestion-v0", "ppo", n_episodes=50, n_rounds=20, seed=0)
        >>> agents.traces.save("ppo.parquet")
    """
    from mechgym.registration import make

    if algorithm not in ALGORITHMS:
        raise ConfigurationError(f"algorithm must be one of {sorted(ALGORITHMS)}; got {algorithm!r}")
    n_episodes = _check_count("n_episodes", n_episodes, 1)
    seed = _check_count("seed", seed, 0)
    game = make(env) if isinstance(env, str) else env.unwrapped
    if not isinstance(game, MechanismGameEnv):
        raise ConfigurationError(f"env must be a mechgym id or MechanismGameEnv; got {type(env).__name__}")
    if n_rounds is not None and _check_count("n_rounds", n_rounds, 1) != game.n_rounds:
        game = game.with_n_rounds(n_rounds)
    given = dict(hyperparameters or {})
    reserved = sorted(set(given) & set(_RESERVED))
    if reserved:
        raise ConfigurationError(
            f"hyperparameters may not set {reserved}: policy, seed and device are arguments of train_sb3, "
            "env and verbose are set by it"
        )
    params = {**DEFAULT_HYPERPARAMETERS[algorithm], **given}

    recorder = RecordTraces(game)
    venv = AgentsVecEnv(recorder, agent_id=shared)
    n_agents, total_rounds = venv.num_envs, n_episodes * game.n_rounds
    groups = [np.arange(n_agents)] if shared else [np.array([i]) for i in range(n_agents)]
    model_seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(len(groups))]
    torch_device = get_device(device)
    seat_space = cast(gymnasium.spaces.Box, venv.observation_space)  # agent_id=False: the game's observation
    with _restored_global_generators(torch_device):
        if shared:
            models = [_build_model(algorithm, policy, venv, params, model_seeds[0], device)]
        else:
            models = [
                _build_model(algorithm, policy, _LockstepSeat(seat_space, game.n_actions), params, model_seed, device)
                for model_seed in model_seeds
            ]
        venv.seed(seed)
        observations = venv.reset()
        drivers: list[_Driver] = []
        for model, agents in zip(models, groups, strict=True):
            total = total_rounds * len(agents)
            if isinstance(model, OnPolicyAlgorithm):
                drivers.append(_OnPolicyDriver(model, total, observations[agents]))
            else:
                assert isinstance(model, OffPolicyAlgorithm)
                drivers.append(_OffPolicyDriver(model, total, observations[agents]))
        joint = np.empty(n_agents, dtype=np.int64)
        for _ in tqdm(
            range(total_rounds), desc=f"{algorithm} training", unit="round", disable=not progress, leave=False
        ):
            for driver, agents in zip(drivers, groups, strict=True):
                joint[agents] = driver.act(observations[agents]).reshape(-1)
            venv.step_async(joint)
            new_observations, rewards, dones, infos = venv.step_wait()
            for driver, agents in zip(drivers, groups, strict=True):
                driver.observe(new_observations[agents], rewards[agents], dones[agents], [infos[i] for i in agents])
            observations = new_observations

    provenance = {
        "library": "stable-baselines3",
        "version": stable_baselines3.__version__,
        "algorithm": algorithm,
        "mode": "shared" if shared else "independent",
        "policy": policy,
        "hyperparameters": {key: _jsonable(value) for key, value in params.items()},
        "model_seeds": model_seeds,
        "device": str(torch_device),
    }
    traces = recorder.dataset(learner=None, seed=seed, extra={"sb3": provenance})
    return SB3Agents(
        algorithm=algorithm,
        shared=shared,
        models=models,
        agents=list(venv.agents),
        traces=traces,
        hyperparameters=params,
    )
