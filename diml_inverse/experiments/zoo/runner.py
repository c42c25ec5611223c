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

from diml_inverse.config import FitConfig
from diml_inverse.experiments.report import read_rows
from diml_inverse.experiments.runner import write_rows
from diml_inverse.experiments.zoo.catalog import ZOO_GAMES, ZooGame, register_zoo, zoo_game
from diml_inverse.experiments.zoo.scoring import score_fit
from diml_inverse.fit import fit
from diml_inverse.metrics import derive_seed, uniform_nll
from diml_inverse.result import FitResult
from diml_inverse.sweep import SWEEP_DIRECTORY, SweepOptions, Task, TaskOutcome
from mechgym.errors import ConfigurationError
from mechgym.mechanisms import Mechanism
from mechgym.registration import make
from mechgym.rollout import rollout
from mechgym.traces import TraceDataset

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
    *("uniform_nll", "epoch", "record_seconds", "fit_seconds", "model"),
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
    *,
    games: Sequence[str] | None = None,
    epochs: int | None = None,
    smoke: bool = False,
    progress: bool = False,
    fit_options: Mapping[str, Any] | None = None,
) -> ZooConfig:
    """The zoo's configuration with the command line's choices (unknown game names get a did-you-mean).

    Args:
        games: Zoo games by name, and the paper's ``E1``, ``E2``, ``E3`` (:mod:`~diml_inverse.experiments.zoo.paper`);
            default every zoo game.
        epochs: Override the fit's epochs.
        smoke: Tiny sizes and 2 epochs.
        progress: Progress bars of the fits.
        fit_options: :class:`~diml_inverse.config.FitConfig` fields to change (an alternative estimator, e.g.
            ``{"model": "neural"}``: the default before the recovery study).

    Raises:
        ConfigurationError: an unknown game, an ``epochs`` that is not an integer >= 1, or fit options that
            :class:`~diml_inverse.config.FitConfig` refuses.
    """
    from diml_inverse.config import fit_config
    from diml_inverse.experiments.zoo.paper import PAPER_GAMES

    for name in games or ():
        if name not in PAPER_GAMES:
            try:
                zoo_game(name)
            except ConfigurationError as error:
                raise ConfigurationError(f"{error} (or one of the paper's games: {', '.join(PAPER_GAMES)})") from None
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigurationError(f"epochs must be an integer >= 1; got {epochs!r}")
    config = ZooConfig(smoke=smoke)
    training = dataclasses.replace(fit_config(config.training, dict(fit_options or {})), progress=progress)
    if smoke:
        training = dataclasses.replace(training, epochs=2)
        config = dataclasses.replace(config, diff_samples=400)
    if epochs is not None:
        training = dataclasses.replace(training, epochs=epochs)
    config = dataclasses.replace(config, training=training)
    return dataclasses.replace(config, games=tuple(games)) if games else config


def record_zoo_game(
    game: ZooGame, run_seed: int, n_episodes: int, n_rounds: int, prefix: str
) -> tuple[Mechanism, TraceDataset]:
    """The truth of ``run_seed`` and ``n_episodes`` recorded with the game's learner (data seed from ``prefix``)."""
    env = make(game.env_id, n_rounds=n_rounds, mechanism_seed=run_seed)
    traces = rollout(env, game.learner, n_episodes, n_rounds, seed=derive_seed(run_seed, f"{prefix}/data"))
    return env.mechanism, traces


def run_zoo_game(config: ZooConfig, name: str, run_seed: int) -> dict[str, Any]:
    """Record, fit and score one zoo game (or one of the paper's) at one run seed; its row of ``results.csv``."""
    from diml_inverse.experiments.zoo.paper import PAPER_GAMES, run_paper_game

    if name in PAPER_GAMES:
        return run_paper_game(config, name, run_seed)
    register_zoo()
    game = zoo_game(name)
    prefix = f"zoo/{name}"
    n_episodes, n_rounds = config.sizes(game)
    started = time.perf_counter()
    truth, traces = record_zoo_game(game, run_seed, n_episodes, n_rounds, prefix)
    record_seconds = time.perf_counter() - started
    train, test = traces.split(config.train_fraction)
    row, result = fit_and_score(config, game, run_seed, truth, train, test, prefix, "fit")
    return {
        **row,
        "n_agents": game.n_agents,
        "n_actions": game.n_actions,
        "scale": game.scale,
        "uniform_nll": uniform_nll(game.n_actions),
        "epoch": result.selected_epoch,
        "record_seconds": record_seconds,
    }


