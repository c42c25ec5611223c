"""The parallel likelihood (paper Eq. 5) against Algorithm 1's step-by-step loop, and its invariants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from diml_inverse.likelihood import counterfactual_scores, log_likelihood
from diml_inverse.testing import step_by_step_log_likelihood
from mechgym.errors import ConfigurationError, InvalidActionError, MechGymError
from mechgym.learners import Learner, LogitQ, logit_log_policy, logit_q_update
from mechgym.mechanisms import (
    AnonymousCountMechanism,
    CongestionMechanism,
    Mechanism,
    NeuralJointMechanism,
    PublicGoodsMechanism,
    TabularMechanism,
)

FAMILIES: dict[str, Callable[[int, int, int], Mechanism]] = {
    "neural": lambda n, a, seed: NeuralJointMechanism(n, a, hidden=16, seed=seed),
    "anonymous": lambda n, a, seed: AnonymousCountMechanism(n, a, embed_dim=4, hidden=16, seed=seed),
    "tabular": lambda n, a, seed: TabularMechanism(n, a, init="normal", seed=seed),
    "congestion": lambda n, a, seed: CongestionMechanism(n, a, seed=seed),
    "public_goods": lambda n, a, seed: PublicGoodsMechanism(n, a, hidden=8, seed=seed),
}


class GaugeShifted(Mechanism):
    """``base`` with ``g_i(a_-i)`` added to every agent's payoff: a random table over the others' actions."""

    family = "test_gauge_shifted"

    def __init__(self, base: Mechanism, seed: int) -> None:
        super().__init__(base.n_agents, base.n_actions)
        n, a = self.n_agents, self.n_actions
        self.base = base
        generator = torch.Generator().manual_seed(seed)
        dtype = base._dtype()
        self.register_buffer("shift", 3.0 * torch.randn(n, a ** (n - 1), generator=generator, dtype=dtype))
        self.register_buffer("others", torch.tensor([[j for j in range(n) if j != i] for i in range(n)]))
        self.register_buffer("strides", a ** torch.arange(n - 2, -1, -1))

    def forward(self, joint_actions: Tensor) -> Tensor:
        others = joint_actions[..., self.others]  # [..., N, N-1]
        index = (others * self.strides).sum(-1)  # [..., N]
        agents = torch.arange(self.n_agents, device=joint_actions.device)
        return self.base(joint_actions) + self.shift[agents, index]


def random_actions(n_episodes: int, n_rounds: int, n_agents: int, n_actions: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n_actions, (n_episodes, n_rounds, n_agents), generator=generator)


def grads(loss: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    found = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found, strict=True)]


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    """A random mechanism, traces, learner parameters (as learner fields or tensor overrides) and chunking."""
    family = draw(st.sampled_from(sorted(FAMILIES)))
    n_agents = draw(st.integers(2, 4))
    n_actions = draw(st.integers(2, 5))
    n_episodes = draw(st.integers(1, 3))
    n_rounds = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**16))
    mechanism = FAMILIES[family](n_agents, n_actions, seed).double()
    if draw(st.booleans()):
        mechanism.max_table_size = 0  # the structured (non-table) counterfactual path
    alpha = draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0)))
    beta = draw(st.floats(0.1, 5.0))
    epsilon = draw(st.one_of(st.just(0.0), st.floats(1e-6, 0.5)))
    q0_kind = draw(st.sampled_from(["learner", "scalar", "action", "agent_action", "episode"]))
    q0_shape = {"scalar": (), "action": (n_actions,), "agent_action": (n_agents, n_actions)}.get(
        q0_kind, (n_episodes, n_agents, n_actions)
    )
    generator = torch.Generator().manual_seed(seed + 1)
    q0_value = draw(st.floats(-2.0, 2.0))
    return {
        "family": family,
        "mechanism": mechanism,
        "actions": random_actions(n_episodes, n_rounds, n_agents, n_actions, seed + 2),
        "alpha": alpha,
        "beta": beta,
        "epsilon": epsilon,
        "q0_kind": q0_kind,
        "q0_value": q0_value,
        "q0_tensor": torch.randn(q0_shape, generator=generator, dtype=torch.float64),
        "override": draw(st.booleans()),
        "chunk_size": draw(st.one_of(st.none(), st.integers(1, n_rounds + 2))),
        "weights": torch.rand(n_episodes, n_rounds - 1, n_agents, generator=generator, dtype=torch.float64),
    }


@settings(max_examples=60, deadline=None)
@given(problems())
def test_parallel_likelihood_and_gradients_equal_step_by_step(problem: dict[str, Any]) -> None:
    mechanism: Mechanism = problem["mechanism"]
    actions = problem["actions"]
    alpha, beta, epsilon = problem["alpha"], problem["beta"], problem["epsilon"]
    learner_q0 = problem["q0_value"] if problem["q0_kind"] == "learner" else 0.0
    differentiable: list[Tensor] = list(mechanism.parameters())
    if problem["override"]:  # learn alpha and epsilon: tensors override deliberately different learner fields
        learner = LogitQ(alpha=0.5, beta=beta, epsilon=0.25, q0=learner_q0)
        alpha_t = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
        epsilon_t = torch.tensor(epsilon, dtype=torch.float64, requires_grad=True)  # epsilon = 0 included
        differentiable += [alpha_t, epsilon_t]
        overrides: dict[str, Any] = {"alpha": alpha_t, "epsilon": epsilon_t}
        alpha, epsilon = alpha_t, epsilon_t
    else:
        learner = LogitQ(alpha=alpha, beta=beta, epsilon=epsilon, q0=learner_q0)
        overrides = {}
    if problem["q0_kind"] == "learner":
        q0: Tensor | float | None = None
        reference_q0: Tensor | float = learner_q0
    elif problem["q0_kind"] == "scalar":
        q0 = reference_q0 = problem["q0_value"]
    else:
        q0 = reference_q0 = problem["q0_tensor"].requires_grad_(True)
        differentiable.append(q0)

    parallel = log_likelihood(
        mechanism, actions, learner, q0, reduction="none", chunk_size=problem["chunk_size"], **overrides
    )
    expected = step_by_step_log_likelihood(mechanism, actions, alpha, beta, epsilon, reference_q0)
    torch.testing.assert_close(parallel, expected)
    torch.testing.assert_close(
        log_likelihood(mechanism, actions, learner, q0, chunk_size=problem["chunk_size"], **overrides),
        expected.sum(),
    )
    weights = problem["weights"]
    for got, want in zip(
        grads((weights * parallel).sum(), differentiable),
        grads((weights * expected).sum(), differentiable),
        strict=True,
    ):
        torch.testing.assert_close(got, want)


@settings(max_examples=25, deadline=None)
@given(problems(), st.integers(0, 2**16))
def test_gauge_shift_leaves_the_likelihood_unchanged(problem: dict[str, Any], seed: int) -> None:
    """Paper Theorem 1: adding any ``c_i(a_-i)`` to agent i's payoffs changes no choice probability."""
    mechanism = problem["mechanism"]
    shifted = GaugeShifted(mechanism, seed)
    actions = problem["actions"]
    learner = LogitQ(problem["alpha"], problem["beta"], problem["epsilon"], problem["q0_value"])
    q0 = None if problem["q0_kind"] == "learner" else problem["q0_tensor"]
    assert not torch.allclose(shifted.counterfactual_payoffs(actions), mechanism.counterfactual_payoffs(actions))
    kwargs: dict[str, Any] = {"reduction": "none", "chunk_size": problem["chunk_size"]}
    torch.testing.assert_close(
        log_likelihood(shifted, actions, learner, q0, **kwargs),
        log_likelihood(mechanism, actions, learner, q0, **kwargs),
    )


