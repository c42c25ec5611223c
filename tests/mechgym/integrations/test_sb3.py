"""Stable-Baselines3 agents on mechgym games: lockstep training, recording, bootstrapping, seeds, the VecEnv."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch

import diml_inverse
import mechgym
from mechgym.cli import main
from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError, MechGymError
from mechgym.traces import RecordTraces, TraceDataset, load_traces

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO

from mechgym.integrations.sb3 import DEFAULT_HYPERPARAMETERS, AgentsVecEnv, SB3Agents, train_sb3

ENV = "mechgym/NeuralMechanism-v0"  # 3 agents x 6 actions
ALGORITHMS = ["ppo", "a2c", "dqn"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SpyGame(MechanismGameEnv):
    """A game that remembers every joint action it was stepped with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stepped: list[list[int]] = []

    def step(self, actions: Any) -> Any:
        self.stepped.append([int(actions[agent]) for agent in self.possible_agents])
        return super().step(actions)


def spy_game(n_rounds: int) -> SpyGame:
    return SpyGame(mechgym.make(ENV).unwrapped.mechanism, n_rounds)


def one_hot_history(traces: TraceDataset) -> np.ndarray:
    """The observation before every round: the previous joint action one-hot (zeros in round 0), ``[E, T, N*A]``."""
    n_episodes, n_rounds, _ = traces.actions.shape
    encoded = np.eye(traces.n_actions, dtype=np.float32)[traces.actions].reshape(n_episodes, n_rounds, -1)
    return np.concatenate([np.zeros_like(encoded[:, :1]), encoded[:, :-1]], axis=1)


