"""The recovery zoo's run: record, fit with the default :func:`diml_inverse.fit`, score on held-out episodes.

For each zoo game and run seed ``s``, the truth is ``mechgym.make(env_id, mechanism_seed=s)``; traces are recorded
with the game's logit-Q learner (small games: 60 episodes x 60 rounds, E1's learner; anonymous games: 24 x 40,
E4's), split by episode order 80/20, fitted with the default :class:`~diml_inverse.config.FitConfig` and scored on
the test episodes. The data, fit and evaluation seeds are derived from ``s`` and the game's name
(:func:`~diml_inverse.metrics.derive_seed`), as the experiments' :func:`~diml_inverse.experiments.run_seeds` do.

Columns of ``results.csv`` (one row per game and seed):

* ``diff_mse``: the payoff-difference error of the fit; ``zero_diff_mse``: that of the zero mechanism;
  ``ratio = diff_mse / zero_diff_mse`` (below 1: the fit recovered something; the lower, the better).
* ``fit_nll`` / ``truth_nll``: held-out NLL per agent-round of the fit (its learner and ``q0``) and of the truth
  (the generating learner); ``oracle_gap = fit_nll - truth_nll`` (0: the fit predicts as well as the truth).
* ``uniform_nll`` (``log A``), ``epoch`` (the selected one), ``record_seconds``, ``fit_seconds``.

Files (``OUT/zoo/``): ``seed<s>/<game>.csv`` (written as each game finishes), the merged ``results.csv``,
``table.md`` and ``zoo.png``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diml_inverse.config import FitConfig
from diml_inverse.experiments.report import read_rows
from diml_inverse.experiments.runner import write_rows
from diml_inverse.experiments.zoo.catalog import ZOO_GAMES, ZooGame, register_zoo, zoo_game
from diml_inverse.fit import fit
from diml_inverse.metrics import derive_seed, diff_mse, heldout_nll, uniform_nll, zero_baseline_diff_mse
from mechgym.errors import ConfigurationError
from mechgym.registration import make
from mechgym.rollout import rollout

__all__ = ["RESULT_COLUMNS", "TABLE_COLUMNS", "ZooConfig", "build_zoo_report", "run_zoo", "run_zoo_game", "zoo_config"]

RESULTS_FILE, TABLE_FILE, FIGURE_FILE = "results.csv", "table.md", "zoo.png"
#: The columns of ``results.csv``, in order.
RESULT_COLUMNS: tuple[str, ...] = (
    "game",
    "kind",
    "seed",
    "n_agents",
    "n_actions",
    "scale",
    *("diff_mse", "zero_diff_mse", "ratio", "fit_nll", "truth_nll", "oracle_gap"),
    *("uniform_nll", "epoch", "record_seconds", "fit_seconds"),
)
#: The columns the table summarises (mean ± sd over seeds).
TABLE_COLUMNS: tuple[str, ...] = (*RESULT_COLUMNS[6:12], "fit_seconds")


@dataclass(frozen=True)
class ZooConfig:
    """What the zoo runs."""

    games: tuple[str, ...] = tuple(game.name for game in ZOO_GAMES)
    """Games by name (see :data:`~diml_inverse.experiments.zoo.ZOO_GAMES`)."""
    training: FitConfig = dataclasses.field(default_factory=lambda: FitConfig(progress=False))
    """The options of every fit: the defaults (each fit sets its ``seed``)."""
    diff_samples: int = 20_000
    """Contexts of diff_mse (the published size)."""
    train_fraction: float = 0.8
    """Train/test split by episode order."""
    smoke: bool = False
    """Tiny sizes and 2 epochs: proves the pipeline only."""

    def sizes(self, game: ZooGame) -> tuple[int, int]:
        """Episodes and rounds recorded for ``game``."""
        return (5, 8) if self.smoke else (game.n_episodes, game.n_rounds)


def zoo_config(
    *, games: Sequence[str] | None = None, epochs: int | None = None, smoke: bool = False, progress: bool = False
) -> ZooConfig:
    """The zoo's configuration with the command line's choices (unknown game names get a did-you-mean).

    Raises:
        ConfigurationError: an unknown game or an ``epochs`` that is not an integer >= 1.
    """
    for name in games or ():
        zoo_game(name)
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigurationError(f"epochs must be an integer >= 1; got {epochs!r}")
    config = ZooConfig(smoke=smoke)
    training = dataclasses.replace(config.training, progress=progress)
    if smoke:
        training = dataclasses.replace(training, epochs=2)
        config = dataclasses.replace(config, diff_samples=400)
    if epochs is not None:
        training = dataclasses.replace(training, epochs=epochs)
    config = dataclasses.replace(config, training=training)
    return dataclasses.replace(config, games=tuple(games)) if games else config


def run_zoo_game(config: ZooConfig, name: str, run_seed: int) -> dict[str, Any]:
    """Record, fit and score one zoo game at one run seed; returns its row of ``results.csv``."""
    register_zoo()
    game = zoo_game(name)
    prefix = f"zoo/{name}"
    n_episodes, n_rounds = config.sizes(game)
    started = time.perf_counter()
    env = make(game.env_id, n_rounds=n_rounds, mechanism_seed=run_seed)
    traces = rollout(env, game.learner, n_episodes, n_rounds, seed=derive_seed(run_seed, f"{prefix}/data"))
    record_seconds = time.perf_counter() - started
    train, test = traces.split(config.train_fraction)
    truth = env.mechanism
    evaluation_seed = derive_seed(run_seed, f"{prefix}/evaluation")
    fit_started = time.perf_counter()
    result = fit(game.env_id, train, config=config.training, seed=derive_seed(run_seed, f"{prefix}/fit"))
    fit_seconds = time.perf_counter() - fit_started
    error = diff_mse(truth, result.mechanism, test, config.diff_samples, evaluation_seed)
    zero = zero_baseline_diff_mse(truth, test, config.diff_samples, evaluation_seed)
    fit_nll = heldout_nll(result.mechanism, test, result.learner, result.q0)
    truth_nll = heldout_nll(truth, test, game.learner)
    return {
        "game": name,
        "kind": game.kind,
        "seed": run_seed,
        "n_agents": game.n_agents,
        "n_actions": game.n_actions,
        "scale": game.scale,
        "diff_mse": error,
        "zero_diff_mse": zero,
        "ratio": error / zero if zero > 0 else math.nan,
        "fit_nll": fit_nll,
        "truth_nll": truth_nll,
        "oracle_gap": fit_nll - truth_nll,
        "uniform_nll": uniform_nll(game.n_actions),
        "epoch": result.selected_epoch,
        "record_seconds": record_seconds,
        "fit_seconds": fit_seconds,
    }


def game_file(out: Path, seed: int, name: str) -> Path:
    """``OUT/zoo/seed<s>/<game>.csv``."""
    return Path(out) / "zoo" / f"seed{seed}" / f"{name}.csv"


def run_zoo(config: ZooConfig, seeds: Sequence[int], out: str | Path, *, progress: bool = True) -> dict[int, float]:
    """Run every game of ``config`` at every run seed, writing ``OUT/zoo/seed<s>/<game>.csv`` as each finishes.

    Returns:
        Wall seconds per run seed.

    Raises:
        ConfigurationError: no seeds, or a seed that is not a non-negative integer.
    """
    if not seeds:
        raise ConfigurationError("run_zoo needs at least one seed")
    walls: dict[int, float] = {}
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigurationError(f"a run seed must be a non-negative integer; got {seed!r}")
        started = time.perf_counter()
        bar = tqdm(config.games, desc=f"zoo seed {seed}", disable=not progress, leave=False)
        for name in bar:
            bar.set_postfix(game=name)
            write_rows(game_file(Path(out), seed, name), [run_zoo_game(config, name, seed)])
        bar.close()
        walls[seed] = time.perf_counter() - started
    return walls


# -- report -------------------------------------------------------------------------------------------------------
def _mean_sd(values: Sequence[float]) -> str:
    finite = np.array([v for v in values if math.isfinite(v)])
    if finite.size == 0:
        return "—"
    sd = f" ± {finite.std(ddof=1):.2g}" if finite.size > 1 else ""
    return f"{finite.mean():.3g}{sd}"


def per_game(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The rows grouped by game, in the zoo's table order."""
    order = {game.name: k for k, game in enumerate(ZOO_GAMES)}
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (order.get(str(r["game"]), len(order)), int(r["seed"]))):
        grouped.setdefault(str(row["game"]), []).append(row)
    return grouped


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per game: mean ± sd over seeds of :data:`TABLE_COLUMNS`; then the median and the worst ratio over games."""
    seeds = sorted({int(row["seed"]) for row in rows})
    grouped = per_game(rows)
    lines = [
        f"Seeds {', '.join(map(str, seeds))}; mean ± sd over seeds. ratio = diff_mse / zero_diff_mse (lower is "
        "better, 1 is the zero mechanism); oracle_gap = fit_nll - truth_nll (held-out NLL per agent-round).",
        "",
        "| game | kind | N × A | scale | " + " | ".join(TABLE_COLUMNS) + " |",
        "|---|---|---|---:|" + "---:|" * len(TABLE_COLUMNS),
    ]
    mean_ratios: dict[str, float] = {}
    for name, group in grouped.items():
        first = group[0]
        cells = [_mean_sd([float(row[column]) for row in group]) for column in TABLE_COLUMNS]
        size = f"{int(first['n_agents'])} × {int(first['n_actions'])}"
        lines.append(f"| {name} | {first['kind']} | {size} | {float(first['scale']):g} | " + " | ".join(cells) + " |")
        ratios = [float(row["ratio"]) for row in group if math.isfinite(float(row["ratio"]))]
        if ratios:
            mean_ratios[name] = float(np.mean(ratios))
    if mean_ratios:
        worst = max(mean_ratios, key=lambda name: mean_ratios[name])
        lines += [
            "",
            f"Over {len(mean_ratios)} games (mean ratio per game): median ratio "
            f"{float(np.median(list(mean_ratios.values()))):.3g}, worst {mean_ratios[worst]:.3g} ({worst}).",
        ]
    return "\n".join(lines) + "\n"


def plot_zoo(rows: Sequence[Mapping[str, Any]], path: str | Path, dpi: int = 100) -> Path:
    """The ratio diff_mse / zero baseline per game, one point per seed and a bar at the mean, on a log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from diml_inverse.experiments.plots import METHOD_COLOURS

    grouped = per_game(rows)
    figure = Figure(figsize=(max(6.0, 0.7 * len(grouped) + 2.0), 4.2), dpi=dpi)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    colour = METHOD_COLOURS["DIML"]
    for x, group in enumerate(grouped.values()):
        ratios = np.array([float(row["ratio"]) for row in group])
        ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
        if ratios.size:
            axis.scatter(np.full(ratios.size, x), ratios, color=colour, s=18, zorder=3)
            axis.hlines(np.exp(np.log(ratios).mean()), x - 0.3, x + 0.3, color="black", linewidth=1.2)
    axis.axhline(1.0, color="grey", linestyle="--", linewidth=1.2, label="zero mechanism")
    axis.set_yscale("log")
    axis.set_xticks(range(len(grouped)), list(grouped), rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("diff_mse / zero baseline")
    seeds = sorted({int(row["seed"]) for row in rows})
    label = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    axis.set_title(f"Recovery zoo: DIML (default fit), {label}; bars: geometric mean", fontsize=10)
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=dpi)
    return target


def build_zoo_report(out: str | Path, seeds: Sequence[int] | None = None) -> dict[str, Path]:
    """Merge ``OUT/zoo/seed*/*.csv`` (or only ``seeds``) into ``results.csv``, ``table.md`` and ``zoo.png``.

    Raises:
        ConfigurationError: there are no results under ``OUT/zoo``.
    """
    root = Path(out) / "zoo"
    files = sorted(root.glob("seed*/*.csv"))
    rows = [row for path in files for row in read_rows(path)]
    if seeds is not None:
        rows = [row for row in rows if int(row["seed"]) in set(seeds)]
    if not rows:
        raise ConfigurationError(f"no zoo results under {root}; run the zoo first")
    ordered = [row for group in per_game(rows).values() for row in group]
    ordered = [{column: row[column] for column in RESULT_COLUMNS} for row in ordered]
    paths = {
        "results": write_rows(root / RESULTS_FILE, ordered),
        "markdown": root / TABLE_FILE,
        "figure": plot_zoo(ordered, root / FIGURE_FILE),
    }
    paths["markdown"].write_text(markdown_table(ordered))
    return paths
