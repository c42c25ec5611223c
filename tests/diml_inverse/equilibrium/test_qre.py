"""Inverse logit QRE: the fixed-point estimator of lam, the plug-in payoff MLE, and pygambit's logit_estimate."""

from __future__ import annotations

import pytest
import torch

from diml_inverse.equilibrium import FiniteGame, inverse_qre, logit_responses, qre_profile
from diml_inverse.equilibrium.finite import expected_payoffs
from mechgym.errors import ConfigurationError
from mechgym.mechanisms import Mechanism, TabularMechanism


def _game() -> TabularMechanism:
    return TabularMechanism(2, 3, init="normal", seed=1)


def test_qre_profile_is_a_fixed_point() -> None:
    game = FiniteGame(_game(), unknown=())
    profile = qre_profile(game, 2.0)
    values = expected_payoffs(game.payoff_table(game.parameters), profile[None])[0]  # type: ignore[arg-type]
    torch.testing.assert_close(logit_responses(values, 2.0), profile)


def test_fixed_point_estimator_recovers_lam_from_exact_counts() -> None:
    game = FiniteGame(_game(), unknown=())
    counts = qre_profile(game, 2.0) * 1000  # expected counts of 1,000 rounds of the QRE at lam = 2
    result = inverse_qre(game, counts, lam=None)
    assert abs(float(result.params["lam"]) - 2.0) < 1e-5
    assert result.method == "qre-fixed-point" and result.equilibrium.shape == (2, 3)


class Weighted(Mechanism):
    """``u_i(a) = base[a, i] + weight[i] * bonus[a, i]``: two known tables, the weights unknown."""

    family = ""

    def __init__(self, weight: list[float]) -> None:
        super().__init__(2, 3)
        generator = torch.Generator().manual_seed(4)
        self.base = torch.nn.Parameter(torch.randn(9, 2, generator=generator))
        self.bonus = torch.nn.Parameter(torch.randn(9, 2, generator=generator))
        self.weight = torch.nn.Parameter(torch.tensor(weight))

    def forward(self, joint_actions: torch.Tensor) -> torch.Tensor:
        index = joint_actions[..., 0] * 3 + joint_actions[..., 1]
        return self.base[index] + self.weight * self.bonus[index]


def test_plug_in_recovers_payoff_weights_and_lam() -> None:
    profile = qre_profile(FiniteGame(Weighted([0.7, -0.4]), unknown=()), 2.5, epsilon=0.05)
    game = FiniteGame(Weighted([0.0, 0.0]), unknown=["weight"])  # base and bonus known: lam is identified
    result = inverse_qre(game, profile * 1e4, lam=None, epsilon=0.05)
    torch.testing.assert_close(
        result.params["weight"], torch.tensor([0.7, -0.4], dtype=torch.float64), atol=1e-4, rtol=0
    )
    assert abs(float(result.params["lam"]) - 2.5) < 1e-3
    assert result.method == "qre-plug-in" and result.mechanism is not None


def test_lam_and_a_fully_unknown_payoff_are_not_separately_identified() -> None:
    counts = torch.ones(2, 3)
    with pytest.raises(ConfigurationError, match="not separately identified"):
        inverse_qre(FiniteGame(_game()), counts, lam=None)
    with pytest.raises(ConfigurationError, match="nothing to estimate"):
        inverse_qre(FiniteGame(_game(), unknown=()), counts, lam=1.0)
    with pytest.raises(ConfigurationError, match="shape"):
        inverse_qre(FiniteGame(_game()), torch.ones(3, 3), lam=1.0)


def test_lam_matches_pygambit_logit_estimate() -> None:
    gbt = pytest.importorskip("pygambit")
    import numpy as np

    mechanism = _game()
    table = mechanism.payoff_table().detach().double().reshape(3, 3, 2).numpy()
    game = getattr(gbt, "StrategicGame", gbt.Game).from_arrays(table[..., 0], table[..., 1])  # 17.x, 16.x
    counts = np.array([[60.0, 25.0, 15.0], [20.0, 50.0, 30.0]])
    data = game.mixed_strategy_profile(data=counts.tolist(), rational=False)  # counts, not frequencies
    gambit = gbt.qre.logit_estimate(data)  # the principal branch's maximum likelihood
    ours = inverse_qre(FiniteGame(mechanism, unknown=()), torch.tensor(counts), lam=None)
    assert abs(float(ours.params["lam"]) - gambit.lam) < 1e-3
    assert abs(-float(ours.final) * counts.sum() - gambit.log_like) < 1e-3