@pytest.mark.parametrize("shared", [False, True], ids=["independent", "shared"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_smoke_training_records_every_action_taken(algorithm: str, shared: bool) -> None:
    """A few hundred rounds train every model, and the traces hold exactly the joint actions the game saw."""
    game = spy_game(n_rounds=25)
    agents = train_sb3(game, algorithm, n_episodes=8, seed=1, shared=shared)  # type: ignore[arg-type]
    traces = agents.traces
    assert traces.actions.shape == (8, 25, 3)
    np.testing.assert_array_equal(traces.actions.reshape(-1, 3), np.array(game.stepped))
    assert len(agents.models) == (1 if shared else 3)
    assert all(model._n_updates > 0 for model in agents.models)  # every model trained
    meta = traces.metadata
    assert meta.learner is None and meta.seed == 1
    sb3 = meta.extra["sb3"]
    assert sb3["algorithm"] == algorithm and sb3["mode"] == ("shared" if shared else "independent")
    assert sb3["hyperparameters"] == DEFAULT_HYPERPARAMETERS[algorithm]
    assert len(sb3["model_seeds"]) == len(agents.models)


def test_ppo_buffers_hold_the_recorded_actions_and_bootstrap_at_the_horizon() -> None:
    """Without an update (n_steps > rounds) the rollout buffers keep everything the agents did."""
    gamma = 0.8
    agents = train_sb3(ENV, "ppo", n_episodes=3, n_rounds=7, seed=0, hyperparameters={"n_steps": 1024, "gamma": gamma})
    traces = agents.traces
    observations = one_hot_history(traces).reshape(21, -1)
    for i, model in enumerate(agents.models):
        buffer = model.rollout_buffer
        assert buffer.pos == 21 and model._n_updates == 0
        np.testing.assert_array_equal(buffer.actions[:21, 0, 0], traces.actions[:, :, i].reshape(-1))
        np.testing.assert_array_equal(buffer.observations[:21, 0], observations)
        np.testing.assert_array_equal(np.flatnonzero(buffer.episode_starts[:21, 0]), [0, 7, 14])
        rewards = traces.rewards[:, :, i].copy()
        # the last round of each episode is a truncation: r + gamma V(terminal observation)
        terminal = np.eye(6, dtype=np.float32)[traces.actions[:, -1]].reshape(3, -1)
        with torch.no_grad():
            values = model.policy.predict_values(torch.as_tensor(terminal)).numpy()[:, 0]
        rewards[:, -1] += gamma * values
        np.testing.assert_allclose(buffer.rewards[:21, 0], rewards.reshape(-1), rtol=1e-6, atol=1e-6)


def test_shared_ppo_sees_every_agent_with_its_id() -> None:
    agents = train_sb3(ENV, "ppo", n_episodes=2, n_rounds=5, seed=0, shared=True, hyperparameters={"n_steps": 1024})
    buffer, traces = agents.models[0].rollout_buffer, agents.traces
    assert buffer.n_envs == 3
    np.testing.assert_array_equal(buffer.actions[:10, :, 0], traces.actions.reshape(10, 3))
    observations = buffer.observations[:10]  # [rounds, agents, N*A + N]
    np.testing.assert_array_equal(observations[:, :, 18:], np.broadcast_to(np.eye(3), (10, 3, 3)))
    np.testing.assert_array_equal(observations[:, 0, :18], one_hot_history(traces).reshape(10, -1))


def test_dqn_replay_buffer_holds_the_recorded_transitions() -> None:
    agents = train_sb3(ENV, "dqn", n_episodes=3, n_rounds=6, seed=2, hyperparameters={"learning_starts": 1000})
    traces = agents.traces
    terminal = np.eye(6, dtype=np.float32)[traces.actions[:, -1]].reshape(3, -1)
    for i, model in enumerate(agents.models):
        buffer = model.replay_buffer
        assert buffer is not None and buffer.pos == 18
        np.testing.assert_array_equal(buffer.actions[:18, 0, 0], traces.actions[:, :, i].reshape(-1))
        np.testing.assert_array_equal(buffer.rewards[:18, 0], traces.rewards[:, :, i].reshape(-1))
        ends = [5, 11, 17]
        np.testing.assert_array_equal(np.flatnonzero(buffer.dones[:18, 0]), ends)
        np.testing.assert_array_equal(np.flatnonzero(buffer.timeouts[:18, 0]), ends)  # truncations: bootstrapped
        np.testing.assert_array_equal(buffer.next_observations[ends, 0], terminal)  # not the reset observation
    # exploration follows its schedule over the 18 rounds: fraction 0.3, then final_eps
    assert agents.models[0].exploration_rate == pytest.approx(agents.models[0].exploration_final_eps)


def test_same_seed_same_run_and_the_callers_generators_are_untouched() -> None:
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    first = train_sb3(ENV, "a2c", n_episodes=3, n_rounds=10, seed=4)
    assert random.getstate() == states[0]
    np.testing.assert_array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    second = train_sb3(ENV, "a2c", n_episodes=3, n_rounds=10, seed=4)
    other = train_sb3(ENV, "a2c", n_episodes=3, n_rounds=10, seed=5)
    assert first.traces == second.traces
    assert not np.array_equal(first.traces.actions, other.traces.actions)


def test_traces_save_and_fit_asks_for_a_learner(tmp_path: Path) -> None:
    agents = train_sb3(
        ENV,
        "ppo",
        n_episodes=3,
        n_rounds=6,
        seed=0,
        hyperparameters={"policy_kwargs": {"activation_fn": torch.nn.ReLU}},
    )
    path = agents.traces.save(tmp_path / "ppo.parquet")
    loaded = load_traces(path, env_id=ENV)
    assert loaded.actions.tolist() == agents.traces.actions.tolist()
    assert "ReLU" in loaded.metadata.extra["sb3"]["hyperparameters"]["policy_kwargs"]
    assert loaded.learner() is None
    with pytest.raises(ConfigurationError, match=r"Stable-Baselines3 PPO agents.*learner="):
        diml_inverse.fit(ENV, loaded, epochs=1, device="cpu", progress=False)


def test_act_plays_the_game() -> None:
    for shared in (False, True):
        agents = train_sb3(ENV, "dqn", n_episodes=1, n_rounds=4, seed=0, shared=shared)
        assert isinstance(agents, SB3Agents)
        env = mechgym.make(ENV, n_rounds=3)
        observations, _ = env.reset(seed=0)
        while env.agents:
            actions = agents.act(observations)
            assert set(actions) == set(env.possible_agents) and all(0 <= a < 6 for a in actions.values())
            observations, *_ = env.step(actions)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"algorithm": "sac"}, "algorithm must be one of"),
        ({"hyperparameters": {"seed": 3}}, "may not set"),
        ({"hyperparameters": {"n_step": 3}}, r"accepts .*n_steps"),
        ({"n_episodes": 0}, "n_episodes must be an integer >= 1"),
        ({"seed": 2**64}, r"seed must be an integer in \[0, 2\*\*64\)"),
        ({"algorithm": "dqn", "hyperparameters": {"train_freq": (1, "episode")}}, "train_freq must count steps"),
    ],
    ids=["algorithm", "reserved", "unknown", "episodes", "seed-alias", "episodic-train-freq"],
)
def test_bad_configuration(kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"algorithm": "ppo", "n_episodes": 1, "n_rounds": 3, **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        train_sb3(ENV, **options)


# -- the VecEnv adapter with SB3's own learn() -----------------------------------------------------------
def test_vec_env_truncates_with_a_terminal_observation_and_resets() -> None:
    venv = AgentsVecEnv(mechgym.make(ENV, n_rounds=2))
    venv.seed(3)
    observations = venv.reset()
    assert observations.shape == (3, 18 + 3) and venv.observation_space.contains(observations[0])
    _, rewards, dones, infos = venv.step(np.array([0, 1, 2]))
    assert rewards.dtype == np.float32 and not dones.any() and "terminal_observation" not in infos[0]
    observations, _, dones, infos = venv.step(np.array([4, 4, 4]))
    assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)
    np.testing.assert_array_equal(infos[2]["terminal_observation"][:18], np.tile(np.eye(6)[4], 3))
    np.testing.assert_array_equal(infos[2]["terminal_observation"][18:], np.eye(3)[2])
    np.testing.assert_array_equal(observations[:, :18], 0)  # the next episode started
    with pytest.raises(MechGymError, match="without step_async"):
        venv.step_wait()


