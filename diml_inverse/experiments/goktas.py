"""Goktas et al.'s inverse-game table (ICLR 2024) reproduced and beaten: ``python -m diml_inverse.experiments goktas``.

Every row draws a batch of markets, computes their equilibrium (noise-free, as in their notebooks), hides
parameters and recovers them with :func:`~diml_inverse.equilibrium.inverse_nash`, all markets in one tensor
program. A market is recovered when every hidden parameter is within relative error ``rtol`` of the truth at
the last iteration (``recovered``; 0.1, theirs for Cournot and Bertrand; Fisher valuations are compared
normalised to sum to one per buyer, the scale behaviour cannot reveal). ``recovered_their_rule`` counts as
their notebooks do: a market is stopped at the first check, every 10 iterations, where it is within ``rtol``
of the truth, so passing through the band counts (:meth:`InverseResult.recovered_at_a_check`).

Their settings, read from their notebooks (github.com/Sadie-Zhao/EFFICIENT-INVERSE-MULTIAGENT-LEARNING-ICLR24,
commit 84bb838, no licence: read, not copied): ``(Cournot)_Inverse_Game_Theory.ipynb`` and
``(Bertrand)_Inverse_Game_Theory.ipynb`` draw Cournot *and* Bertrand markets alike, ``c ~ U[2, 20]``,
``b ~ U[-10, -0.01]``, ``a ~ U[10, 100]`` from one random key per market, so that the three are one uniform
``u`` apart from scale (the *correlated* draws here); 500 markets, one market at a time. Every market starts
from one guess, ``jax.random.uniform(PRNGKey(42))`` scaled to ``[2, 10]``: ``c = 5.414`` (and, jointly,
``b = -5.737``, ``a = 48.41``). Cournot cost: GDA, Adam 1e-2 / 5e-3, 10,000 iterations, ``c in [2, 100]``,
``q >= 0.01``: 0.952. Bertrand cost: max-oracle GD, Adam 0.3, 250 iterations, ``c in [1, 100]``, the best
response by the monopoly price (found by 10,000 Adam steps) or undercutting the rival by 0.01: 0.78. Fisher
(the Linear, CD and Leontief notebooks are byte-identical and all run linear utilities): 3 buyers x 2 goods,
unit supplies, valuations ``U[0, 10]`` normalised per buyer, budgets ``U[0, 10]``, 10 markets, exploitability
GD, Adam 1e-2, 5,000 iterations, budgets in ``[1e-4, 100]``, recovered when the Euclidean norm of the budgets'
relative errors is below 0.01: 1.0; budgets and valuations jointly: 0.0.

Identification, per market (the ``identified`` column): Cournot's cost is identified when the observed
quantity is positive (``a > c``; with ``q* = 0`` every cost above ``a`` rationalises it); Cournot's cost, slope
and intercept jointly are not (one equation ``q* = (a - c) / (-3 b)`` for three unknowns). Bertrand's cost is
identified when demand at the price is positive (``a + b c > 0``); else every cost from the choke price
``a / -b`` up rationalises it (half of their correlated draws: ``a + b c > 0`` exactly when ``u > 0.5``).
Fisher budgets always are (``b_i = p . x_i``); Cobb-Douglas valuations are too (spending shares); linear
valuations are not (an equilibrium reveals only each buyer's best goods per dollar, an inequality).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diml_inverse.equilibrium import BertrandGame, CournotGame, FisherMarket, inverse_nash
from diml_inverse.equilibrium.games import GAME_DTYPE, EquilibriumGame
from diml_inverse.experiments.runner import write_table
from mechgym.errors import ConfigurationError, suggest

__all__ = ["GOKTAS_ROWS", "GoktasRow", "format_goktas_table", "run_goktas", "run_goktas_row"]


@dataclass(frozen=True)
class GoktasRow:
    """One row of the table: a game, what is hidden, the draws and the solver settings."""

    name: str
    """Row label."""
    game: str
    """``"cournot"``, ``"bertrand"``, ``"fisher-linear"`` or ``"fisher-cobb-douglas"``."""
    unknown: tuple[str, ...]
    """The hidden parameters."""
    draws: str
    """``"correlated"`` (their generator: one uniform per market for cost, slope and intercept) or
    ``"independent"``; Fisher rows draw their ranges independently."""
    settings: str
    """``"theirs"`` (their solver, learning rates, iterations, projections and starting guess) or ``"ours"``."""
    method: str
    """The :func:`inverse_nash` method."""
    iterations: int
    """Outer iterations."""
    lr: float
    """Adam learning rate of the parameters."""
    n_markets: int = 500
    """Markets in the batch."""
    deviation_lr: float = 5e-3
    """Adam learning rate of the deviation (GDA)."""
    schedule: str = "constant"
    """Learning-rate schedule."""
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Projections (their Cournot: ``c in [2, 100]``; their Bertrand: ``c in [1, 100]``)."""
    init: dict[str, float] = field(default_factory=dict)
    """One starting guess for every market (theirs: ``c = 5.414``); empty: the game's own guess per market
    (:meth:`EquilibriumGame.initial_value`; Bertrand's cost: the observed price)."""
    rtol: float = 0.1
    """Relative error within which a parameter counts as recovered (theirs: 0.1; Fisher 0.01)."""
    theirs: float | None = None
    """Their recovery rate for this row (None: they report none)."""


