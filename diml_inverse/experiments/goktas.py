"""Goktas et al.'s inverse-game table (ICLR 2024) reproduced and beaten: ``python -m diml_inverse.experiments goktas``.

Every row draws a batch of markets, computes their equilibrium (noise-free, as in their notebooks), hides
parameters and recovers them with :func:`~diml_inverse.equilibrium.inverse_nash`, all markets in one tensor
program. A market is recovered when every hidden parameter is within relative error 0.1 (their criterion;
Fisher valuations are compared normalised to sum to one per buyer, the scale behaviour cannot reveal).

Draws: Cournot and Bertrand ``c ~ U[2, 20]``, ``b ~ U[-10, -0.01]``, ``a ~ U[10, 100]``, either *correlated*
(one uniform per market for all three, as their code's shared random key makes them) or *independent*.
Fisher: 3 buyers x 2 goods, unit supplies, valuations ``U[0.1, 1]``, budgets ``U[1, 10]``, 10 markets.
The Bertrand and Fisher ranges are not in their description; these are ours.

Identification, per market (the ``identified`` column): Cournot's cost is identified when the observed
quantity is positive (``a > c``; with ``q* = 0`` every cost above ``a`` rationalises it); Cournot's cost, slope
and intercept jointly are not (one equation ``q* = (a - c) / (-3 b)`` for three unknowns). Bertrand's cost is
identified when demand at the price is positive (``a + b c > 0``; else no deviation earns anything at any
cost). Fisher budgets always are (``b_i = p . x_i``); Cobb-Douglas valuations are too (spending shares); linear
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
    """``"correlated"`` (their generator), ``"independent"`` or ``"positive-demand"`` (Bertrand: ``a ~ U[50, 100]``,
    ``b ~ U[-2, -0.01]``, so that demand at cost is positive in every market)."""
    settings: str
    """``"theirs"`` (their solver, learning rates and iterations) or ``"ours"``."""
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
    """Projections (their Cournot: ``c in [2, 100]``)."""
    init: dict[str, float] = field(default_factory=dict)
    """One starting guess for every market (as theirs)."""
    theirs: float | None = None
    """Their recovery rate for this row (None: they report none)."""


_COST_BOUNDS = {"cost": (2.0, 100.0)}  # their projection
_COST_INIT = {"cost": 11.0}  # one guess for every market (the middle of the cost draws)
_JOINT = ("cost", "slope", "intercept")
_JOINT_INIT = {"cost": 11.0, "slope": -5.0, "intercept": 55.0}
_JOINT_BOUNDS = {"cost": (2.0, 100.0), "slope": (-10.0, -0.01), "intercept": (10.0, 100.0)}

GOKTAS_ROWS: tuple[GoktasRow, ...] = (
    GoktasRow(
        "Cournot cost",
        "cournot",
        ("cost",),
        "correlated",
        "theirs",
        "gda",
        10_000,
        1e-2,
        bounds=_COST_BOUNDS,
        init=_COST_INIT,
        theirs=0.952,
    ),
    GoktasRow(
        "Cournot cost",
        "cournot",
        ("cost",),
        "independent",
        "theirs",
        "gda",
        10_000,
        1e-2,
        bounds=_COST_BOUNDS,
        init=_COST_INIT,
    ),
    GoktasRow(
        "Cournot cost",
        "cournot",
        ("cost",),
        "correlated",
        "ours",
        "max-oracle",
        300,
        0.5,
        schedule="cosine",
        bounds=_COST_BOUNDS,
        init=_COST_INIT,
        theirs=0.952,
    ),
    GoktasRow(
        "Cournot cost",
        "cournot",
        ("cost",),
        "independent",
        "ours",
        "max-oracle",
        300,
        0.5,
        schedule="cosine",
        bounds=_COST_BOUNDS,
        init=_COST_INIT,
    ),
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
    GoktasRow(
        "Bertrand cost",
        "bertrand",
        ("cost",),
        "correlated",
        "theirs",
        "max-oracle",
        250,
        0.3,
        init=_COST_INIT,
        theirs=0.78,
    ),
    GoktasRow(
        "Bertrand cost",
        "bertrand",
        ("cost",),
        "correlated",
        "ours",
        "max-oracle",
        250,
        0.3,
        schedule="cosine",
        init=_COST_INIT,
        theirs=0.78,
    ),
    GoktasRow(
        "Bertrand cost",
        "bertrand",
        ("cost",),
        "independent",
        "ours",
        "max-oracle",
        250,
        0.3,
        schedule="cosine",
        init=_COST_INIT,
    ),
    GoktasRow(
        "Bertrand cost",
        "bertrand",
        ("cost",),
        "positive-demand",
        "ours",
        "max-oracle",
        250,
        0.3,
        schedule="cosine",
        init=_COST_INIT,
        theirs=0.78,
    ),
    GoktasRow(
        "Fisher linear budgets",
        "fisher-linear",
        ("budgets",),
        "independent",
        "ours",
        "max-oracle",
        1000,
        0.05,
        n_markets=10,
        init={"budgets": 5.0},
        theirs=1.0,
    ),
    GoktasRow(
        "Fisher linear budgets+valuations",
        "fisher-linear",
        ("budgets", "valuations"),
        "independent",
        "ours",
        "max-oracle",
        2000,
        0.05,
        n_markets=10,
        init={"budgets": 5.0},
        theirs=0.0,
    ),
    GoktasRow(
        "Fisher Cobb-Douglas budgets",
        "fisher-cobb-douglas",
        ("budgets",),
        "independent",
        "ours",
        "max-oracle",
        1000,
        0.05,
        n_markets=10,
        init={"budgets": 5.0},
        theirs=1.0,
    ),
    GoktasRow(
        "Fisher Cobb-Douglas budgets+valuations",
        "fisher-cobb-douglas",
        ("budgets", "valuations"),
        "independent",
        "ours",
        "max-oracle",
        2000,
        0.05,
        n_markets=10,
        init={"budgets": 5.0},
        theirs=0.0,
    ),
)


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=GAME_DTYPE)


def _oligopoly(row: GoktasRow, generator: torch.Generator) -> tuple[EquilibriumGame, Any, dict[str, Tensor], Tensor]:
    n = row.n_markets
    if row.draws == "correlated":
        u = torch.rand(n, generator=generator, dtype=GAME_DTYPE)
        cost, slope, intercept = 2 + 18 * u, -10 + 9.99 * u, 10 + 90 * u
    else:  # independent; positive-demand: a >= 50 > 2 * 20 >= -b c, so that demand at cost is positive
        ranges = ((2, 20), (-10, -0.01), (10, 100)) if row.draws == "independent" else ((2, 20), (-2, -0.01), (50, 100))
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
    valuations = _uniform(generator, (n, buyers, goods), 0.1, 1.0)
    budgets = _uniform(generator, (n, buyers), 1.0, 10.0)
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
        The row's settings with ``recovered`` (share of markets), ``identified`` (share identified),
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
        record_every=row.iterations,
    )
    seconds = time.perf_counter() - started
    recovered = result.recovered(truth)
    reached = result.converged_at[result.converged_at >= 0] if result.converged_at is not None else torch.empty(0)
    return {
        **asdict(row),
        "seed": seed,
        "recovered": float(recovered.double().mean()),
        "per_parameter": {n: float(result.recovered({n: v}).double().mean()) for n, v in truth.items()},
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
        "| row | draws | settings | method | iterations | wall s | recovered | per parameter | identified "
        "| recovered of identified | theirs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{n} {v:.2f}" for n, v in r["per_parameter"].items())
        lines.append(
            f"| {r['name']} ({r['n_markets']} markets) | {r['draws']} | {r['settings']} | {r['method']}, "
            f"lr {r['lr']:g} {r['schedule']} | {r['iterations_run']} | {r['seconds']:.2f} | {share(r['recovered'])} "
            f"| {per} | {share(r['identified'])} | {share(r['recovered_identified'])} | {share(r['theirs'])} |"
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
