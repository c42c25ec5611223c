"""Parallel likelihoods of Hedge, smooth fictitious play and bandit-Q against their step-by-step recursions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import diml_inverse
import mechgym
from diml_inverse.dynamics import (
    Unroll,
    bandit_q_log_likelihood,
    bandit_q_scores,
    bandit_q_trace_log_probs,
    hedge_scores,
    smooth_fp_beliefs,
)
from diml_inverse.likelihood import log_likelihood
from mechgym.errors import ConfigurationError, InvalidActionError
from mechgym.learners import BanditQ, Hedge, Learner, LogitQ, SmoothFP
from mechgym.mechanisms import (
    AnonymousCountMechanism,
    CongestionMechanism,
    Mechanism,
    NeuralJointMechanism,
    TabularMechanism,
)
from mechgym.traces import TraceDataset, TraceMetadata

FAMILIES: dict[str, Callable[[int, int, int], Mechanism]] = {
    "neural": lambda n, a, seed: NeuralJointMechanism(n, a, hidden=16, seed=seed),
    "anonymous": lambda n, a, seed: AnonymousCountMechanism(n, a, embed_dim=4, hidden=16, seed=seed),
    "tabular": lambda n, a, seed: TabularMechanism(n, a, init="normal", seed=seed),
    "congestion": lambda n, a, seed: CongestionMechanism(n, a, seed=seed),
}


def random_actions(n_episodes: int, n_rounds: int, n_agents: int, n_actions: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n_actions, (n_episodes, n_rounds, n_agents), generator=generator)


def recursion(mechanism: Mechanism, actions: Tensor, learner: Learner) -> Tensor:
    """Eq. (5) term by term, each rule's update written from its equation: ``[E, T-1, N]``.

    One mechanism call per (round, agent) on that agent's ``A`` deviations, as in Algorithm 1.
    """
    n_episodes, n_rounds, n_agents = actions.shape
    n_actions = mechanism.n_actions
    dtype = mechanism._dtype()
    if isinstance(learner, Hedge):
        state = [torch.full((n_episodes, n_actions), learner.q0, dtype=dtype) for _ in range(n_agents)]
    elif isinstance(learner, SmoothFP):
        state = [torch.zeros(n_episodes, n_actions, dtype=dtype) for _ in range(n_agents)]  # sum of u so far
    else:
        assert isinstance(learner, BanditQ)
        state = [torch.full((n_episodes, n_actions), learner.q0, dtype=dtype) for _ in range(n_agents)]
    rounds = []
    for t in range(n_rounds - 1):
        terms = []
        for i in range(n_agents):
            joint = actions[:, t, None, :].repeat(1, n_actions, 1)  # [E, A, N]
            joint[:, :, i] = torch.arange(n_actions)
            u = mechanism(joint)[..., i]  # u_i(a', a_-i(t)), [E, A]
            if isinstance(learner, Hedge):
                state[i] = state[i] + u  # (H1)
                scores, temperature = state[i], learner.eta
            elif isinstance(learner, SmoothFP):
                state[i] = state[i] + u
                scores, temperature = state[i] / (learner.prior_weight + t + 1), learner.beta  # (F1)
            else:
                assert isinstance(learner, BanditQ)
                played = actions[:, t, i]
                r = mechanism(actions[:, t])[:, i]  # realised payoff
                q = state[i].clone()
                rows = torch.arange(n_episodes)
                q[rows, played] = q[rows, played] + learner.alpha * (r - q[rows, played])  # (B1)
                state[i] = q
                scores, temperature = q, learner.beta
            pi = (1 - learner.epsilon) * torch.softmax(temperature * scores, -1) + learner.epsilon / n_actions
            terms.append(torch.log(pi.gather(-1, actions[:, t + 1, i, None]).squeeze(-1)))
        rounds.append(torch.stack(terms, dim=-1))
    return torch.stack(rounds, dim=1)


def learner_chain(mechanism: Mechanism, actions: Tensor, learner: Learner) -> Tensor:
    """The same terms from the simulating learner's own ``update`` and ``log_policy`` (its state encoding)."""
    n_episodes, n_rounds, n_agents = actions.shape
    state = learner.initial_state((n_episodes, n_agents), mechanism.n_actions, dtype=mechanism._dtype())
    terms = []
    for t in range(n_rounds - 1):
        state = learner.update(state, mechanism.counterfactual_payoffs(actions[:, t]), actions[:, t])
        terms.append(learner.log_policy(state).gather(-1, actions[:, t + 1, :, None]).squeeze(-1))
    return torch.stack(terms, dim=1)