_THEIR_GUESS = 5.414  # jax.random.uniform(PRNGKey(42)) on [2, 10]: the cost every market of theirs starts from
_COURNOT_BOUNDS = {"cost": (2.0, 100.0)}  # their Cournot projection
_BERTRAND_BOUNDS = {"cost": (1.0, 100.0)}  # their Bertrand projection
_COST_INIT = {"cost": _THEIR_GUESS}
_JOINT = ("cost", "slope", "intercept")
_JOINT_INIT = {"cost": _THEIR_GUESS, "slope": -5.737, "intercept": 48.41}  # the same uniform on their ranges
_JOINT_BOUNDS = {"cost": (2.0, 100.0), "slope": (-10.0, -0.01), "intercept": (10.0, 100.0)}


def _cournot(draws: str, settings: str) -> GoktasRow:
    if settings == "theirs":
        return GoktasRow(
            "Cournot cost",
            "cournot",
            ("cost",),
            draws,
            settings,
            "gda",
            10_000,
            1e-2,
            bounds=_COURNOT_BOUNDS,
            init=_COST_INIT,
            theirs=0.952 if draws == "correlated" else None,
        )
    return GoktasRow(
        "Cournot cost",
        "cournot",
        ("cost",),
        draws,
        settings,
        "max-oracle",
        300,
        0.5,
        schedule="cosine",
        bounds=_COURNOT_BOUNDS,
        init=_COST_INIT,
        theirs=0.952 if draws == "correlated" else None,
    )


def _bertrand(draws: str, settings: str, init: dict[str, float]) -> GoktasRow:
    schedule = "constant" if settings == "theirs" else "cosine"
    return GoktasRow(
        "Bertrand cost",
        "bertrand",
        ("cost",),
        draws,
        settings,
        "max-oracle",
        250,
        0.3,
        schedule=schedule,
        bounds=_BERTRAND_BOUNDS,
        init=init,
        theirs=0.78 if draws == "correlated" else None,
    )


def _fisher_row(name: str, game: str, unknown: tuple[str, ...], iterations: int, theirs: float) -> GoktasRow:
    return GoktasRow(
        name,
        game,
        unknown,
        "independent",
        "ours",
        "max-oracle",
        iterations,
        0.05,
        n_markets=10,
        init={"budgets": 5.0},
        rtol=0.01,
        theirs=theirs,
    )


