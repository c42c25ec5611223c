"""MechanismGameEnv: spaces, observations, payoffs, truncation, validation, seeding, pickling, the loop."""

from __future__ import annotations

import copy
import pickle

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence

from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError, InvalidActionError, MechGymError
from mechgym.learners import LogitQ
from mechgym.loop import play_episodes
from mechgym.mechanisms import CongestionMechanism
from mechgym.registration import make
from mechgym.traces.dataset import TraceDataset

BUILTIN_IDS = [
    "mechgym/NeuralMechanism-v0",
    "mechgym/Congestion-v0",
    "mechgym/PublicGoods-v0",
    "mechgym/AnonymousGame-v0",
]


def random_joint(env: MechanismGameEnv, rng: np.random.Generator) -> dict[str, int]:
    return {agent: int(rng.integers(env.n_actions)) for agent in env.agents}


@pytest.fixture(scope="module")
def envs() -> dict[str, MechanismGameEnv]:
    return {env_id: make(env_id, n_rounds=5) for env_id in BUILTIN_IDS}


# -- spaces and observations ---------------------------------------------------------------------
@pytest.mark.parametrize("env_id", BUILTIN_IDS)
def test_spaces(envs: dict[str, MechanismGameEnv], env_id: str) -> None:
    env = envs[env_id]
    n, a = env.n_agents, env.n_actions
    assert env.possible_agents == [f"agent_{i}" for i in range(n)]
    size = a if env.mechanism.anonymous else n * a
    spaces = [env.observation_space(agent) for agent in env.possible_agents]
    for agent, space in zip(env.possible_agents, spaces, strict=True):
        assert space is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
        assert space == gymnasium.spaces.Box(0.0, 1.0, (size,), np.float32)
        assert env.action_space(agent) == gymnasium.spaces.Discrete(a)
    assert len({id(space) for space in spaces}) == n  # one object per agent, seeded independently
    assert env.state_space.shape == (n * a,)
    assert env.metadata["is_parallelizable"] is True
    assert set(env.metadata) >= {"name", "render_modes", "is_parallelizable", "render_fps"}


def test_unknown_agent_space() -> None:
    env = make("mechgym/Congestion-v0")
    with pytest.raises(ConfigurationError, match="agent_3"):
        env.observation_space("agent_33")


@pytest.mark.parametrize("env_id", BUILTIN_IDS)
def test_observations_encode_the_previous_joint_action(envs: dict[str, MechanismGameEnv], env_id: str) -> None:
    env = envs[env_id]
    n, a = env.n_agents, env.n_actions
    observations, infos = env.reset(seed=0)
    assert set(observations) == set(infos) == set(env.possible_agents)
    for agent, observation in observations.items():
        assert observation.dtype == np.float32
        assert env.observation_space(agent).contains(observation)
        assert not observation.any()
        assert infos[agent] == {}
    joint = random_joint(env, np.random.default_rng(1))
    observations, *_ = env.step(joint)
    actions = np.array([joint[agent] for agent in env.possible_agents])
    if env.mechanism.anonymous:
        expected = np.bincount(actions, minlength=a).astype(np.float32) / n
    else:
        expected = np.eye(a, dtype=np.float32)[actions].reshape(-1)
    for agent, observation in observations.items():
        assert env.observation_space(agent).contains(observation)
        np.testing.assert_array_equal(observation, expected)
    np.testing.assert_array_equal(env.state(), np.eye(a, dtype=np.float32)[actions].reshape(-1))


def test_observations_are_independent_arrays() -> None:
    env = make("mechgym/NeuralMechanism-v0")
    observations, _ = env.reset(seed=0)
    observations["agent_0"][:] = 1.0
    assert not observations["agent_1"].any()


# -- payoffs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", BUILTIN_IDS)
def test_rewards_and_counterfactual_infos_are_the_mechanism_payoffs(
    envs: dict[str, MechanismGameEnv], env_id: str
) -> None:
    env = envs[env_id]
    env.reset(seed=0)
    rng = np.random.default_rng(2)
    for t in range(3):
        joint = random_joint(env, rng)
        _, rewards, terminations, truncations, infos = env.step(joint)
        actions = torch.tensor([joint[agent] for agent in env.possible_agents])
        with torch.no_grad():
            payoffs = env.mechanism(actions)
            generic = env.mechanism.counterfactual_payoffs_generic(actions)
            fast = env.mechanism.counterfactual_payoffs(actions[None])[0]
        for i, agent in enumerate(env.possible_agents):
            assert type(rewards[agent]) is float
            assert type(terminations[agent]) is bool and type(truncations[agent]) is bool
            assert rewards[agent] == float(fast[i, joint[agent]])  # the exact number the rollout records
            assert rewards[agent] == pytest.approx(float(payoffs[i]), abs=1e-5)
            cf = infos[agent]["counterfactual_payoffs"]
            assert cf.dtype == np.float32 and cf.shape == (env.n_actions,)
            np.testing.assert_allclose(cf, generic[i].numpy(), atol=1e-5)
            assert infos[agent]["round"] == t


