"""The dispatch table of the parallel likelihoods: a third-party rule plugs in; the built-ins declare what they do."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

import diml_inverse
import mechgym
from diml_inverse.dynamics import (
    DYNAMICS,
    Dynamics,
    Unroll,
    bandit_q_trace_log_probs,
    dynamics_for,
    hedge_log_probs,
    linear_filter,
    logit_q_log_probs,
    register_dynamics,
    smooth_fp_log_probs,
)
from diml_inverse.dynamics.filters import as_scalar, check_payoffs, initial_state, resolve_chunk_size
from diml_inverse.likelihood import log_likelihood, trace_terms
from mechgym.errors import ConfigurationError
from mechgym.learners import BanditQ, Hedge, Learner, LogitQ, SmoothFP, logit_log_policy
from mechgym.mechanisms import Mechanism, NeuralJointMechanism
from mechgym.traces import TraceDataset

ENV = "mechgym/Congestion-v0"


@dataclass(frozen=True)
class DiscountedHedge(Learner):
    """A third-party rule: ``S(1) = q0``, ``S(t+1) = gamma S(t) + u(t)``, ``pi = softmax(eta S)``."""

    eta: float = 0.5
    gamma: float = 0.8
    q0: float = 0.0

    name: ClassVar[str] = "test_discounted_hedge"

    def log_policy(self, state: Tensor) -> Tensor:
        return logit_log_policy(state, self.eta, 0.0)

    def update(self, state: Tensor, counterfactual_payoffs: Tensor, actions: Tensor) -> Tensor:
        return self.gamma * state + counterfactual_payoffs

    def apply_shift(self, alpha_factor: float, beta_factor: float, epsilon_factor: float) -> Learner:
        return self.replace(eta=self.eta * beta_factor)


def discounted_hedge_log_probs(learner: Learner, unroll: Unroll) -> Tensor:
    """The rule's parallel form: the library's causal filter with ``keep = gamma``, ``gain = 1``."""
    assert isinstance(learner, DiscountedHedge)
    unroll.refuse(learner, "alpha", "epsilon")
    payoffs = unroll.payoffs
    check_payoffs(payoffs)
    n_episodes, n_updates, n_agents, n_actions = payoffs.shape
    start = initial_state(unroll.value("q0", learner.q0), n_episodes, n_agents, n_actions, payoffs)
    keep = as_scalar(learner.gamma, "gamma", payoffs)
    states = linear_filter(
        payoffs.reshape(n_episodes, n_updates, n_agents * n_actions),
        keep,
        torch.ones_like(keep),
        start.reshape(n_episodes, 1, n_agents * n_actions),
        resolve_chunk_size(unroll.chunk_size, n_updates),
    )
    return unroll.log_probs_of(learner.log_policy(states.reshape(n_episodes, n_updates, n_agents, n_actions)))


@pytest.fixture
def registered() -> Iterator[Dynamics]:
    entry = register_dynamics(DiscountedHedge, discounted_hedge_log_probs, learnable=frozenset({"q0"}), forgets=True)
    yield entry
    del DYNAMICS[DiscountedHedge]


def step_by_step(mechanism: Mechanism, actions: Tensor, learner: Learner, q0: Tensor | None = None) -> Tensor:
    """Eq. (5) term by term from the learner's own ``update`` and ``log_policy``: ``[E, T-1, N]``."""
    n_episodes, n_rounds, n_agents = actions.shape
    state = learner.initial_state((n_episodes, n_agents), mechanism.n_actions, dtype=torch.float64)
    if q0 is not None:
        state = state * 0 + q0
    terms = []
    for t in range(n_rounds - 1):
        state = learner.update(state, mechanism.counterfactual_payoffs(actions[:, t]), actions[:, t])
        terms.append(learner.log_policy(state).gather(-1, actions[:, t + 1, :, None]).squeeze(-1))
    return torch.stack(terms, dim=1)