def test_scores_follow_the_closed_form() -> None:
    """``output[:, k] = Q(k+2) = (1-a)^(k+1) q0 + a sum_{s<=k} (1-a)^(k-s) u(s)`` (Eq. 2 unrolled)."""
    generator = torch.Generator().manual_seed(0)
    payoffs = torch.randn(2, 9, 3, 4, generator=generator, dtype=torch.float64)
    q0 = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    alpha = 0.3
    expected = torch.stack(
        [
            (1 - alpha) ** (k + 1) * q0 + alpha * sum((1 - alpha) ** (k - s) * payoffs[:, s] for s in range(k + 1))
            for k in range(9)
        ],
        dim=1,
    )
    for chunk_size in (None, 1, 2, 4, 9, 50):
        torch.testing.assert_close(counterfactual_scores(payoffs, alpha, q0, chunk_size), expected)
    torch.testing.assert_close(counterfactual_scores(payoffs, 1.0, q0, 4), payoffs)  # alpha = 1: Q(t+1) = u(t)


def test_float32_e1_minibatch_matches_step_by_step() -> None:
    """The E1 setting in the default dtype: 3 agents x 6 actions, neural joint model, LogitQ(0.25, 3, 0.06)."""
    mechanism = NeuralJointMechanism(3, 6, seed=1)
    actions = random_actions(4, 20, 3, 6, seed=5)
    learner = LogitQ(0.25, 3.0, 0.06)
    parallel = log_likelihood(mechanism, actions, learner)
    expected = step_by_step_log_likelihood(mechanism, actions, 0.25, 3.0, 0.06).sum()
    torch.testing.assert_close(parallel, expected, rtol=1e-5, atol=1e-4)
    params = list(mechanism.parameters())
    for got, want in zip(grads(parallel, params), grads(expected, params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_reductions() -> None:
    mechanism = CongestionMechanism(4, 5, seed=0)
    actions = random_actions(3, 7, 4, 5, seed=0)
    terms = log_likelihood(mechanism, actions, LogitQ(), reduction="none")
    assert terms.shape == (3, 6, 4)
    torch.testing.assert_close(log_likelihood(mechanism, actions, LogitQ()), terms.sum())
    torch.testing.assert_close(log_likelihood(mechanism, actions, LogitQ(), reduction="mean"), terms.mean())


def test_long_horizon_runs_chunked_and_matches_the_recursion() -> None:
    """10,000 rounds with the default chunking equal Eq. (2) iterated round by round, and a chunk-free prefix."""
    mechanism = CongestionMechanism(3, 4, seed=2).double()
    actions = random_actions(2, 10_000, 3, 4, seed=3)
    learner = LogitQ(0.05, 4.0, 0.02, q0=0.5)
    parallel = log_likelihood(mechanism, actions, learner, reduction="none")

    with torch.no_grad():
        payoffs = mechanism.counterfactual_payoffs(actions[:, :-1])
        q = torch.full(payoffs[:, 0].shape, 0.5, dtype=torch.float64)
        scores = []
        for t in range(payoffs.shape[1]):
            q = logit_q_update(q, payoffs[:, t], learner.alpha)
            scores.append(q)
        expected = learner.log_policy(torch.stack(scores, dim=1))
        expected = expected.gather(-1, actions[:, 1:, :, None]).squeeze(-1)
    torch.testing.assert_close(parallel, expected)
    prefix = log_likelihood(mechanism, actions[:, :301], learner, reduction="none", chunk_size=300)
    torch.testing.assert_close(parallel[:, :300], prefix)
    for chunk_size in (1, 3, 1000):  # deep (log_2 T levels), odd and shallow recursions of the chunked filter
        torch.testing.assert_close(
            log_likelihood(mechanism, actions, learner, reduction="none", chunk_size=chunk_size), expected
        )


def test_very_long_horizon_memory_is_linear() -> None:
    """200,000 rounds with gradients: a whole-horizon decay matrix would need 160 GB, the chunks need 64 KB."""
    mechanism = TabularMechanism(2, 2, init="normal", seed=0)
    actions = random_actions(1, 200_000, 2, 2, seed=4)
    alpha = torch.tensor(0.1, requires_grad=True)
    total = log_likelihood(mechanism, actions, LogitQ(), alpha=alpha)
    total.backward()
    assert torch.isfinite(total)
    assert mechanism.table.grad is not None and torch.isfinite(mechanism.table.grad).all()
    assert alpha.grad is not None and torch.isfinite(alpha.grad)


def test_epsilon_gradient_at_zero() -> None:
    mechanism = NeuralJointMechanism(2, 3, hidden=8, seed=0)
    epsilon = torch.tensor(0.0, requires_grad=True)
    log_likelihood(mechanism, random_actions(1, 5, 2, 3, seed=0), LogitQ(), epsilon=epsilon).backward()
    assert epsilon.grad is not None and torch.isfinite(epsilon.grad)


@pytest.mark.parametrize("epsilon", [0.0, 1e-6, 0.06, 0.5, 0.999])
def test_log_policy_value_and_epsilon_gradient(epsilon: float) -> None:
    """The differentiable path equals the fast path and the closed-form derivative ``(1/A - p) / pi``."""
    q = torch.tensor([[0.3, -1.2, 2.0, 0.0], [50.0, -50.0, 0.0, 1.0]], dtype=torch.float64)
    beta = 3.0
    eps = torch.tensor(epsilon, dtype=torch.float64, requires_grad=True)
    log_pi = logit_log_policy(q, beta, eps)
    torch.testing.assert_close(log_pi, logit_log_policy(q, beta, epsilon), rtol=1e-12, atol=1e-12)
    p = torch.softmax(beta * q, -1)
    pi = (1 - epsilon) * p + epsilon / 4
    expected = ((0.25 - p) / pi).sum()
    (gradient,) = torch.autograd.grad(log_pi.sum(), eps)
    torch.testing.assert_close(gradient, expected, rtol=1e-9, atol=0.0)


class _NotParallel(Learner):
    name = "not_parallel"

    def initial_state(self, batch_shape: Any, n_actions: int, device: Any = None, dtype: Any = None) -> Tensor:
        return torch.zeros(*batch_shape, n_actions)

    def log_policy(self, state: Tensor) -> Tensor:
        return torch.log_softmax(state, -1)

    def update(self, state: Tensor, counterfactual_payoffs: Tensor, actions: Tensor) -> Tensor:
        return state

    def apply_shift(self, alpha_factor: float, beta_factor: float, epsilon_factor: float) -> Learner:
        return self


_GOOD = random_actions(2, 5, 3, 4, seed=0)
BAD_INPUTS = [
    pytest.param({"actions": _GOOD[..., :2]}, InvalidActionError, r"\[\.\.\., 3\]", id="wrong-n-agents"),
    pytest.param(
        {"actions": torch.where(_GOOD == 0, 4, _GOOD)}, InvalidActionError, r"\[0, 4\).*got 4", id="too-large"
    ),
    pytest.param({"actions": _GOOD - 1}, InvalidActionError, "got -1", id="negative"),
    pytest.param({"actions": _GOOD.float()}, InvalidActionError, "integers", id="float-dtype"),
    pytest.param({"actions": _GOOD.float(), "validate": False}, InvalidActionError, "integers", id="float-unvalidated"),
    pytest.param({"actions": _GOOD[:, :1]}, InvalidActionError, "2 rounds", id="one-round"),
    pytest.param({"actions": _GOOD[0]}, InvalidActionError, r"actions\[None\]", id="2-d"),
    pytest.param({"actions": _GOOD.tolist()}, InvalidActionError, "list", id="not-a-tensor"),
    pytest.param({"learner": _NotParallel()}, ConfigurationError, "LogitQ", id="unsupported-learner"),
    pytest.param({"reduction": "max"}, ConfigurationError, "'max'", id="reduction"),
    pytest.param({"chunk_size": 0}, ConfigurationError, "chunk_size", id="chunk-size"),
    pytest.param({"q0": torch.zeros(3, 5)}, ConfigurationError, r"\[2, 3, 4\]", id="q0-shape"),
    pytest.param({"alpha": torch.ones(2)}, ConfigurationError, "alpha", id="alpha-shape"),
    pytest.param({"mechanism": torch.nn.Linear(3, 3)}, ConfigurationError, "Mechanism", id="not-a-mechanism"),
]


@pytest.mark.parametrize(("changes", "error", "message"), BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(changes: dict[str, Any], error: type[MechGymError], message: str) -> None:
    arguments = {"mechanism": NeuralJointMechanism(3, 4, hidden=8, seed=0), "actions": _GOOD, "learner": LogitQ()}
    with pytest.raises(error, match=message):
        log_likelihood(**{**arguments, **changes})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cuda_matches_cpu(family: str) -> None:
    cpu = FAMILIES[family](3, 5, 7).double()
    cuda = FAMILIES[family](3, 5, 7).double().cuda()
    actions = random_actions(4, 300, 3, 5, seed=1)
    results = []
    for mechanism, device in ((cpu, "cpu"), (cuda, "cuda")):
        alpha = torch.tensor(0.3, dtype=torch.float64, device=device, requires_grad=True)
        q0 = torch.zeros(3, 5, dtype=torch.float64, device=device, requires_grad=True)
        total = log_likelihood(mechanism, actions, LogitQ(), q0, alpha=alpha, chunk_size=64)  # actions move
        assert total.device.type == device
        results.append([total, *grads(total, [*mechanism.parameters(), alpha, q0])])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got.cpu(), want)
