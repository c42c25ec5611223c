"""Equilibrium inversion: games, inverse Nash (three solvers, batched), recovery rates, errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from diml_inverse.equilibrium import (
    BertrandGame,
    CournotGame,
    FiniteGame,
    FisherMarket,
    empirical_profiles,
    expected_payoffs,
    inverse_nash,
)
from diml_inverse.equilibrium.finite import project_simplex
from diml_inverse.experiments.goktas import GOKTAS_ROWS, format_goktas_table, run_goktas_row
from mechgym.errors import ConfigurationError
from mechgym.mechanisms import TabularMechanism

F64 = torch.float64


def _draws(n: int, seed: int, ranges: tuple[tuple[float, float], ...]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [low + (high - low) * torch.rand(n, generator=generator, dtype=F64) for low, high in ranges]


def test_cournot_cost_recovered_in_95_percent_of_200_independent_markets() -> None:
    cost, slope, intercept = _draws(200, 3, ((2, 20), (-10, -0.01), (10, 100)))
    game = CournotGame(intercept, slope)  # cost=None: unknown
    observed = game.equilibrium({"intercept": intercept, "slope": slope, "cost": cost})
    result = inverse_nash(game, observed, iterations=300, lr=0.5, schedule="cosine", init={"cost": 11.0}, tol=1e-8)
    assert result.params["cost"].shape == (200,)  # one batched program, one estimate per market
    recovered = result.recovered({"cost": cost})
    assert float(recovered.double().mean()) >= 0.95
    identified = observed[:, 0] > 0  # q* = 0 (a <= c) is rationalised by every cost above a
    assert bool(recovered[identified].all())
    assert result.trace.shape[1:] == (200,) and float(result.final[identified].abs().max()) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "iterations", "lr", "deviation_lr", "schedule"),
    [("gda", 2000, 0.02, 0.1, "constant"), ("exploit-gd", 300, 0.5, 0.5, "cosine")],
)
def test_cournot_first_order_solvers_recover_the_cost(
    method: str, iterations: int, lr: float, deviation_lr: float, schedule: str
) -> None:
    cost, slope, intercept = _draws(20, 4, ((2, 20), (-3, -0.5), (50, 100)))
    game = CournotGame(intercept, slope)
    observed = game.equilibrium({"intercept": intercept, "slope": slope, "cost": cost})
    options = {"iterations": iterations, "lr": lr, "deviation_lr": deviation_lr, "schedule": schedule}
    result = inverse_nash(game, observed, method=method, init={"cost": 11.0}, **options)  # type: ignore[arg-type]
    assert result.method == method
    assert float(result.recovered({"cost": cost}).double().mean()) >= 0.95


def test_bertrand_cost_recovered_in_every_identified_market_from_one_start() -> None:
    cost, slope, intercept = _draws(300, 5, ((2, 20), (-2, -0.01), (50, 100)))  # demand at cost > 0: identified
    game = BertrandGame(intercept, slope)
    observed = game.equilibrium({"intercept": intercept, "slope": slope, "cost": cost})
    result = inverse_nash(game, observed, iterations=250, lr=0.3, schedule="cosine", init={"cost": 5.414})
    assert float(result.recovered({"cost": cost}).double().mean()) >= 0.99  # Goktas et al.: 0.78 on all draws


def _bertrand_row(settings: str, draws: str, common_start: bool) -> dict[str, object]:
    row = next(
        r
        for r in GOKTAS_ROWS
        if r.game == "bertrand" and r.settings == settings and r.draws == draws and bool(r.init) == common_start
    )
    return run_goktas_row(row, seed=0)


def test_bertrand_their_settings_reproduce_their_rate_on_their_draws() -> None:
    theirs = _bertrand_row("theirs", "correlated", common_start=True)  # 500 markets, c = 5.414, Adam 0.3, 250 steps
    assert theirs["identified"] == 0.5  # a + b c > 0 exactly when their shared uniform exceeds 1/2
    assert theirs["recovered_identified"] == 1.0
    assert abs(theirs["recovered_their_rule"] - 0.78) <= 0.03  # their notebook: 0.78 of 500 markets
    assert theirs["recovered"] <= theirs["recovered_their_rule"]  # their count stops a market on the truth


@pytest.mark.parametrize("draws", ["correlated", "independent"])
def test_bertrand_ours_at_their_rate_or_better(draws: str) -> None:
    common = _bertrand_row("ours", draws, common_start=True)
    assert common["recovered_identified"] >= 0.99  # their start: every identified market but at most 1 %
    guess = _bertrand_row("ours", draws, common_start=False)  # the game's guess: the observed price
    assert guess["recovered"] == 1.0 and guess["iterations_run"] == 0  # >= their 0.78 of all draws
    assert guess["recovered_identified"] == 1.0


def test_the_parameter_trace_and_their_count() -> None:
    cost, slope, intercept = _draws(40, 9, ((2, 20), (-2, -0.5), (50, 100)))
    game = CournotGame(intercept, slope)
    observed = game.equilibrium({"intercept": intercept, "slope": slope, "cost": cost})
    result = inverse_nash(game, observed, iterations=60, lr=0.5, init={"cost": 11.0}, record_every=10)
    assert result.params_trace["cost"].shape == (len(result.trace_iterations), 40)
    assert torch.equal(result.params_trace["cost"][-1], result.params["cost"])
    assert bool((result.recovered_at_a_check({"cost": cost}) >= result.recovered({"cost": cost})).all())
    with pytest.raises(ConfigurationError, match="no trace"):
        result.recovered_at_a_check({"slope": slope})


@pytest.mark.parametrize("utility", ["linear", "cobb-douglas"])
def test_fisher_budgets_recovered_in_every_market(utility: str) -> None:
    generator = torch.Generator().manual_seed(6)
    valuations = 0.1 + 0.9 * torch.rand(10, 3, 2, generator=generator, dtype=F64)
    budgets = 1 + 9 * torch.rand(10, 3, generator=generator, dtype=F64)
    game = FisherMarket(valuations, None, utility=utility)  # type: ignore[arg-type]
    observed = game.equilibrium(
        {"valuations": valuations, "budgets": budgets, "supplies": torch.ones(10, 2, dtype=F64)}
    )
    truth = {"valuations": valuations, "budgets": budgets, "supplies": torch.ones(10, 2, dtype=F64)}
    assert float(game.exploitability(truth, observed).abs().max()) < 1e-9  # the EG gap vanishes at equilibrium
    result = inverse_nash(game, observed, iterations=1000, lr=0.05, init={"budgets": 5.0})
    assert bool(result.recovered({"budgets": budgets}).all())  # Goktas et al.: 1.0


def test_fisher_cobb_douglas_valuations_and_budgets_jointly() -> None:
    row = next(r for r in GOKTAS_ROWS if r.game == "fisher-cobb-douglas" and len(r.unknown) == 2)
    measured = run_goktas_row(row, seed=1)
    assert measured["recovered"] == 1.0 and measured["identified"] == 1.0
    assert "Fisher Cobb-Douglas" in format_goktas_table([measured])


def test_exploitability_is_zero_at_the_truth_and_the_best_response_is_best() -> None:
    cost, slope, intercept = _draws(50, 7, ((2, 20), (-2, -0.5), (50, 100)))
    truth = {"intercept": intercept, "slope": slope, "cost": cost}
    generator = torch.Generator().manual_seed(8)
    for game in (CournotGame(intercept, slope, cost), BertrandGame(intercept, slope, cost)):
        observed = game.equilibrium(truth)
        best = game.regret(truth, observed, game.best_response(truth, observed))
        assert float(best.abs().max()) < 1e-6
        for _ in range(5):  # no deviation beats the best response, at the truth or at a wrong cost
            random = observed * (0.5 + torch.rand(observed.shape, generator=generator, dtype=F64))
            assert bool((game.regret(truth, observed, random) <= best + 1e-9).all())
            wrong = {**truth, "cost": cost * 0.8}
            top = game.regret(wrong, observed, game.best_response(wrong, observed))
            assert bool((game.regret(wrong, observed, random) <= top + 1e-9).all()) and bool((top > 0).all())


def test_parameters_broadcast_over_markets() -> None:
    game = CournotGame(intercept=50.0, slope=torch.tensor([-1.0, -2.0, -4.0]))  # a scalar and a batch
    cost = torch.tensor([5.0, 8.0, 11.0], dtype=F64)
    slope = torch.tensor([-1.0, -2.0, -4.0], dtype=F64)
    observed = game.equilibrium({"intercept": torch.tensor(50.0, dtype=F64), "slope": slope, "cost": cost})
    result = inverse_nash(game, observed, iterations=300, lr=0.5, schedule="cosine", init={"cost": 11.0})
    torch.testing.assert_close(result.params["cost"], cost, rtol=1e-6, atol=1e-6)
    assert result.equilibrium.shape == (3, 2)


def test_finite_game_expected_payoffs_and_nash_inversion() -> None:
    mechanism = TabularMechanism(3, 2, init="normal", seed=3)
    generator = torch.Generator().manual_seed(0)
    profiles = torch.softmax(torch.randn(4, 3, 2, generator=generator, dtype=F64), -1)
    table = mechanism.payoff_table().detach().double()
    values = expected_payoffs(table, profiles)
    for b, i, a in itertools.product(range(4), range(3), range(2)):  # brute force over the others' actions
        total = torch.zeros((), dtype=F64)
        for joint in itertools.product(range(2), repeat=3):
            if joint[i] != a:
                continue
            weight = torch.prod(torch.stack([profiles[b, j, joint[j]] for j in range(3) if j != i]))
            index = sum(x * 2 ** (2 - k) for k, x in enumerate(joint))
            total = total + weight * table[index, i]
        torch.testing.assert_close(values[b, i, a], total)
    pure = torch.nn.functional.one_hot(torch.tensor([[0, 1, 0]]), 2).double()  # observed pure play
    game = FiniteGame(TabularMechanism(3, 2, init="normal", seed=5))
    result = inverse_nash(game, pure, iterations=400, lr=0.05)
    assert float(result.final) < 1e-3 < float(result.trace[0])  # normalised exploitability driven to ~0
    assert result.mechanism is not None and result.mechanism.payoff_table().dtype == torch.float32


def test_simplex_projection_and_empirical_profiles() -> None:
    projected = project_simplex(torch.tensor([[0.5, 0.9, -0.2], [2.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(projected.sum(-1), torch.ones(2, dtype=F64))
    assert bool((projected >= 0).all())
    actions = torch.tensor([[[0, 1], [1, 1], [1, 0]], [[0, 0], [0, 0], [0, 1]]])  # [E=2, T=3, N=2]
    per_episode = empirical_profiles(actions, 2, last_rounds=2)
    torch.testing.assert_close(per_episode[0], torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=F64))
    assert empirical_profiles(actions, 2, pooled=True).shape == (1, 2, 2)
    with pytest.raises(ConfigurationError, match="last_rounds"):
        empirical_profiles(actions, 2, last_rounds=4)


def test_bad_input_raises_clear_errors() -> None:
    game = CournotGame(50.0, -2.0)
    quantities = torch.tensor([[8.0, 8.0]])
    with pytest.raises(ConfigurationError, match="Did you mean 'max-oracle'"):
        inverse_nash(game, quantities, method="max_oracle")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Did you mean 'cost'"):
        inverse_nash(game, quantities, unknown=("costs",))
    with pytest.raises(ConfigurationError, match=r"shape \[\.\.\., 2\]"):
        inverse_nash(game, torch.ones(3))
    with pytest.raises(ConfigurationError, match="lr must be a positive number"):
        inverse_nash(game, quantities, lr=0.0)
    with pytest.raises(ConfigurationError, match="low <= high"):
        inverse_nash(game, quantities, bounds={"cost": (5.0, 1.0)})
    with pytest.raises(ConfigurationError, match="nothing to estimate"):
        inverse_nash(CournotGame(50.0, -2.0, 3.0), quantities)
    with pytest.raises(ConfigurationError, match="n_goods"):
        FisherMarket(None, None, n_buyers=3)