def parallel(mechanism: Mechanism, actions: Tensor, learner: Learner, chunk_size: int | None = None) -> Tensor:
    if isinstance(learner, BanditQ):
        return bandit_q_log_likelihood(mechanism, actions, learner, reduction="none", chunk_size=chunk_size)
    return log_likelihood(mechanism, actions, learner, reduction="none", chunk_size=chunk_size)


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    family = draw(st.sampled_from(sorted(FAMILIES)))
    n_agents, n_actions = draw(st.integers(2, 4)), draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**16))
    mechanism = FAMILIES[family](n_agents, n_actions, seed).double()
    epsilon = draw(st.sampled_from([0.0, 0.05, 0.3]))
    kind = draw(st.sampled_from(["hedge", "smooth_fp", "bandit_q"]))
    if kind == "hedge":
        learner: Learner = Hedge(eta=draw(st.floats(0.05, 2.0)), epsilon=epsilon, q0=draw(st.floats(-1.0, 1.0)))
    elif kind == "smooth_fp":
        learner = SmoothFP(beta=draw(st.floats(0.5, 8.0)), epsilon=epsilon, prior_weight=draw(st.floats(0.1, 5.0)))
    else:
        alpha = draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0)))
        learner = BanditQ(alpha=alpha, beta=draw(st.floats(0.5, 8.0)), epsilon=epsilon, q0=draw(st.floats(-1.0, 1.0)))
    actions = random_actions(draw(st.integers(1, 3)), draw(st.integers(2, 14)), n_agents, n_actions, seed)
    chunk_size = draw(st.one_of(st.none(), st.integers(1, 6)))
    return {"mechanism": mechanism, "learner": learner, "actions": actions, "chunk_size": chunk_size}


@settings(max_examples=40, deadline=None)
@given(problems())
def test_parallel_equals_recursion_and_learner_chain(problem: dict[str, Any]) -> None:
    mechanism, actions, learner = problem["mechanism"], problem["actions"], problem["learner"]
    fast = parallel(mechanism, actions, learner, problem["chunk_size"])
    slow = recursion(mechanism, actions, learner)
    assert fast.shape == slow.shape == (actions.shape[0], actions.shape[1] - 1, actions.shape[2])
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(learner_chain(mechanism, actions, learner), slow, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "learner",
    [Hedge(eta=0.4, epsilon=0.05), SmoothFP(beta=3.0, epsilon=0.02), BanditQ(alpha=0.4, epsilon=0.05)],
    ids=lambda learner: learner.name,
)
def test_gradients_match_the_recursion(learner: Learner) -> None:
    mechanism = NeuralJointMechanism(3, 4, hidden=16, seed=2).double()
    actions = random_actions(3, 40, 3, 4, seed=5)
    fast = parallel(mechanism, actions, learner, chunk_size=7).sum()
    slow = recursion(mechanism, actions, learner).sum()
    parameters = list(mechanism.parameters())
    for g_fast, g_slow in zip(
        torch.autograd.grad(fast, parameters), torch.autograd.grad(slow, parameters), strict=True
    ):
        torch.testing.assert_close(g_fast, g_slow, rtol=1e-7, atol=1e-9)


def test_long_horizons_stay_finite_in_float32() -> None:
    """600 rounds: Hedge's sums grow, bandit-Q chunks 38 times; everything stays finite and close to float64."""
    mechanism = CongestionMechanism(3, 4, seed=0)
    actions = random_actions(2, 600, 3, 4, seed=1)
    for learner in (Hedge(eta=0.01, epsilon=0.01), SmoothFP(epsilon=0.01), BanditQ(alpha=0.9, q0=5.0)):
        single = parallel(mechanism, actions, learner)
        double = parallel(mechanism.double(), actions, learner)
        mechanism.float()
        assert torch.isfinite(single).all()
        torch.testing.assert_close(single.double(), double, rtol=1e-4, atol=1e-4)