@pytest.mark.parametrize(
    ("n_rounds", "chunk_size"),
    [(2, None), (9, None), (9, 1), (40, 3), (40, None)],
    ids=["T2", "T9", "T9-C1", "T40-C3", "T40"],
)
def test_a_registered_rule_is_used_by_log_likelihood(
    registered: Dynamics, n_rounds: int, chunk_size: int | None
) -> None:
    learner = DiscountedHedge(eta=0.7, gamma=0.6, q0=0.2)
    assert dynamics_for(learner) is registered
    mechanism = NeuralJointMechanism(3, 4, hidden=8, seed=2).double()
    actions = torch.randint(4, (2, n_rounds, 3), generator=torch.Generator().manual_seed(n_rounds))
    q0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)

    fast = log_likelihood(mechanism, actions, learner, q0, reduction="none", chunk_size=chunk_size)
    slow = step_by_step(mechanism, actions, learner, q0)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    fast_grads = torch.autograd.grad(fast.sum(), [q0, *mechanism.parameters()])
    slow_grads = torch.autograd.grad(slow.sum(), [q0, *mechanism.parameters()])
    for fast_grad, slow_grad in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-9, atol=1e-10)

    terms, _ = trace_terms(mechanism, actions, learner, q0, agents=torch.tensor([2, 0]))
    torch.testing.assert_close(terms, slow[..., [2, 0]], rtol=1e-10, atol=1e-10)
    with pytest.raises(ConfigurationError, match="DiscountedHedge has no alpha"):
        log_likelihood(mechanism, actions, learner, alpha=0.3)


@pytest.fixture(scope="module")
def traces() -> TraceDataset:
    return mechgym.rollout(ENV, LogitQ(alpha=0.3, epsilon=0.05), n_episodes=10, n_rounds=12, seed=0)


def test_fit_accepts_a_registered_rule(registered: Dynamics, traces: TraceDataset) -> None:
    learner = DiscountedHedge(eta=0.4, gamma=0.7)
    options: dict[str, Any] = {"epochs": 2, "lr": 0.02, "device": "cpu", "progress": False, "select": "last"}
    result = diml_inverse.fit(ENV, traces, learner=learner, learn_q0=True, **options)
    assert result.learner == learner and len(result.history) == 2
    assert result.q0 is not None and result.q0.shape == (traces.n_agents, traces.n_actions)
    # the held-out NLL of the last epoch is the registered rule's likelihood of the held-out episodes
    valid = traces.actions_tensor("cpu")[-2:]
    expected = -log_likelihood(result.mechanism, valid, learner, result.q0, reduction="mean").detach()
    assert result.history[-1]["valid_nll"] == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ConfigurationError, match="learn_alpha"):
        diml_inverse.fit(ENV, traces, learner=learner, learn_alpha=True, **options)


class LogitQQ(Learner):
    """A rule nobody registered (named like a built-in, for the did-you-mean hint)."""

    name: ClassVar[str] = "test_logit_qq"

    def log_policy(self, state: Tensor) -> Tensor:
        return torch.log_softmax(state, -1)

    def update(self, state: Tensor, counterfactual_payoffs: Tensor, actions: Tensor) -> Tensor:
        return state

    def apply_shift(self, alpha_factor: float, beta_factor: float, epsilon_factor: float) -> Learner:
        return self


def test_an_unregistered_rule_gets_a_clear_error(traces: TraceDataset) -> None:
    pattern = r"LogitQQ has no parallel likelihood.*Did you mean 'LogitQ'\?.*Known: BanditQ, Hedge, LogitQ, SmoothFP"
    with pytest.raises(ConfigurationError, match=pattern) as info:
        dynamics_for(LogitQQ())
    assert "register_dynamics(LogitQQ, log_probs)" in str(info.value)
    mechanism = NeuralJointMechanism(3, 4, hidden=8, seed=0)
    with pytest.raises(ConfigurationError, match="LogitQQ has no parallel likelihood"):
        log_likelihood(mechanism, torch.zeros(1, 3, 3, dtype=torch.long), LogitQQ())
    with pytest.raises(ConfigurationError, match=r"fit cannot assume this learner.*register_dynamics"):
        diml_inverse.fit(ENV, traces, learner=LogitQQ(), epochs=1, device="cpu", progress=False)
    with pytest.raises(ConfigurationError, match="must be a mechgym Learner"):
        dynamics_for("logit_q")  # type: ignore[arg-type]


