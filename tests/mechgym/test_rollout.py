"""The vectorised rollout equals the plain PettingZoo loop bit for bit, and is reproducible."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import mechgym
from mechgym.errors import ConfigurationError
from mechgym.learners import LogitQ
from mechgym.rollout import simulate

rollout_module = importlib.import_module("mechgym.rollout")  # the module (mechgym.rollout is also the function)

CASES = [
    ("mechgym/NeuralMechanism-v0", {}),
    ("mechgym/Congestion-v0", {"pricing": "subsidy"}),
    ("mechgym/PublicGoods-v0", {}),
    ("mechgym/AnonymousGame-v0", {"n_agents": 12, "n_actions": 5}),
    ("mechgym/NeuralMechanism-v0", {"n_agents": 6, "n_actions": 5}),  # too large for the payoff table
]


@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=[f"{e}-{k}" for e, k in CASES])
def test_rollout_equals_pettingzoo_loop(env_id: str, kwargs: dict[str, object]) -> None:
    learner = LogitQ(alpha=0.3, beta=4.0, epsilon=0.05)
    env = mechgym.make(env_id, n_rounds=25, **kwargs)
    looped = mechgym.play_episodes(env, learner, n_episodes=3, seed=11)
    vectorised = mechgym.rollout(env, learner, n_episodes=3, seed=11)
    np.testing.assert_array_equal(vectorised.actions, looped.actions)
    np.testing.assert_array_equal(vectorised.rewards, looped.rewards)
    assert vectorised.metadata == looped.metadata


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("mechgym/NeuralMechanism-v0", {}), ("mechgym/AnonymousGame-v0", {"n_agents": 12, "n_actions": 5})],
    ids=["table-game", "anonymous-game"],
)
@pytest.mark.parametrize("rounds_per_block", [1, 5], ids=["one-round-blocks", "five-round-blocks"])
def test_blocks_of_draws_and_the_counterfactual_table_change_no_bit(
    env_id: str, kwargs: dict[str, object], rounds_per_block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    mechanism = mechgym.make(env_id, **kwargs).mechanism
    learner = LogitQ(alpha=0.3, beta=4.0, epsilon=0.05)
    fast = simulate(mechanism, learner, 3, 12, seed=4, episode_offset=2)  # every round's draws hashed at once
    monkeypatch.setattr(rollout_module, "DRAW_BLOCK_ELEMENTS", rounds_per_block * 3 * mechanism.n_agents)
    monkeypatch.setattr(rollout_module, "MAX_LOOKUP_ELEMENTS", 0)  # the mechanism's own call every round
    plain = simulate(mechanism, learner, 3, 12, seed=4, episode_offset=2)
    assert torch.equal(fast[0], plain[0]) and torch.equal(fast[1], plain[1])


def test_same_seed_same_traces_other_seed_other_traces() -> None:
    first = mechgym.rollout("mechgym/Congestion-v0", n_episodes=4, n_rounds=20, seed=3)
    second = mechgym.rollout("mechgym/Congestion-v0", n_episodes=4, n_rounds=20, seed=3)
    third = mechgym.rollout("mechgym/Congestion-v0", n_episodes=4, n_rounds=20, seed=4)
    assert first == second
    assert not np.array_equal(first.actions, third.actions)


def test_episode_offset_extends_a_dataset() -> None:
    whole = mechgym.rollout("mechgym/PublicGoods-v0", n_episodes=5, n_rounds=10, seed=2)
    tail = mechgym.rollout("mechgym/PublicGoods-v0", n_episodes=2, n_rounds=10, seed=2, episode_offset=3)
    np.testing.assert_array_equal(whole.actions[3:], tail.actions)
    assert tail.metadata.extra == {"episode_offset": 3}


def test_metadata_records_provenance() -> None:
    traces = mechgym.rollout("mechgym/AnonymousGame-v0", n_episodes=2, n_rounds=7, seed=5)
    meta = traces.metadata
    assert (meta.env_id, meta.seed, meta.n_agents, meta.n_actions) == ("mechgym/AnonymousGame-v0", 5, 40, 10)
    assert meta.learner == LogitQ(alpha=0.2, beta=6.0, epsilon=0.02).to_dict()
    assert meta.env_kwargs["n_rounds"] == 7
    assert traces.learner() == LogitQ(alpha=0.2, beta=6.0, epsilon=0.02)
    assert traces.rewards is not None and traces.rewards.shape == (2, 7, 40)


def test_rewards_are_the_mechanism_payoffs() -> None:
    env = mechgym.make("mechgym/NeuralMechanism-v0")
    traces = mechgym.rollout(env, n_episodes=2, n_rounds=6, seed=0)
    payoffs = env.unwrapped.mechanism(traces.actions_tensor()).numpy()
    np.testing.assert_allclose(traces.rewards, payoffs, rtol=1e-6, atol=1e-6)


def test_learners_learn_something() -> None:
    """Play drifts away from uniform: late rounds have lower action entropy than the first round."""
    traces = mechgym.rollout(
        "mechgym/Congestion-v0", LogitQ(beta=20.0, epsilon=0.0), n_episodes=64, n_rounds=40, seed=0
    )
    first = np.bincount(traces.actions[:, 0].ravel(), minlength=5) / traces.actions[:, 0].size
    late = np.bincount(traces.actions[:, -10:].ravel(), minlength=5) / traces.actions[:, -10:].size
    entropy = lambda p: -(p[p > 0] * np.log(p[p > 0])).sum()  # noqa: E731
    assert entropy(late) < entropy(first) - 0.05


@pytest.mark.parametrize("bad", [{"n_episodes": 0}, {"n_rounds": -1}, {"seed": -2}, {"n_episodes": 1.5}])
def test_bad_counts_raise(bad: dict[str, object]) -> None:
    kwargs = {"n_episodes": 2, "n_rounds": 3, "seed": 0, **bad}
    with pytest.raises(ConfigurationError):
        mechgym.rollout("mechgym/Congestion-v0", **kwargs)  # type: ignore[arg-type]


def test_unknown_id_suggests() -> None:
    with pytest.raises(mechgym.UnknownEnvironmentError, match="Congestion-v0"):
        mechgym.rollout("mechgym/Congestoin-v0", n_episodes=1)