def test_state_functions_are_the_equations() -> None:
    payoffs = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(hedge_scores(payoffs, 0.5), 0.5 + payoffs.cumsum(1))
    counts = 2.0 + torch.arange(1, 6, dtype=torch.float64)
    torch.testing.assert_close(smooth_fp_beliefs(payoffs, 2.0), payoffs.cumsum(1) / counts[:, None, None])
    # bandit-Q with every action played in turn and alpha = 1: the score is the last realised payoff of that action
    realised = torch.arange(1.0, 7.0, dtype=torch.float64).reshape(1, 6, 1)
    own = torch.tensor([0, 1, 2, 0, 1, 2]).reshape(1, 6, 1)
    scores = bandit_q_scores(realised, own, 3, alpha=1.0, q0=-1.0, chunk_size=4)
    assert scores[0, :, 0].tolist() == [[1, -1, -1], [1, 2, -1], [1, 2, 3], [4, 2, 3], [4, 5, 3], [4, 5, 6]]


def test_hedge_and_smooth_fp_are_gauge_invariant() -> None:
    """Adding c_i(a_-i) to agent i's payoffs shifts all its counterfactual payoffs equally: no change (Thm. 1)."""

    class Shifted(Mechanism):
        def __init__(self, base: Mechanism) -> None:
            super().__init__(base.n_agents, base.n_actions)
            self.base = base

        def forward(self, joint_actions: Tensor) -> Tensor:
            others = joint_actions.sum(-1, keepdim=True) - joint_actions  # depends on a_-i only
            return self.base(joint_actions) + 0.7 * others.to(torch.float64) ** 2

    base = NeuralJointMechanism(3, 4, hidden=8, seed=1).double()
    actions = random_actions(2, 15, 3, 4, seed=3)
    for learner in (Hedge(eta=0.3, epsilon=0.1), SmoothFP(beta=2.0, epsilon=0.1)):
        torch.testing.assert_close(parallel(Shifted(base), actions, learner), parallel(base, actions, learner))


def test_overrides() -> None:
    mechanism = CongestionMechanism(3, 4, seed=0).double()
    actions = random_actions(2, 10, 3, 4, seed=0)
    hedge = Hedge(eta=0.5, epsilon=0.1)
    q0 = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(
        log_likelihood(mechanism, actions, hedge, q0, epsilon=0.2),
        log_likelihood(mechanism, actions, Hedge(eta=0.5, epsilon=0.2), q0),
    )
    assert not torch.isclose(log_likelihood(mechanism, actions, hedge, q0), log_likelihood(mechanism, actions, hedge))
    with pytest.raises(ConfigurationError, match="Hedge has no alpha"):
        log_likelihood(mechanism, actions, hedge, alpha=0.5)
    with pytest.raises(ConfigurationError, match="SmoothFP has no q0"):
        log_likelihood(mechanism, actions, SmoothFP(), 0.0)
    bandit = BanditQ(alpha=0.3)
    torch.testing.assert_close(
        bandit_q_log_likelihood(mechanism, actions, bandit, alpha=torch.tensor(0.5, dtype=torch.float64)),
        bandit_q_log_likelihood(mechanism, actions, BanditQ(alpha=0.5)),
    )


def test_bandit_q_dispatch_form_reads_the_counterfactuals_at_the_own_actions() -> None:
    mechanism = NeuralJointMechanism(3, 4, hidden=8, seed=0).double()
    actions = random_actions(2, 12, 3, 4, seed=1)
    learner = BanditQ(alpha=0.5, epsilon=0.1)
    payoffs = mechanism.counterfactual_payoffs(actions[:, :-1])
    terms = bandit_q_trace_log_probs(
        learner, Unroll(payoffs, actions[:, 1:], own_actions=actions[:, :-1], chunk_size=5)
    )
    torch.testing.assert_close(terms, recursion(mechanism, actions, learner))