def fit_and_score(
    config: ZooConfig,
    game: ZooGame,
    run_seed: int,
    truth: Mechanism,
    train: TraceDataset,
    test: TraceDataset,
    prefix: str,
    fit_key: str,
) -> tuple[dict[str, Any], FitResult]:
    """Fit ``train`` with the zoo's options (seed from ``prefix/fit_key``) and score it on ``test``: the row's
    ``game``, ``kind``, ``seed``, :func:`~diml_inverse.experiments.zoo.scoring.score_fit`'s columns,
    ``fit_seconds`` and ``model``; and the fit."""
    started = time.perf_counter()
    result = fit(game.env_id, train, config=config.training, seed=derive_seed(run_seed, f"{prefix}/{fit_key}"))
    seconds = time.perf_counter() - started
    evaluation_seed = derive_seed(run_seed, f"{prefix}/evaluation")
    scores = score_fit(truth, result, test, game.learner, config.diff_samples, evaluation_seed)
    row = {"game": game.name, "kind": game.kind, "seed": run_seed, **scores}
    return {**row, "fit_seconds": seconds, "model": result.model_name}, result


def game_file(out: Path, seed: int, name: str) -> Path:
    """``OUT/zoo/seed<s>/<game>.csv``."""
    return Path(out) / "zoo" / f"seed{seed}" / f"{name}.csv"


def run_zoo(
    config: ZooConfig,
    seeds: Sequence[int],
    out: str | Path,
    *,
    progress: bool = True,
    sweep: SweepOptions | None = None,
) -> dict[int, float]:
    """Run every game of ``config`` at every run seed, writing ``OUT/zoo/seed<s>/<game>.csv`` as each finishes.

    Each (seed, game) is one task of a sweep (:func:`diml_inverse.sweep.run_tasks`, on the engine that ``sweep``
    names); the results do not depend on the engine or the number of workers.

    Returns:
        Seconds per run seed: the sum of its games' task seconds (its wall time when run sequentially).

    Raises:
        ConfigurationError: no seeds, or a seed that is not a non-negative integer.
        SweepError: some games failed (the others' files are written; the message has every traceback).
    """
    if not seeds:
        raise ConfigurationError("run_zoo needs at least one seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigurationError(f"a run seed must be a non-negative integer; got {seed!r}")
    keys = [(seed, name) for seed in seeds for name in config.games]
    tasks = [Task(f"seed{seed}/{name}", run_zoo_game, (config, name, seed)) for seed, name in keys]

    def write(index: int, outcome: TaskOutcome) -> None:
        if outcome.ok:
            seed, name = keys[index]
            write_rows(game_file(Path(out), seed, name), [outcome.result])

    options = sweep or SweepOptions()
    outcomes = options.run(tasks, Path(out) / "zoo" / SWEEP_DIRECTORY, write, "zoo games", progress)
    walls: dict[int, float] = dict.fromkeys(seeds, 0.0)
    for (seed, _), outcome in zip(keys, outcomes, strict=True):
        walls[seed] += outcome.seconds
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
        "| game | kind | N × A | scale | model | " + " | ".join(TABLE_COLUMNS) + " |",
        "|---|---|---|---:|---|" + "---:|" * len(TABLE_COLUMNS),
    ]
    mean_ratios: dict[str, float] = {}
    for name, group in grouped.items():
        first = group[0]
        cells = [_mean_sd([float(row[column]) for row in group]) for column in TABLE_COLUMNS]
        size = f"{int(first['n_agents'])} × {int(first['n_actions'])}"
        models = ", ".join(sorted({str(row.get("model") or "—") for row in group}))
        head = f"| {name} | {first['kind']} | {size} | {float(first['scale']):g} | {models} | "
        lines.append(head + " | ".join(cells) + " |")
        ratios = [float(row["ratio"]) for row in group if math.isfinite(float(row["ratio"]))]
        if ratios and first["kind"] != "paper":  # the paper's games are not in the zoo's summary
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
    ordered = [{column: row.get(column, "") for column in RESULT_COLUMNS} for row in ordered]
    paths = {
        "results": write_rows(root / RESULTS_FILE, ordered),
        "markdown": root / TABLE_FILE,
        "figure": plot_zoo(ordered, root / FIGURE_FILE),
    }
    paths["markdown"].write_text(markdown_table(ordered))
    return paths