def test_counterfactual_info_can_be_switched_off() -> None:
    env = make("mechgym/Congestion-v0", counterfactual_info=False)
    env.reset(seed=0)
    *_, infos = env.step(dict.fromkeys(env.agents, 0))
    assert infos["agent_0"] == {"round": 0}


# -- episode end ----------------------------------------------------------------------------------
def test_truncation_at_n_rounds() -> None:
    env = make("mechgym/PublicGoods-v0", n_rounds=3)
    env.reset(seed=0)
    for t in range(3):
        assert env.agents == env.possible_agents
        assert env.round == t
        _, rewards, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 1))
        assert set(rewards) == set(env.possible_agents)
        assert not any(terminations.values())
        assert all(truncations.values()) == (t == 2)
    assert env.agents == []
    with pytest.raises(MechGymError, match="call reset"):
        env.step({})
    env.reset()
    assert env.agents == env.possible_agents


def test_step_before_reset() -> None:
    env = make("mechgym/PublicGoods-v0")
    with pytest.raises(MechGymError, match="never reset"):
        env.step(dict.fromkeys(env.possible_agents, 0))


# -- action validation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"agent_1": 7}, r"actions must be integers in \[0, 7\) for mechgym/PublicGoods-v0; got 7 for agent_1"),
        ({"agent_2": -1}, r"got -1 for agent_2"),
        ({"agent_0": 1.0}, r"integers in \[0, 7\).*got 1\.0 \(float\) for agent_0"),
        ({"agent_0": True}, r"got True \(bool\) for agent_0"),
        ({"agent_0": "3"}, r"got '3' \(str\)"),
        ({"agent_0": np.array([1])}, r"ndarray"),
        ({"agent_9": 0}, r"not live: \['agent_9'\]"),
    ],
)
def test_invalid_actions(change: dict[str, object], message: str) -> None:
    env = make("mechgym/PublicGoods-v0")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=message):
        env.step({**dict.fromkeys(env.agents, 0), **change})
    assert env.round == 0  # a rejected step changes nothing


def test_missing_agents_and_non_dict_actions() -> None:
    env = make("mechgym/PublicGoods-v0")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="lack \\['agent_2'\\]"):
        env.step({"agent_0": 0, "agent_1": 0})
    with pytest.raises(InvalidActionError, match="must be a dict"):
        env.step([0, 0, 0])  # type: ignore[arg-type]


def test_numpy_and_zero_dimensional_actions_are_accepted() -> None:
    env = make("mechgym/PublicGoods-v0")
    env.reset(seed=0)
    _, rewards_np, *_ = env.step({"agent_0": np.int32(3), "agent_1": np.int64(1), "agent_2": np.array(6)})
    env.reset(seed=0)
    _, rewards_py, *_ = env.step({"agent_0": 3, "agent_1": 1, "agent_2": 6})
    assert rewards_np == rewards_py


