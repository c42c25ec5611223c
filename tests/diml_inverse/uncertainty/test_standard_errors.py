"""Standard errors: the closed-form Fisher information of a logit, the gauge handled explicitly, clear errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import mechgym
from diml_inverse import FitConfig, FitResult
from diml_inverse.uncertainty import StandardErrorsError, standard_errors
from mechgym.errors import ConfigurationError
from mechgym.learners import LogitQ
from mechgym.mechanisms import CongestionMechanism, TabularMechanism
from mechgym.rollout import simulate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BETA = 2.0
N_ACTIONS = 3


def _logit_fit() -> tuple[FitResult, torch.Tensor]:
    """Two agents, a payoff table, logit-Q with alpha = 1 and no exploration.

    With ``alpha = 1`` the score after round ``t`` is the counterfactual payoff row of the context ``a_j(t)``, so
    every ``a_i(t+1)`` is a multinomial draw with ``p = softmax(beta u_i(., a_j(t)))``: a multinomial logit per
    (agent, context) whose observed information is ``n beta^2 (diag p - p p^T)`` whatever the draws.
    """
    generator = torch.Generator().manual_seed(0)
    truth = TabularMechanism(2, N_ACTIONS)
    with torch.no_grad():
        truth.table.copy_(torch.randn(truth.table.shape, generator=generator))
    learner = LogitQ(alpha=1.0, beta=BETA, epsilon=0.0)
    actions, _ = simulate(truth, learner, 30, 20, 0)
    model = copy.deepcopy(truth)  # the information does not depend on the draws: any point serves
    result = FitResult(model, learner, config=FitConfig(model="tabular"), n_train_episodes=30, model_name="tabular")
    return result, actions


def test_observed_and_robust_errors_match_the_closed_form_logit() -> None:
    result, actions = _logit_fit()
    errors = standard_errors(result, actions)
    table = result.mechanism.table.detach().double()
    joint = torch.tensor([[a, c] for c in range(N_ACTIONS) for a in range(N_ACTIONS)])  # agent 0 in context c
    estimate, se, robust = errors.payoff_differences(joint)
    previous, following = actions[:, :-1], actions[:, 1:]
    for row, (own, context) in enumerate(joint.tolist()):
        u = torch.stack([table[b * N_ACTIONS + context, 0] for b in range(N_ACTIONS)])  # u_0(., c)
        p = torch.softmax(BETA * u, 0).numpy()
        visits = previous[..., 1] == context  # rounds t whose context for agent 0 is c
        n = int(visits.sum())
        # observed information: Var(u_a - u_own) = (1/p_a + 1/p_own) / (n beta^2)
        expected = np.sqrt((1 / p + 1 / p[own]) / (n * BETA**2))
        expected[own] = 0.0
        np.testing.assert_allclose(se[row, 0], expected, rtol=1e-6)
        np.testing.assert_allclose(estimate[row, 0], (u - u[own]).numpy(), rtol=1e-12)
        # sandwich: H^+ B H^+ with B = sum_e s_e s_e^T, s_e = beta (counts_e - n_e p) of this block
        hessian = n * BETA**2 * (np.diag(p) - np.outer(p, p))
        counts = np.stack(
            [np.bincount(following[e, visits[e], 0].numpy(), minlength=N_ACTIONS) for e in range(actions.shape[0])]
        )
        scores = BETA * (counts - counts.sum(1, keepdims=True) * p)
        meat = scores.T @ scores
        pinv = np.linalg.pinv(hessian)
        for a in range(N_ACTIONS):
            w = np.eye(N_ACTIONS)[a] - np.eye(N_ACTIONS)[own]
            np.testing.assert_allclose(robust[row, 0, a], np.sqrt(w @ pinv @ meat @ pinv @ w), rtol=1e-6, atol=1e-12)


def test_the_gauge_is_projected_out_explicitly() -> None:
    result, actions = _logit_fit()
    errors = standard_errors(result, actions)
    n_contexts = 2 * N_ACTIONS  # every (agent, a_-i) is visited
    assert errors.n_identified == n_contexts * (N_ACTIONS - 1)
    assert errors.n_gauge_directions == n_contexts  # one constant per agent and context
    assert errors.n_flat_directions == 0
    _, se, robust = errors.parameter("table")
    assert np.isinf(se).all() and np.isinf(robust).all()  # a raw payoff is never identified
    assert "not identified" in errors.table()
    low, high = errors.payoff_differences_interval(torch.tensor([[1, 2]]), level=0.9)
    assert low.shape == high.shape == (1, 2, N_ACTIONS) and (low <= high).all()


def test_unvisited_contexts_have_infinite_errors() -> None:
    result, actions = _logit_fit()
    actions = actions.clone()
    actions[:, :-1, 1] = torch.where(actions[:, :-1, 1] == 2, 0, actions[:, :-1, 1])  # agent 1 never plays 2 before T
    errors = standard_errors(result, actions)
    _, se, _ = errors.payoff_differences(torch.tensor([[0, 2], [0, 1]]))
    assert np.isinf(se[0, 0, 1:]).all()  # agent 0's context a_1 = 2 never occurs
    assert np.isfinite(se[1, 0]).all()


def test_redundant_structured_parameters_are_reported_not_identified() -> None:
    truth = mechgym.make("mechgym/Congestion-v0").mechanism
    learner = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
    actions, _ = simulate(truth, learner, 24, 30, 0)
    model = CongestionMechanism(4, 5, seed=0)
    model.load_state_dict(truth.state_dict())
    result = FitResult(model, learner, config=FitConfig(model="structured"), n_train_episodes=24)
    errors = standard_errors(result, actions)
    assert errors.n_gauge_directions == 5  # c1 and tau enter only as c1 + tau, per resource
    _, c2_se, c2_robust = errors.parameter("c2")
    assert np.isfinite(c2_se).all() and (c2_se > 0).all() and np.isfinite(c2_robust).all()
    assert np.isinf(errors.parameter("tau")[1]).all()
    combined = errors.delta_method(lambda theta: theta[errors.flat.slices()["c1"]] + theta[errors.flat.slices()["tau"]])
    assert np.isfinite(combined[1]).all()


def test_bad_input_is_refused_clearly() -> None:
    result, actions = _logit_fit()
    with pytest.raises(ConfigurationError, match="must be a FitResult"):
        standard_errors("fit.pt", actions)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="first 30 episodes"):
        standard_errors(result, actions[:10])
    with pytest.raises(ConfigurationError, match="episodes must be 'train' or 'all'"):
        standard_errors(result, actions, episodes="test")  # type: ignore[arg-type]
    with pytest.raises(StandardErrorsError, match="max_parameters"):
        standard_errors(result, actions, max_parameters=4)
    errors = standard_errors(result, actions)
    with pytest.raises(ConfigurationError, match="Did you mean 'table'"):
        errors.parameter("tabel")
    with pytest.raises(ConfigurationError, match=r"level must be a number in \(0, 1\)"):
        errors.payoff_differences_interval(torch.tensor([[0, 0]]), level=90)


class _GaussianTable(TabularMechanism):
    """A payoff table under an i.i.d. Gaussian prior of standard deviation ``SIGMA``."""

    def prior_penalty(self) -> torch.Tensor:
        return 0.5 * self.table.square().sum() / SIGMA**2


SIGMA = 0.7


def _prior_fit(actions: torch.Tensor) -> FitResult:
    result, _ = _logit_fit()
    model = _GaussianTable(2, N_ACTIONS)
    model.load_state_dict(result.mechanism.state_dict())
    return FitResult(model, result.learner, config=FitConfig(model=model), n_train_episodes=30, model_name="custom")


def test_a_model_with_a_prior_gets_the_laplace_posterior() -> None:
    """Posterior covariance = (H_nll + I / sigma^2)^-1; a context the data never visit keeps its prior variance."""
    _, actions = _logit_fit()
    actions = actions.clone()
    actions[:, :-1, 1] = torch.where(actions[:, :-1, 1] == 2, 0, actions[:, :-1, 1])  # agent 0 never sees a_1 = 2
    result = _prior_fit(actions)
    errors = standard_errors(result, actions)
    assert errors.posterior and errors.n_gauge_directions == 0 and "posterior" in repr(errors)
    # the same covariance from the dense Hessian of the negative log posterior
    flat = errors.flat

    def negative_log_posterior(theta: torch.Tensor) -> torch.Tensor:
        return -flat.call(theta, actions).sum() + flat.call(theta, None)

    dense = torch.autograd.functional.hessian(negative_log_posterior, flat.theta)
    np.testing.assert_allclose(errors.covariance, torch.linalg.inv(dense).numpy(), rtol=1e-6, atol=1e-10)
    _, se, robust = errors.payoff_differences(torch.tensor([[0, 2], [0, 1]]))
    # u_0(a, 2) - u_0(0, 2): two independent prior entries, untouched by the likelihood
    np.testing.assert_allclose(se[0, 0, 1:], np.sqrt(2) * SIGMA, rtol=1e-9)
    np.testing.assert_allclose(robust[0, 0, 1:], 0.0, atol=1e-12)  # no data: the penalised estimate does not move
    assert (se[1, 0, 1:] < np.sqrt(2) * SIGMA).all()  # a visited context: the data narrow it
    assert np.isfinite(errors.parameter("table")[1]).all()  # every entry has a posterior
    assert errors.table().startswith("30 episodes; 18 parameters; posterior")


def test_posterior_option() -> None:
    result, actions = _logit_fit()
    with pytest.raises(StandardErrorsError, match="has no prior"):
        standard_errors(result, actions, posterior=True)
    with pytest.raises(ConfigurationError, match="posterior must be None, True or False"):
        standard_errors(result, actions, posterior="yes")  # type: ignore[arg-type]
    likelihood = standard_errors(_prior_fit(actions), actions, posterior=False)
    assert not likelihood.posterior and likelihood.n_gauge_directions == 2 * N_ACTIONS