def test_bandit_q_through_log_likelihood_and_bad_input() -> None:
    mechanism = CongestionMechanism(3, 4, seed=0)
    actions = random_actions(2, 10, 3, 4, seed=0)
    torch.testing.assert_close(
        log_likelihood(mechanism, actions, BanditQ(), reduction="none"),
        bandit_q_log_likelihood(mechanism, actions, BanditQ(), reduction="none"),
    )
    with pytest.raises(ConfigurationError, match="needs a BanditQ learner"):
        bandit_q_log_likelihood(mechanism, actions, LogitQ())  # type: ignore[arg-type]
    with pytest.raises(InvalidActionError, match="T >= 2"):
        bandit_q_log_likelihood(mechanism, actions[:, :1], BanditQ())
    with pytest.raises(InvalidActionError, match=r"\[0, 4\)"):
        bandit_q_log_likelihood(mechanism, actions + 4, BanditQ())
    with pytest.raises(ConfigurationError, match="chunk_size"):
        bandit_q_log_likelihood(mechanism, actions, BanditQ(), chunk_size=0)


# -- fit with an assumed learner other than logit-Q ----------------------------------------------------
ENV = "mechgym/Congestion-v0"


@pytest.fixture(scope="module")
def hedge_traces() -> TraceDataset:
    return mechgym.rollout(ENV, Hedge(eta=0.15, epsilon=0.02), n_episodes=24, n_rounds=30, seed=0)


def test_fit_uses_the_recorded_hedge_learner_and_the_right_model_fits_better(hedge_traces: TraceDataset) -> None:
    options: dict[str, Any] = {"model": "structured", "epochs": 6, "lr": 0.05, "device": "cpu", "progress": False}
    right = diml_inverse.fit(ENV, hedge_traces, **options)  # learner=None: the traces' Hedge
    assert right.learner == Hedge(eta=0.15, epsilon=0.02)
    assert right.assumed_learner is not None and right.assumed_learner.to_dict()["name"] == "hedge"
    wrong = diml_inverse.fit(ENV, hedge_traces, learner=LogitQ(epsilon=0.02), **options)
    assert min(row["valid_nll"] for row in right.history) < min(row["valid_nll"] for row in wrong.history)
    learned_q0 = diml_inverse.fit(ENV, hedge_traces, learn_q0=True, **{**options, "epochs": 1})
    assert learned_q0.q0 is not None and learned_q0.q0.shape == (4, 5)
    assert learned_q0.simulate(n_episodes=2, n_rounds=5).learner() == right.learner


def test_fit_with_bandit_q(hedge_traces: TraceDataset) -> None:
    result = diml_inverse.fit(ENV, hedge_traces, learner=BanditQ(), epochs=1, device="cpu", progress=False)
    assert result.learner == BanditQ() and len(result.history) == 1


def test_fit_with_smooth_fp(hedge_traces: TraceDataset) -> None:
    result = diml_inverse.fit(ENV, hedge_traces, learner=SmoothFP(), epochs=1, device="cpu", progress=False)
    assert result.learner == SmoothFP() and len(result.history) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learner": Hedge(), "learn_alpha": True}, "learn_alpha"),
        ({"learner": Hedge(), "learn_epsilon": True}, "learn_epsilon"),
        ({"learner": SmoothFP(), "learn_q0": True}, "learn_q0"),
        ({"learner": BanditQ(), "learn_alpha": True}, "learn_alpha"),
    ],
    ids=["hedge-alpha", "hedge-epsilon", "smooth-fp-q0", "bandit-q-alpha"],
)
def test_fit_refuses_what_the_assumed_learner_cannot_do(
    hedge_traces: TraceDataset, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        diml_inverse.fit(ENV, hedge_traces, epochs=1, device="cpu", progress=False, **kwargs)


def test_fit_on_traces_without_a_learner_asks_for_one(hedge_traces: TraceDataset) -> None:
    meta = TraceMetadata(
        n_agents=4,
        n_actions=5,
        env_id=ENV,
        env_kwargs=hedge_traces.metadata.env_kwargs,
        extra={"sb3": {"algorithm": "ppo", "mode": "independent"}},
    )
    traces = TraceDataset(actions=hedge_traces.actions, metadata=meta)
    with pytest.raises(ConfigurationError, match=r"record no learner.*Stable-Baselines3 PPO.*learner="):
        diml_inverse.fit(ENV, traces, epochs=1, device="cpu", progress=False)
    result = diml_inverse.fit(ENV, traces, learner=Hedge(), epochs=1, device="cpu", progress=False)
    assert result.learner == Hedge()