def test_vec_env_learns_with_sb3_and_honours_seeds() -> None:
    """PPO(seed=...) on the adapter works (SuperSuit's crashes) and reruns identically."""

    def run() -> TraceDataset:
        recorder = RecordTraces(mechgym.make("mechgym/PublicGoods-v0", n_rounds=8))
        model = PPO("MlpPolicy", AgentsVecEnv(recorder), n_steps=16, batch_size=48, n_epochs=1, seed=7, device="cpu")
        model.learn(total_timesteps=3 * 16 * 3)
        assert model._n_updates == 3
        return recorder.dataset(seed=7)

    first, second = run(), run()
    assert first.actions.shape == (6, 8, 3)
    assert first == second


def test_vec_env_refuses_mixed_spaces() -> None:
    class Mixed(MechanismGameEnv):
        def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
            return gymnasium.spaces.Discrete(3 if agent == "agent_1" else self.n_actions)

    with pytest.raises(ConfigurationError, match="same spaces"):
        AgentsVecEnv(Mixed(mechgym.make(ENV).unwrapped.mechanism, 5))


# -- the single-agent Gymnasium view -------------------------------------------------------------------
@pytest.mark.slow
def test_ppo_on_the_single_agent_view_beats_uniform_play() -> None:
    """Against uniform opponents the game is a stationary bandit: PPO must beat playing uniformly itself."""
    env = gymnasium.make("mechgym/Congestion-v0", n_rounds=20, others="uniform")
    model = PPO("MlpPolicy", env, n_steps=200, batch_size=50, n_epochs=5, learning_rate=3e-3, gamma=0.0, seed=0)
    model.learn(total_timesteps=6_000)

    mechanism = env.unwrapped.env.mechanism
    generator = torch.Generator().manual_seed(0)
    others = torch.randint(5, (20_000, 4), generator=generator)  # uniform opponents
    expected = mechanism.counterfactual_payoffs(others)[:, 0].mean(0)  # E[u_0(a, a_-0)] for every a
    uniform_value = float(expected.mean())

    observation, _ = env.reset(seed=123)
    total, rounds = 0.0, 0
    for _ in range(10):
        done = False
        while not done:
            action, _ = model.predict(observation, deterministic=True)
            observation, reward, terminated, truncated, _ = env.step(action)
            total, rounds, done = total + float(reward), rounds + 1, terminated or truncated
        observation, _ = env.reset()
    assert total / rounds > uniform_value + 0.5 * (float(expected.max()) - uniform_value), (
        total / rounds,
        uniform_value,
        expected.tolist(),
    )


# -- mechgym record --learner ppo|a2c|dqn --------------------------------------------------------------
def test_record_sb3_agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a2c.parquet"
    argv = ["record", ENV, "--learner", "a2c", "--shared", "--sb3-kwarg", "n_steps=4", "--sb3-kwarg", "gamma=0.5"]
    assert main([*argv, "--episodes", "2", "--rounds", "6", "--seed", "3", "-q", "-o", str(path)]) == 0
    assert "shared A2C agents (Stable-Baselines3), seed 3" in capsys.readouterr().out
    traces = load_traces(path, env_id=ENV)
    expected = train_sb3(
        ENV, "a2c", n_episodes=2, n_rounds=6, seed=3, shared=True, hyperparameters={"n_steps": 4, "gamma": 0.5}
    ).traces
    assert traces == expected
    assert traces.metadata.extra["sb3"]["hyperparameters"]["gamma"] == 0.5


def test_record_sb3_refuses_learning_rule_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", ENV, "--learner", "ppo", "--beta", "2", "-q", "-o", str(tmp_path / "t.parquet")]) == 2
    assert "--sb3-kwarg KEY=VALUE" in capsys.readouterr().err