# -- construction, rendering, seeding, pickling -----------------------------------------------------
def test_constructor_validation() -> None:
    mechanism = CongestionMechanism().freeze()
    with pytest.raises(ConfigurationError, match="n_rounds"):
        MechanismGameEnv(mechanism, n_rounds=0)
    with pytest.raises(ConfigurationError, match="render_mode"):
        MechanismGameEnv(mechanism, render_mode="human")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Mechanism"):
        MechanismGameEnv(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    env = MechanismGameEnv(mechanism, 7)
    assert env.env_id is None and env.env_kwargs == {}
    assert env.default_learner == LogitQ()
    assert "CongestionMechanism" in repr(env)


def test_render() -> None:
    env = make("mechgym/Congestion-v0", render_mode="ansi")
    env.reset(seed=0)
    assert "no actions yet" in env.render()
    env.step({"agent_0": 0, "agent_1": 1, "agent_2": 2, "agent_3": 3})
    text = env.render()
    assert "actions: 0 1 2 3" in text and "payoffs:" in text and "mechgym/Congestion-v0" in text
    quiet = make("mechgym/Congestion-v0")
    quiet.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode='ansi'"):
        assert quiet.render() is None


def test_reset_seeds_np_random() -> None:
    env = make("mechgym/Congestion-v0")
    env.reset(seed=3)
    first = env.np_random.integers(1 << 30, size=4)
    env.reset(seed=3)
    np.testing.assert_array_equal(env.np_random.integers(1 << 30, size=4), first)
    env.reset(seed=4)
    assert not np.array_equal(env.np_random.integers(1 << 30, size=4), first)


@pytest.mark.parametrize("env_id", BUILTIN_IDS)
def test_same_actions_same_outcomes(env_id: str) -> None:
    a, b = make(env_id, n_rounds=4), make(env_id, n_rounds=4)
    a.reset(seed=1)
    b.reset(seed=1)
    rng = np.random.default_rng(0)
    while a.agents:
        joint = random_joint(a, rng)
        out_a, out_b = a.step(joint), b.step(joint)
        for part_a, part_b in zip(out_a, out_b, strict=True):
            assert data_equivalence(part_a, part_b, exact=True)


@pytest.mark.parametrize("clone", [pickle.loads, copy.deepcopy], ids=["pickle", "deepcopy"])
def test_pickled_env_continues_identically(clone: object) -> None:
    env = make("mechgym/NeuralMechanism-v0", n_rounds=4)
    env.reset(seed=0)
    env.step(dict.fromkeys(env.agents, 2))
    other = clone(pickle.dumps(env)) if clone is pickle.loads else clone(env)  # type: ignore[operator]
    assert other.env_id == env.env_id and other.env_kwargs == env.env_kwargs
    joint = {"agent_0": 1, "agent_1": 5, "agent_2": 0}
    for part_a, part_b in zip(env.step(joint), other.step(joint), strict=True):
        assert data_equivalence(part_a, part_b, exact=True)


def test_with_n_rounds() -> None:
    env = make("mechgym/Congestion-v0", pricing="subsidy")
    shorter = env.with_n_rounds(5)
    assert shorter.mechanism is env.mechanism and shorter.n_rounds == 5
    assert shorter.env_kwargs == {**env.env_kwargs, "n_rounds": 5}
    assert make(shorter.env_id, **shorter.env_kwargs).n_rounds == 5  # type: ignore[arg-type]


# -- the PettingZoo loop --------------------------------------------------------------------------
def test_play_episodes_shapes_and_metadata() -> None:
    env = make("mechgym/Congestion-v0", n_rounds=6)
    learner = LogitQ(alpha=0.3, beta=2.0, epsilon=0.1)
    traces = play_episodes(env, learner, n_episodes=3, seed=11)
    assert isinstance(traces, TraceDataset)
    assert traces.actions.shape == (3, 6, 4) and traces.rewards is not None and traces.rewards.shape == (3, 6, 4)
    meta = traces.metadata
    assert (meta.n_agents, meta.n_actions, meta.seed) == (4, 5, 11)
    assert meta.env_id == "mechgym/Congestion-v0" and meta.env_kwargs == env.env_kwargs
    assert meta.learner == learner.to_dict()
    assert play_episodes(env, learner, n_episodes=3, seed=11) == traces
    assert play_episodes(env, learner, n_episodes=3, seed=12) != traces


def test_play_episodes_rewards_are_the_payoffs_of_the_recorded_actions() -> None:
    env = make("mechgym/PublicGoods-v0")
    traces = play_episodes(env, None, n_episodes=2, seed=0, n_rounds=5)
    with torch.no_grad():
        payoffs = env.mechanism(traces.actions_tensor())
    np.testing.assert_allclose(traces.rewards, payoffs.numpy(), atol=1e-5)  # type: ignore[arg-type]
    assert traces.metadata.learner == env.default_learner.to_dict()


def test_play_episodes_other_horizon() -> None:
    env = make("mechgym/Congestion-v0")
    traces = play_episodes(env, None, n_episodes=1, seed=0, n_rounds=4)
    assert traces.n_rounds == 4 and traces.metadata.env_kwargs["n_rounds"] == 4
    assert env.n_rounds == 60  # the given environment is untouched
    longer = play_episodes(env, None, n_episodes=1, seed=0, n_rounds=7)
    np.testing.assert_array_equal(longer.actions[:, :4], traces.actions)  # the same draws, round by round


def test_play_episodes_validation() -> None:
    env = make("mechgym/Congestion-v0", n_rounds=3)
    with pytest.raises(ConfigurationError, match="n_episodes"):
        play_episodes(env, None, n_episodes=0, seed=0)
    with pytest.raises(ConfigurationError, match="seed"):
        play_episodes(env, None, n_episodes=1, seed=-1)
    with pytest.raises(ConfigurationError, match="counterfactual_info=True"):
        play_episodes(make("mechgym/Congestion-v0", counterfactual_info=False), None, n_episodes=1, seed=0)


@pytest.mark.parametrize("env_id", BUILTIN_IDS)
def test_play_episodes_equals_the_vectorised_rollout(env_id: str) -> None:
    rollout = pytest.importorskip("mechgym.rollout").rollout
    env = make(env_id, n_rounds=6)
    assert play_episodes(env, None, n_episodes=3, seed=7) == rollout(env, None, n_episodes=3, seed=7)


def test_play_episodes_equals_the_rollout_on_an_unregistered_env_with_another_horizon() -> None:
    rollout = pytest.importorskip("mechgym.rollout").rollout
    env = MechanismGameEnv(CongestionMechanism(n_agents=3, n_actions=4, seed=2).freeze(), n_rounds=9)
    looped = play_episodes(env, None, n_episodes=2, seed=1, n_rounds=5)
    assert looped.metadata.env_id is None and looped.metadata.env_kwargs == {"n_rounds": 5}
    assert looped == rollout(env, None, n_episodes=2, n_rounds=5, seed=1)