GOKTAS_ROWS: tuple[GoktasRow, ...] = (
    _cournot("correlated", "theirs"),
    _cournot("independent", "theirs"),
    _cournot("correlated", "ours"),
    _cournot("independent", "ours"),
    GoktasRow(
        "Cournot cost+slope+intercept",
        "cournot",
        _JOINT,
        "independent",
        "ours",
        "max-oracle",
        1000,
        0.1,
        schedule="cosine",
        bounds=_JOINT_BOUNDS,
        init=_JOINT_INIT,
    ),
    _bertrand("correlated", "theirs", _COST_INIT),
    _bertrand("correlated", "ours", _COST_INIT),
    _bertrand("independent", "ours", _COST_INIT),
    _bertrand("correlated", "ours", {}),  # the game's guess: the observed price
    _bertrand("independent", "ours", {}),
    _fisher_row("Fisher linear budgets", "fisher-linear", ("budgets",), 1000, 1.0),
    _fisher_row("Fisher linear budgets+valuations", "fisher-linear", ("budgets", "valuations"), 2000, 0.0),
    _fisher_row("Fisher Cobb-Douglas budgets", "fisher-cobb-douglas", ("budgets",), 1000, 1.0),
    _fisher_row("Fisher Cobb-Douglas budgets+valuations", "fisher-cobb-douglas", ("budgets", "valuations"), 2000, 0.0),
)


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=GAME_DTYPE)


def _oligopoly(row: GoktasRow, generator: torch.Generator) -> tuple[EquilibriumGame, Any, dict[str, Tensor], Tensor]:
    n = row.n_markets
    if row.draws == "correlated":  # their one random key per market: one uniform for all three
        u = torch.rand(n, generator=generator, dtype=GAME_DTYPE)
        cost, slope, intercept = 2 + 18 * u, -10 + 9.99 * u, 10 + 90 * u
    else:
        ranges = ((2, 20), (-10, -0.01), (10, 100))
        cost, slope, intercept = (_uniform(generator, (n,), lo, hi) for lo, hi in ranges)
    truth = {"cost": cost, "slope": slope, "intercept": intercept}
    known = {name: None if name in row.unknown else value for name, value in truth.items()}
    game_class = CournotGame if row.game == "cournot" else BertrandGame
    game = game_class(known["intercept"], known["slope"], known["cost"])
    observed = game.equilibrium(truth)
    if row.game == "cournot":
        identified = observed[:, 0] > 0 if row.unknown == ("cost",) else torch.zeros(n, dtype=torch.bool)
    else:
        identified = intercept + slope * cost > 0
    return game, observed, {name: truth[name] for name in row.unknown}, identified


def _fisher(row: GoktasRow, generator: torch.Generator) -> tuple[EquilibriumGame, Any, dict[str, Tensor], Tensor]:
    n, buyers, goods = row.n_markets, 3, 2
    utility = "linear" if row.game == "fisher-linear" else "cobb-douglas"
    valuations = _uniform(generator, (n, buyers, goods), 0.0, 10.0)  # theirs: U[0, 10], normalised per buyer
    valuations = valuations / valuations.sum(-1, keepdim=True)
    budgets = _uniform(generator, (n, buyers), 0.0, 10.0)
    truth = {"valuations": valuations, "budgets": budgets, "supplies": torch.ones(n, goods, dtype=GAME_DTYPE)}
    game = FisherMarket(
        None if "valuations" in row.unknown else valuations,
        None if "budgets" in row.unknown else budgets,
        utility=utility,  # type: ignore[arg-type]
        n_buyers=buyers,
        n_goods=goods,
    )
    observed = game.equilibrium(truth)
    hidden = {name: game.canonical_parameters(truth)[name] for name in row.unknown}
    identified_valuations = utility == "cobb-douglas" or "valuations" not in row.unknown
    return game, observed, hidden, torch.full((n,), identified_valuations, dtype=torch.bool)


_MAKERS: dict[str, Callable[[GoktasRow, torch.Generator], tuple[EquilibriumGame, Any, dict[str, Tensor], Tensor]]] = {
    "cournot": _oligopoly,
    "bertrand": _oligopoly,
    "fisher-linear": _fisher,
    "fisher-cobb-douglas": _fisher,
}


