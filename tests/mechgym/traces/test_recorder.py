"""RecordTraces: PettingZoo conformance, faithful recording whoever plays, and its error messages."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.test import api_test as check_aec_api
from pettingzoo.test import parallel_api_test as check_parallel_api
from pettingzoo.utils.conversions import parallel_to_aec

import mechgym
from mechgym.errors import ConfigurationError, TraceDatasetError
from mechgym.learners import LogitQ
from mechgym.loop import play_episodes
from mechgym.traces import RecordTraces, TraceDataset, load_traces

ENV_ID = "mechgym/Congestion-v0"


def recorded_env(n_rounds: int = 6, **kwargs: Any) -> RecordTraces:
    return RecordTraces(mechgym.make(ENV_ID, n_rounds=n_rounds), **kwargs)


def play_random(env: RecordTraces, n_episodes: int, seed: int = 0) -> list[np.ndarray]:
    """Play uniformly random joint actions; return the actions played per episode ``[T, N]``."""
    rng = np.random.default_rng(seed)
    played = []
    for episode in range(n_episodes):
        env.reset(seed=seed + episode)
        rounds = []
        while env.agents:
            joint = {agent: int(rng.integers(env.action_space(agent).n)) for agent in env.agents}
            env.step(joint)
            rounds.append([joint[agent] for agent in env.possible_agents])
        played.append(np.array(rounds))
    return played


# -- conformance -------------------------------------------------------------------------------
def test_parallel_api() -> None:
    check_parallel_api(recorded_env(), num_cycles=50)


@pytest.mark.filterwarnings("ignore:Observation numpy array is all zeros")
def test_aec_api_through_conversion() -> None:
    check_aec_api(parallel_to_aec(recorded_env()), num_cycles=50)


def test_forwards_attributes_of_the_wrapped_env() -> None:
    inner = mechgym.make(ENV_ID, n_rounds=6)
    env = RecordTraces(inner)
    assert env.unwrapped is inner
    assert env.mechanism is inner.mechanism
    assert env.env_id == ENV_ID
    assert env.n_rounds == 6
    assert env.possible_agents == inner.possible_agents
    assert env.metadata is inner.metadata
    assert env.action_space("agent_0") is inner.action_space("agent_0")
    with pytest.raises(AttributeError):
        _ = env._index  # private attributes are not forwarded, as in PettingZoo wrappers


def test_wrappers_stack() -> None:
    inner = recorded_env()
    outer = RecordTraces(inner)
    play_random(outer, 2)
    assert outer.unwrapped is inner.unwrapped
    np.testing.assert_array_equal(outer.dataset().actions, inner.dataset().actions)


# -- recording ---------------------------------------------------------------------------------
def test_records_exactly_what_was_played() -> None:
    env = recorded_env()
    played = play_random(env, 3)
    traces = env.dataset()
    assert isinstance(traces, TraceDataset)
    np.testing.assert_array_equal(traces.actions, np.stack(played))
    assert traces.metadata.env_id == ENV_ID
    assert traces.metadata.env_kwargs["n_rounds"] == 6
    assert (traces.metadata.n_agents, traces.metadata.n_actions) == (4, 5)
    assert traces.metadata.extra["reset_seeds"] == [0, 1, 2]


def test_learners_through_the_recorder_match_rollout() -> None:
    """The recorder sees the LearnerPolicy loop, which matches the vectorised rollout bit for bit."""
    env = recorded_env(n_rounds=8)
    reference = play_episodes(env, LogitQ(), n_episodes=3, seed=5)
    recorded = env.dataset(learner=LogitQ(), seed=5)
    np.testing.assert_array_equal(recorded.actions, reference.actions)
    assert recorded.rewards is not None and reference.rewards is not None
    np.testing.assert_array_equal(recorded.rewards.view(np.uint32), reference.rewards.view(np.uint32))
    assert (recorded.metadata.learner, recorded.metadata.seed) == (reference.metadata.learner, reference.metadata.seed)
    assert recorded.metadata.extra["reset_seeds"] == [5, 6, 7]
    vectorised = mechgym.rollout(mechgym.make(ENV_ID, n_rounds=8), LogitQ(), n_episodes=3, seed=5)
    np.testing.assert_array_equal(recorded.actions, vectorised.actions)
    assert recorded.rewards is not None and vectorised.rewards is not None
    np.testing.assert_array_equal(recorded.rewards, vectorised.rewards)


def test_rewards_match_the_env() -> None:
    env = recorded_env(n_rounds=3)
    env.reset(seed=0)
    rewards = []
    while env.agents:
        _, step_rewards, *_ = env.step(dict.fromkeys(env.agents, 1))
        rewards.append([step_rewards[agent] for agent in env.possible_agents])
    traces = env.dataset()
    assert traces.rewards is not None
    np.testing.assert_array_equal(traces.rewards, np.array([rewards], dtype=np.float32))


def test_without_rewards() -> None:
    env = recorded_env(record_rewards=False)
    play_random(env, 1)
    assert env.dataset().rewards is None


def test_interrupted_episode_is_dropped() -> None:
    env = recorded_env()
    played = play_random(env, 2)
    env.reset(seed=9)
    env.step(dict.fromkeys(env.agents, 0))  # one round, then a new episode
    played += play_random(env, 1, seed=3)
    assert env.n_episodes == 3
    np.testing.assert_array_equal(env.dataset().actions, np.stack(played))


def test_rejected_step_is_not_recorded() -> None:
    env = recorded_env(n_rounds=2)
    env.reset(seed=0)
    with pytest.raises(mechgym.InvalidActionError):
        env.step(dict.fromkeys(env.agents, 99))
    env.step(dict.fromkeys(env.agents, 0))
    env.step(dict.fromkeys(env.agents, 1))
    np.testing.assert_array_equal(env.dataset().actions[0], [[0] * 4, [1] * 4])


def test_dataset_is_a_snapshot() -> None:
    env = recorded_env()
    play_random(env, 1)
    first = env.dataset()
    play_random(env, 2, seed=1)
    assert len(first) == 1 and len(env.dataset()) == 3


def test_clear() -> None:
    env = recorded_env()
    play_random(env, 2)
    env.reset(seed=0)
    env.step(dict.fromkeys(env.agents, 0))
    env.clear()
    assert env.n_episodes == 0
    while env.agents:  # the episode in progress when clear() was called is not recorded
        env.step(dict.fromkeys(env.agents, 0))
    assert env.n_episodes == 0
    played = play_random(env, 1)
    np.testing.assert_array_equal(env.dataset().actions, np.stack(played))


def test_metadata_overrides() -> None:
    env = recorded_env()
    play_random(env, 1)
    traces = env.dataset(learner=LogitQ(alpha=0.5), seed=7, extra={"agents": "random"})
    assert traces.metadata.learner == LogitQ(alpha=0.5).to_dict()
    assert traces.metadata.seed == 7
    assert traces.metadata.extra["agents"] == "random"
    assert traces.metadata.extra["reset_seeds"] == [0]


@pytest.mark.parametrize(
    "override, message",
    [({"lerner": None}, "Did you mean 'learner'"), ({"n_agents": 3}, "come from the environment")],
    ids=["typo", "derived"],
)
def test_bad_metadata_override(override: dict[str, Any], message: str) -> None:
    env = recorded_env()
    play_random(env, 1)
    with pytest.raises(TraceDatasetError, match=message):
        env.dataset(**override)


def test_no_completed_episode() -> None:
    env = recorded_env()
    with pytest.raises(TraceDatasetError, match="no completed episodes"):
        env.dataset()
    env.reset(seed=0)
    env.step(dict.fromkeys(env.agents, 0))
    with pytest.raises(TraceDatasetError, match="no completed episodes"):
        env.dataset()


def test_unequal_episode_lengths() -> None:
    env = recorded_env(n_rounds=4)
    play_random(env, 1)
    env.unwrapped.n_rounds = 6
    play_random(env, 1)
    with pytest.raises(TraceDatasetError, match=r"different lengths \[4, 6\]"):
        env.dataset()


def test_save_and_load(tmp_path: Path) -> None:
    env = recorded_env()
    play_random(env, 2)
    traces = env.dataset(learner=LogitQ())
    assert load_traces(traces.save(tmp_path / "t.parquet"), env_id=ENV_ID) == traces


def test_pickles_with_its_recording() -> None:
    env = recorded_env()
    play_random(env, 2)
    copy = pickle.loads(pickle.dumps(env))
    assert copy.dataset() == env.dataset()


# -- other ParallelEnvs ------------------------------------------------------------------------
class ToyEnv(ParallelEnv[str, np.ndarray, Any]):
    """Two agents; ``horizons`` gives the round after which each agent is done (agents may leave early)."""

    metadata = {"name": "toy_v0", "render_modes": [], "is_parallelizable": True}  # noqa: RUF012

    def __init__(self, action_spaces: list[spaces.Space[Any]], horizons: tuple[int, ...] = (3, 3)) -> None:
        self.possible_agents = [f"p{i}" for i in range(len(action_spaces))]
        self.agents: list[str] = []
        self._action_spaces = dict(zip(self.possible_agents, action_spaces, strict=True))
        self._observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.horizons = dict(zip(self.possible_agents, horizons, strict=True))
        self.render_mode = None
        self.t = 0

    @functools.cache  # noqa: B019 - one space object per agent
    def observation_space(self, agent: str) -> spaces.Box:
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return self._action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        self.agents, self.t = list(self.possible_agents), 0
        return {a: np.zeros(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self.t += 1
        live = list(self.agents)
        done = {a: self.t >= self.horizons[a] for a in live}
        self.agents = [a for a in live if not done[a]]
        return (
            {a: np.zeros(1, np.float32) for a in live},
            {a: float(self.t) for a in live},
            dict.fromkeys(live, False),
            done,
            {a: {} for a in live},
        )


def test_any_discrete_parallel_env() -> None:
    env = RecordTraces(ToyEnv([spaces.Discrete(3), spaces.Discrete(3)]))
    check_parallel_api(env, num_cycles=10)
    env.clear()
    env.reset()
    for t in range(3):
        env.step({"p0": np.int64(t), "p1": np.array(2 - t)})
    traces = env.dataset()
    np.testing.assert_array_equal(traces.actions[0], [[0, 2], [1, 1], [2, 0]])
    assert traces.metadata.env_id is None and traces.metadata.env_kwargs == {}
    assert traces.rewards is not None
    np.testing.assert_array_equal(traces.rewards[0], [[1, 1], [2, 2], [3, 3]])


def test_agent_leaving_early_is_reported() -> None:
    env = RecordTraces(ToyEnv([spaces.Discrete(2), spaces.Discrete(2)], horizons=(3, 2)))
    env.reset()
    while env.agents:
        env.step(dict.fromkeys(env.agents, 1))
    with pytest.raises(TraceDatasetError, match="agent 'p1' did not act in round 2 of recorded episode 0"):
        env.dataset()


@pytest.mark.parametrize(
    "action_spaces, message",
    [
        ([spaces.Box(0, 1, (1,)), spaces.Discrete(2)], "Discrete"),
        ([spaces.Discrete(2, start=1), spaces.Discrete(2)], "numbered from 0"),
        ([spaces.Discrete(2), spaces.Discrete(3)], "same number of actions"),
    ],
    ids=["box", "start", "unequal"],
)
def test_rejects_unsupported_action_spaces(action_spaces: list[spaces.Space[Any]], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RecordTraces(ToyEnv(action_spaces))
