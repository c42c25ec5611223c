"""Hedge, bandit-feedback Q-learning and smooth fictitious play: equations, population = per-agent, CLI."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mechgym
from mechgym.cli import main
from mechgym.errors import ConfigurationError
from mechgym.learners import (
    LEARNERS,
    BanditQ,
    Hedge,
    Learner,
    LearnerPolicy,
    LogitQ,
    SmoothFP,
    learner_from_dict,
    smooth_fp_belief,
)
from mechgym.random import sample_categorical, uniforms
from mechgym.traces import load_traces

NEW_LEARNERS: list[Learner] = [
    Hedge(eta=0.3, epsilon=0.05, q0=0.2),
    BanditQ(alpha=0.3, beta=4.0, epsilon=0.05, q0=0.5),
    SmoothFP(beta=4.0, epsilon=0.02, prior_weight=2.0),
]
IDS = [learner.name for learner in NEW_LEARNERS]


def test_hedge_update_and_policy_are_multiplicative_weights() -> None:
    learner = Hedge(eta=0.5)
    payoffs = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    state = learner.initial_state((), 3)
    for u in payoffs:
        state = learner.update(state, u, torch.tensor(0))
    torch.testing.assert_close(state, payoffs.sum(0))  # (H1)
    weights = torch.exp(0.5 * payoffs).prod(0)  # w_a(t+1) = w_a(t) exp(eta u_a(t))
    torch.testing.assert_close(learner.policy(state), weights / weights.sum())  # (H2), epsilon = 0
    explore = Hedge(eta=0.5, epsilon=0.3)
    torch.testing.assert_close(explore.policy(state), 0.7 * weights / weights.sum() + 0.1)
    torch.testing.assert_close(explore.log_policy(state).exp(), explore.policy(state))


def test_bandit_q_moves_only_the_played_action_towards_the_realised_payoff() -> None:
    learner = BanditQ(alpha=0.25, q0=1.0)
    q = learner.initial_state((2,), 3)
    payoffs = torch.tensor([[4.0, -2.0, 7.0], [0.0, 3.0, 5.0]])
    actions = torch.tensor([0, 2])
    expected = torch.tensor([[1.0 + 0.25 * 3.0, 1.0, 1.0], [1.0, 1.0, 1.0 + 0.25 * 4.0]])  # (B1)
    torch.testing.assert_close(learner.update(q, payoffs, actions), expected)
    assert BanditQ.feedback == "bandit" and LogitQ.feedback == "full"


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.integers(2, 6))
def test_bandit_q_never_reads_counterfactual_payoffs(seed: int, n_actions: int) -> None:
    """Changing the payoffs of the actions not played leaves the update unchanged."""
    generator = torch.Generator().manual_seed(seed)
    learner = BanditQ(alpha=0.4)
    q = torch.randn(5, n_actions, generator=generator)
    payoffs = torch.randn(5, n_actions, generator=generator)
    actions = torch.randint(n_actions, (5,), generator=generator)
    other = torch.randn(5, n_actions, generator=generator)
    other.scatter_(-1, actions[:, None], payoffs.gather(-1, actions[:, None]))  # same realised payoffs
    assert torch.equal(learner.update(q, payoffs, actions), learner.update(q, other, actions))


def test_smooth_fp_plays_the_logit_response_to_the_average_payoff() -> None:
    learner = SmoothFP(beta=2.0, epsilon=0.1, prior_weight=1.5)
    generator = torch.Generator().manual_seed(0)
    payoffs = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    state = learner.initial_state((), 4, dtype=torch.float64)
    torch.testing.assert_close(learner.policy(state), torch.full((4,), 0.25, dtype=torch.float64))  # round 1
    for t, u in enumerate(payoffs, start=1):
        state = learner.update(state, u, torch.tensor(0))
        belief = payoffs[:t].sum(0) / (1.5 + t)  # (F1)
        assert math.isclose(float(state.mean()), 1.5 + t)  # the count n = w0 + t (F3)
        torch.testing.assert_close(smooth_fp_belief(state), belief - belief.mean())
        expected = 0.9 * torch.softmax(2.0 * belief, -1) + 0.1 / 4  # (F2)
        torch.testing.assert_close(learner.policy(state), expected)
        torch.testing.assert_close(learner.log_policy(state), expected.log())


@pytest.mark.parametrize("learner", NEW_LEARNERS, ids=IDS)
def test_registered_and_round_trips(learner: Learner) -> None:
    assert LEARNERS[learner.name] is type(learner)
    assert learner_from_dict(learner.to_dict()) == learner
    probabilities = learner.policy(learner.initial_state((2, 3), 5))
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 3))


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (Hedge, {"eta": 0.0}),
        (Hedge, {"eta": float("inf")}),
        (Hedge, {"epsilon": 1.5}),
        (Hedge, {"q0": float("nan")}),
        (BanditQ, {"alpha": 0.0}),
        (BanditQ, {"alpha": 1.2}),
        (BanditQ, {"beta": -1.0}),
        (BanditQ, {"epsilon": -0.1}),
        (SmoothFP, {"prior_weight": 0.0}),
        (SmoothFP, {"beta": 0.0}),
        (SmoothFP, {"epsilon": 2.0}),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else next(iter(value)),
)
def test_bad_hyperparameters_raise(cls: type[Learner], kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        cls(**kwargs)


CASES = [
    ("mechgym/NeuralMechanism-v0", {}),
    ("mechgym/Congestion-v0", {"pricing": "subsidy"}),
    ("mechgym/PublicGoods-v0", {}),
    ("mechgym/AnonymousGame-v0", {"n_agents": 6, "n_actions": 4}),
]


@pytest.mark.parametrize("learner", NEW_LEARNERS, ids=IDS)
@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=[env_id.split("/")[1] for env_id, _ in CASES])
def test_population_equals_per_agent_policies(learner: Learner, env_id: str, kwargs: dict[str, Any]) -> None:
    """mechgym.rollout (vectorised) and mechgym.play_episodes (PettingZoo loop) agree bit for bit."""
    env = mechgym.make(env_id, n_rounds=12, **kwargs)
    looped = mechgym.play_episodes(env, learner, n_episodes=2, seed=11)
    vectorised = mechgym.rollout(env, learner, n_episodes=2, seed=11)
    np.testing.assert_array_equal(vectorised.actions, looped.actions)
    np.testing.assert_array_equal(vectorised.rewards, looped.rewards)
    assert vectorised.metadata == looped.metadata and vectorised.learner() == learner


@pytest.mark.parametrize("learner", NEW_LEARNERS, ids=IDS)
def test_learner_policy_draws_like_a_batch(learner: Learner) -> None:
    policy = LearnerPolicy(learner, n_actions=5, agent_index=1, seed=3, episode=2)
    payoffs = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    state = learner.initial_state((), 5)
    for t in range(6):
        action = policy.act()
        assert action == int(sample_categorical(learner.policy(state), uniforms(3, 2, t, 1)))
        policy.observe(payoffs[t].numpy(), action)
        state = learner.update(state, payoffs[t], torch.tensor(action))
    torch.testing.assert_close(policy.state, state)


@pytest.mark.parametrize(
    "learner", [Hedge(eta=0.5), BanditQ(alpha=0.3, beta=10.0, epsilon=0.0), SmoothFP(beta=15.0)], ids=IDS
)
def test_learners_learn_something(learner: Learner) -> None:
    """Play concentrates in the public-goods game and payoffs rise in the congestion game."""
    traces = mechgym.rollout("mechgym/PublicGoods-v0", learner, n_episodes=32, n_rounds=40, seed=0)
    first = np.bincount(traces.actions[:, 0].ravel(), minlength=7) / traces.actions[:, 0].size
    late = np.bincount(traces.actions[:, -10:].ravel(), minlength=7) / traces.actions[:, -10:].size
    entropy = lambda p: -(p[p > 0] * np.log(p[p > 0])).sum()  # noqa: E731
    assert entropy(late) < entropy(first) - 0.1
    congestion = mechgym.rollout("mechgym/Congestion-v0", learner, n_episodes=32, n_rounds=40, seed=0).rewards
    assert congestion is not None and congestion[:, -10:].mean() > congestion[:, 0].mean() + 0.05


# -- mechgym record --learner ------------------------------------------------------------------------------
ENV_ID = "mechgym/Congestion-v0"


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--learner", "hedge", "--eta", "0.2"], Hedge(eta=0.2)),
        (["--learner", "bandit-q", "--alpha", "0.5", "--q0", "1"], BanditQ(alpha=0.5, q0=1.0)),
        (
            ["--learner", "smooth-fp", "--prior-weight", "3", "--epsilon", "0.1"],
            SmoothFP(epsilon=0.1, prior_weight=3.0),
        ),
        (["--learner", "logit-q", "--beta", "5"], LogitQ(beta=5.0)),
    ],
    ids=["hedge", "bandit-q", "smooth-fp", "logit-q"],
)
def test_record_with_a_learner(tmp_path: Path, options: list[str], expected: Learner) -> None:
    path = tmp_path / "traces.parquet"
    assert (
        main(["record", ENV_ID, "--episodes", "2", "--rounds", "5", "--seed", "1", "-q", "-o", str(path), *options])
        == 0
    )
    traces = load_traces(path)
    assert traces.learner() == expected
    assert traces == mechgym.rollout(mechgym.make(ENV_ID, n_rounds=5), expected, n_episodes=2, seed=1)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--learner", "smooth-fp", "--q0", "1"], "smooth_fp learner has no parameter among --q0"),
        (["--eta", "0.1"], "default learner of mechgym/Congestion-v0 (logit_q) has no parameter among --eta"),
        (["--learner", "hedge", "--eta", "-1"], "eta must be a positive number"),
        (["--learner", "hedge", "--shared"], "--shared and --sb3-kwarg apply to"),
    ],
    ids=["smooth-fp-q0", "default-eta", "hedge-eta", "shared"],
)
def test_record_learner_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    assert main(["record", ENV_ID, "-q", "-o", str(tmp_path / "t.parquet"), *options]) == 2
    assert message in capsys.readouterr().err


def test_record_unknown_learner_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", ENV_ID, "--learner", "hedg", "-o", str(tmp_path / "t.parquet")]) == 2
    assert "invalid choice" in capsys.readouterr().err
