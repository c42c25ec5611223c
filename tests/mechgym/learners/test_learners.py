"""Logit-Q (paper Eq. 2-3), the per-agent policy and the counter-based random numbers."""

from __future__ import annotations

import math

import pytest
import torch

from mechgym.errors import ConfigurationError
from mechgym.learners import LearnerPolicy, LogitQ, learner_from_dict
from mechgym.random import sample_categorical, uniform, uniforms


def test_update_is_eq2() -> None:
    learner = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
    q = torch.tensor([0.0, 1.0, -2.0])
    u = torch.tensor([1.0, 1.0, 2.0])
    torch.testing.assert_close(learner.update(q, u, torch.tensor(0)), 0.75 * q + 0.25 * u)


def test_policy_is_eq3_and_log_policy_agrees() -> None:
    learner = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
    q = torch.tensor([[0.3, -1.0, 2.0, 0.0]])
    expected = 0.94 * torch.softmax(3.0 * q, -1) + 0.06 / 4
    torch.testing.assert_close(learner.policy(q), expected)
    torch.testing.assert_close(learner.log_policy(q).exp(), expected)
    assert math.isclose(float(learner.policy(q).sum()), 1.0, rel_tol=1e-6)


def test_log_policy_is_stable_for_extreme_scores_and_zero_exploration() -> None:
    greedy = LogitQ(epsilon=0.0, beta=50.0)
    log_p = greedy.log_policy(torch.tensor([1000.0, 0.0, -1000.0]))
    assert torch.isfinite(log_p[0]) and log_p[0] == 0.0
    explore = LogitQ(epsilon=0.1, beta=50.0)
    assert torch.isfinite(explore.log_policy(torch.tensor([1000.0, 0.0, -1000.0]))).all()


def test_initial_state_and_dict_roundtrip() -> None:
    learner = LogitQ(alpha=0.2, beta=6.0, epsilon=0.02, q0=0.5)
    assert torch.equal(learner.initial_state((2, 3), 4), torch.full((2, 3, 4), 0.5))
    assert learner_from_dict(learner.to_dict()) == learner
    assert learner.replace(beta=1.0).beta == 1.0


def test_shifted_learner_uses_reference_factors() -> None:
    shifted = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06).shifted()
    assert shifted == LogitQ(alpha=0.15, beta=4.2, epsilon=0.09)
    assert LogitQ(epsilon=0.4).shifted().epsilon == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0.0}, {"alpha": 1.5}, {"beta": 0.0}, {"beta": float("inf")}, {"epsilon": -0.1}, {"q0": float("nan")}],
)
def test_bad_hyperparameters_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        LogitQ(**kwargs)


def test_unknown_learner_name_suggests() -> None:
    with pytest.raises(ConfigurationError, match="logit_q"):
        learner_from_dict({"name": "logitq", "params": {}})


def test_uniforms_are_deterministic_uniform_and_layout_free() -> None:
    grid = uniforms(
        7, torch.arange(50)[:, None, None], torch.arange(40)[None, :, None], torch.arange(30)[None, None, :]
    )
    assert grid.dtype == torch.float32 and grid.shape == (50, 40, 30)
    assert float(grid.min()) >= 0.0 and float(grid.max()) < 1.0
    assert abs(float(grid.mean()) - 0.5) < 0.01 and abs(float(grid.var()) - 1 / 12) < 0.005
    assert float(grid[3, 5, 7]) == float(uniforms(7, 3, 5, 7)) == uniform(7, 3, 5, 7)
    for seed, counters in ((0, (0, 0, 0)), (2**40 + 3, (2**33, 7, 999)), (5, (1, 2, 3))):
        assert uniform(seed, *counters, stream=2) == float(uniforms(seed, *counters, stream=2))
    assert not torch.equal(
        grid,
        uniforms(8, torch.arange(50)[:, None, None], torch.arange(40)[None, :, None], torch.arange(30)[None, None, :]),
    )
    # neighbouring counters are not correlated
    flat = grid.flatten()
    assert abs(float(torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1])) < 0.02


def test_sample_categorical_inverse_cdf() -> None:
    probabilities = torch.tensor([0.2, 0.5, 0.3])
    draws = [int(sample_categorical(probabilities, torch.tensor(u))) for u in (0.0, 0.19, 0.2, 0.69, 0.7, 0.999)]
    assert draws == [0, 0, 1, 1, 2, 2]
    counts = torch.bincount(
        sample_categorical(probabilities.expand(20000, 3), uniforms(0, torch.arange(20000), 0, 0)), minlength=3
    )
    torch.testing.assert_close(counts / 20000.0, probabilities, atol=0.015, rtol=0)


def test_learner_policy_plays_the_same_draws_as_a_batch() -> None:
    learner = LogitQ()
    policy = LearnerPolicy(learner, n_actions=5, agent_index=2, seed=3, episode=4)
    payoffs = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    state = learner.initial_state((), 5)
    for t in range(6):
        expected = int(sample_categorical(learner.policy(state), uniforms(3, 4, t, 2)))
        action = policy.act()
        assert action == expected
        policy.observe(payoffs[t].numpy(), action)
        state = learner.update(state, payoffs[t], torch.tensor(action))
    torch.testing.assert_close(policy.state, state)