def run_goktas_row(row: GoktasRow, seed: int = 0) -> dict[str, Any]:
    """Draw the row's markets at ``seed``, invert them, and measure.

    Returns:
        The row's settings with ``recovered`` (share of markets at the last iteration), ``recovered_their_rule``
        (share within ``rtol`` at any check every 10 iterations, their count), ``identified`` (share identified),
        ``recovered_identified`` (share of those recovered), per-parameter recovery shares, ``iterations``
        (run), ``median_iterations_to_tol`` (first iteration with exploitability below 1e-8, among those
        that got there) and ``seconds`` (the inversion's wall time).
    """
    generator = torch.Generator().manual_seed(seed)
    game, observed, truth, identified = _MAKERS[row.game](row, generator)
    started = time.perf_counter()
    result = inverse_nash(
        game,
        observed,
        row.unknown,
        method=row.method,  # type: ignore[arg-type]
        iterations=row.iterations,
        lr=row.lr,
        deviation_lr=row.deviation_lr,
        schedule=row.schedule,  # type: ignore[arg-type]
        bounds=row.bounds or None,
        init=row.init or None,
        tol=1e-8,
        record_every=10,  # their notebooks check every 10 iterations
    )
    seconds = time.perf_counter() - started
    recovered = result.recovered(truth, row.rtol)
    reached = result.converged_at[result.converged_at >= 0] if result.converged_at is not None else torch.empty(0)
    return {
        **asdict(row),
        "seed": seed,
        "recovered": float(recovered.double().mean()),
        "recovered_their_rule": float(result.recovered_at_a_check(truth, row.rtol).double().mean()),
        "per_parameter": {n: float(result.recovered({n: v}, row.rtol).double().mean()) for n, v in truth.items()},
        "identified": float(identified.double().mean()),
        "recovered_identified": float(recovered[identified].double().mean()) if bool(identified.any()) else None,
        "iterations_run": result.iterations,
        "median_iterations_to_tol": float(reached.double().median()) if reached.numel() else None,
        "seconds": seconds,
    }


def format_goktas_table(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table of :func:`run_goktas`'s rows."""

    def share(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = [
        "| row | draws | settings | start | method | iterations | wall s | recovered | their count | per parameter "
        "| identified | recovered of identified | theirs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{n} {v:.2f}" for n, v in r["per_parameter"].items())
        start = ", ".join(f"{n} {v:g}" for n, v in r["init"].items()) or "the game's guess"
        lines.append(
            f"| {r['name']} ({r['n_markets']} markets) | {r['draws']} | {r['settings']} | {start} | {r['method']}, "
            f"lr {r['lr']:g} {r['schedule']} | {r['iterations_run']} | {r['seconds']:.2f} | {share(r['recovered'])} "
            f"| {share(r['recovered_their_rule'])} | {per} | {share(r['identified'])} "
            f"| {share(r['recovered_identified'])} | {share(r['theirs'])} |"
        )
    return "\n".join(lines)


def run_goktas(
    out: Path | None = None, seed: int = 0, rows: Sequence[str] | None = None, iterations: int | None = None
) -> list[dict[str, Any]]:
    """Run every row (or those whose game is in ``rows``), write ``OUT/goktas/table.{md,json}`` when ``out`` is given.

    Args:
        out: Output directory (``None``: write nothing).
        seed: Seed of the market draws.
        rows: Games to run (``"cournot"``, ``"bertrand"``, ``"fisher-linear"``, ``"fisher-cobb-douglas"``).
        iterations: Override every row's iterations (a quick check; the table's figures use the defaults).

    Raises:
        ConfigurationError: for an unknown game name.
    """
    for name in rows or ():
        if name not in _MAKERS:
            raise ConfigurationError(suggest(name, _MAKERS, "goktas game"))
    selected = [r for r in GOKTAS_ROWS if rows is None or r.game in rows]
    if iterations is not None:
        selected = [GoktasRow(**{**asdict(r), "iterations": iterations}) for r in selected]
    measured = [run_goktas_row(row, seed) for row in selected]
    if out is not None:
        write_table(Path(out) / "goktas", format_goktas_table(measured), measured)
    return measured