def test_subclasses_share_their_base_class_entry() -> None:
    @dataclass(frozen=True)
    class QuietLogitQ(LogitQ):
        pass

    assert dynamics_for(QuietLogitQ()) is dynamics_for(LogitQ()) is DYNAMICS[LogitQ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learnable": frozenset({"beta"})}, r"unknown learnable parameter of DiscountedHedge 'beta'"),
        ({"learnable": frozenset({"alpha"})}, r"declares 'alpha' learnable but has no such field"),
        ({"learnable": "q0"}, "must be a set of parameter names"),
        ({"forgets": 1}, "forgets must be True or False"),
    ],
    ids=["unknown-name", "not-a-field", "a-string", "forgets-not-bool"],
)
def test_register_dynamics_checks_its_declarations(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        register_dynamics(DiscountedHedge, discounted_hedge_log_probs, **kwargs)
    with pytest.raises(ConfigurationError, match="Learner subclass"):
        register_dynamics(int, discounted_hedge_log_probs)  # type: ignore[arg-type]
    assert DiscountedHedge not in DYNAMICS


BUILT_INS: list[tuple[Learner, Any, set[str], bool]] = [
    (LogitQ(alpha=0.3, epsilon=0.05), logit_q_log_probs, {"q0", "alpha", "epsilon"}, True),
    (Hedge(eta=0.2, epsilon=0.05), hedge_log_probs, {"q0"}, False),
    (SmoothFP(epsilon=0.05), smooth_fp_log_probs, set(), False),
    (BanditQ(alpha=0.3, epsilon=0.05), bandit_q_trace_log_probs, {"q0"}, False),
]
BUILT_IN_IDS = [row[0].name for row in BUILT_INS]


@pytest.mark.parametrize(("learner", "log_probs", "learnable", "forgets"), BUILT_INS, ids=BUILT_IN_IDS)
def test_built_in_declarations(learner: Learner, log_probs: Any, learnable: set[str], forgets: bool) -> None:
    entry = dynamics_for(learner)
    assert entry.learner_class is type(learner) and entry.log_probs is log_probs
    assert entry.learnable == learnable and entry.forgets is forgets
    # every declared parameter is an override the rule learns through
    mechanism = NeuralJointMechanism(3, 4, hidden=8, seed=0).double()
    actions = torch.randint(4, (2, 8, 3), generator=torch.Generator().manual_seed(0))
    overrides = {
        "q0": torch.full((3, 4), 0.1, dtype=torch.float64, requires_grad=True),
        "alpha": torch.tensor(0.4, dtype=torch.float64, requires_grad=True),
        "epsilon": torch.tensor(0.1, dtype=torch.float64, requires_grad=True),
    }
    for name in sorted(learnable):
        override: dict[str, Any] = {name: overrides[name]}
        value = log_likelihood(mechanism, actions, learner, **override)
        (grad,) = torch.autograd.grad(value, overrides[name])
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


FIT_OPTIONS = ["q0", "alpha", "epsilon", "round_window"]


@pytest.mark.parametrize("option", FIT_OPTIONS)
@pytest.mark.parametrize("learner", [row[0] for row in BUILT_INS], ids=BUILT_IN_IDS)
def test_declarations_match_what_fit_accepts(traces: TraceDataset, learner: Learner, option: str) -> None:
    """Today's fit rules (only LogitQ learns alpha/epsilon or windows rounds; q0 where the learner has one)."""
    entry = dynamics_for(learner)
    accepted = entry.forgets if option == "round_window" else option in entry.learnable
    kwargs: dict[str, Any] = {"round_window": 4} if option == "round_window" else {f"learn_{option}": True}
    options: dict[str, Any] = {"epochs": 1, "device": "cpu", "progress": False, "learner": learner, **kwargs}
    if accepted:
        assert len(diml_inverse.fit(ENV, traces, **options).history) == 1
    else:
        with pytest.raises(ConfigurationError, match="learn_" + option if option != "round_window" else "forgets"):
            diml_inverse.fit(ENV, traces, **options)
