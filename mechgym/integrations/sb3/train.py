"""``train_sb3``: Stable-Baselines3 agents trained in lockstep on a mechgym game, every joint action recorded.

See :mod:`mechgym.integrations.sb3` for the two set-ups (independent learners, parameter sharing), the
horizon's handling (a truncation, bootstrapped) and the seeding.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import gymnasium
import numpy as np
import stable_baselines3
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import get_device

from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError
from mechgym.integrations.sb3.lockstep import LockstepSeat, play_lockstep
from mechgym.integrations.sb3.vec_env import AgentsVecEnv
from mechgym.registration import make
from mechgym.traces.dataset import TraceDataset
from mechgym.traces.recorder import RecordTraces
from mechgym.validation import check_int, check_seed

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


def _build_model(
    algorithm: str, policy: str, env: Any, hyperparameters: dict[str, Any], seed: int, device: str
) -> BaseAlgorithm:
    cls = ALGORITHMS[algorithm]
    try:
        return cls(policy, env, seed=seed, device=device, verbose=0, **hyperparameters)
    except TypeError as error:
        accepted = sorted(set(inspect.signature(cls.__init__).parameters) - {"self", *_RESERVED})
        raise ConfigurationError(
            f"bad hyperparameters for {cls.__name__}: {error}; its constructor accepts {', '.join(accepted)}"
        ) from None


def _game(env: str | MechanismGameEnv, n_rounds: int | None) -> MechanismGameEnv:
    """The game of an id or an environment, with ``n_rounds`` rounds (``None``: its own)."""
    game = make(env) if isinstance(env, str) else env.unwrapped
    if not isinstance(game, MechanismGameEnv):
        raise ConfigurationError(f"env must be a mechgym id or MechanismGameEnv; got {type(env).__name__}")
    if n_rounds is not None and check_int(n_rounds, "n_rounds", low=1) != game.n_rounds:
        game = game.with_n_rounds(n_rounds)
    return game


def _hyperparameters(algorithm: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`DEFAULT_HYPERPARAMETERS` of ``algorithm`` overridden by ``given`` (which may not set reserved ones)."""
    reserved = sorted(set(given or {}) & set(_RESERVED))
    if reserved:
        raise ConfigurationError(
            f"hyperparameters may not set {reserved}: policy, seed and device are arguments of train_sb3, "
            "env and verbose are set by it"
        )
    return {**DEFAULT_HYPERPARAMETERS[algorithm], **(given or {})}


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
    if algorithm not in ALGORITHMS:
        raise ConfigurationError(f"algorithm must be one of {sorted(ALGORITHMS)}; got {algorithm!r}")
    n_episodes = check_int(n_episodes, "n_episodes", low=1)
    seed = check_seed(seed)
    game = _game(env, n_rounds)
    params = _hyperparameters(algorithm, hyperparameters)
    recorder = RecordTraces(game)
    venv = AgentsVecEnv(recorder, agent_id=shared)
    groups = [np.arange(venv.num_envs)] if shared else [np.array([i]) for i in range(venv.num_envs)]
    model_seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(len(groups))]
    torch_device = get_device(device)
    seat_space = cast(gymnasium.spaces.Box, venv.observation_space)  # agent_id=False: the game's observation
    with _restored_global_generators(torch_device):
        # one seat per model: SB3 seeds and samples each model's own action space
        models = [
            _build_model(
                algorithm, policy, venv if shared else LockstepSeat(seat_space, game.n_actions), params, seed_k, device
            )
            for seed_k in model_seeds
        ]
        venv.seed(seed)
        play_lockstep(
            venv, models, groups, n_episodes * game.n_rounds, progress=progress, description=f"{algorithm} training"
        )
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
    return SB3Agents(algorithm, shared, models, list(venv.agents), traces, hyperparameters=params)
