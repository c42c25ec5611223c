"""How much data an audit needs: recovery on zoo games against the number of training episodes.

``python -m diml_inverse.experiments zoo --episodes 24 48 96 192 384 960 ...`` records, per game and run seed,
``max(episodes)`` training episodes plus a fixed test set (the zoo's: 12 episodes for small games, 6 for anonymous
ones, recorded after the training episodes from the same stream), fits the first ``E`` training episodes for
every ``E`` and scores every fit on the same test episodes. ``data_needs.csv`` has one row per (game, seed, E);
``data_needs.png`` plots ``diff_mse / zero`` against ``E`` on log-log axes with the least-squares slope per game
(the exponent ``k`` of ``ratio ~ E**k``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diml_inverse.experiments.runner import write_rows
from diml_inverse.experiments.zoo.catalog import ZOO_GAMES, register_zoo, zoo_game
from mechgym.errors import ConfigurationError
from mechgym.validation import check_int

if TYPE_CHECKING:
    from diml_inverse.experiments.zoo.runner import ZooConfig
    from diml_inverse.sweep import SweepOptions

__all__ = ["DATA_NEEDS_COLUMNS", "build_data_needs_report", "data_needs_exponents", "data_needs_row", "run_data_needs"]

DATA_NEEDS_FILE, DATA_NEEDS_FIGURE = "data_needs.csv", "data_needs.png"
#: Columns of ``data_needs.csv``.
DATA_NEEDS_COLUMNS: tuple[str, ...] = (
    *("game", "kind", "seed", "n_train_episodes", "diff_mse", "zero_diff_mse", "ratio"),
    *("fit_nll", "truth_nll", "oracle_gap", "fit_seconds", "model"),
)


def _test_episodes(kind: str) -> int:
    return 12 if kind == "small" else 6


def run_data_needs_game(config: ZooConfig, name: str, run_seed: int, episodes: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of one game at one run seed: one fit per training size in ``episodes``."""
    return [data_needs_row(config, name, run_seed, n_train, max(episodes)) for n_train in sorted(episodes)]


def data_needs_row(config: ZooConfig, name: str, run_seed: int, n_train: int, n_largest: int) -> dict[str, Any]:
    """One fit of the study: the first ``n_train`` of ``n_largest`` recorded training episodes, scored on the test
    episodes recorded after them (the same for every size: the recording depends on ``n_largest`` only)."""
    from diml_inverse.experiments.zoo.runner import fit_and_score, record_zoo_game

    register_zoo()
    game = zoo_game(name)
    n_test = _test_episodes(game.kind)
    n_rounds = 8 if config.smoke else game.n_rounds
    prefix = f"zoo/{name}/data_needs"
    truth, traces = record_zoo_game(game, run_seed, n_largest + n_test, n_rounds, prefix)
    test = traces.episodes(slice(n_largest, n_largest + n_test))
    train = traces.episodes(slice(0, n_train))
    row, _ = fit_and_score(config, game, run_seed, truth, train, test, prefix, f"fit/{n_train}")
    return {**row, "n_train_episodes": n_train}


def run_data_needs(
    config: ZooConfig,
    seeds: Sequence[int],
    episodes: Sequence[int],
    out: str | Path,
    *,
    progress: bool = True,
    sweep: SweepOptions | None = None,
) -> dict[str, Path]:
    """Run the data-needs study for every game of ``config``, seed and size; write the CSV, the table and the figure.

    Each (seed, game, size) is one task of a sweep (:func:`diml_inverse.sweep.run_tasks`, on the engine ``sweep``
    names; the results do not depend on it), written to ``OUT/zoo/data_needs/seed<s>/<game>.E<size>.csv`` as it
    finishes; ``sweep.resume`` skips the finished ones.

    Raises:
        ConfigurationError: no seeds or sizes, a size below 2 (a fit needs a validation episode), or a bad seed.
        SweepError: some fits failed (the others' files are written; the message has every traceback).
    """
    from diml_inverse.sweep import SWEEP_DIRECTORY, SweepOptions, Task

    if not seeds or not episodes:
        raise ConfigurationError("the data-needs study needs at least one seed and one number of episodes")
    sizes = sorted({check_int(e, "a number of training episodes", low=2) for e in episodes})
    for seed in seeds:
        check_int(seed, "a run seed", low=0)
    root = Path(out) / "zoo" / "data_needs"
    keys = [(seed, name, size) for seed in seeds for name in config.games for size in sizes]
    tasks = [
        Task(f"seed{seed}/{name}/E{size}", data_needs_row, (config, name, seed, size, sizes[-1]))
        for seed, name, size in keys
    ]

    def write(index: int, outcome: Any) -> None:
        if outcome.ok:
            seed, name, size = keys[index]
            write_rows(root / f"seed{seed}" / f"{name}.E{size}.csv", [outcome.result])

    (sweep or SweepOptions()).run(tasks, root / SWEEP_DIRECTORY, write, "data-needs fits", progress)
    return build_data_needs_report(out)


def data_needs_exponents(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per game: the least-squares slope of log(ratio) on log(episodes) over every seed's rows, and the mean ratio
    at the largest size."""
    exponents: dict[str, tuple[float, float]] = {}
    for name in dict.fromkeys(str(row["game"]) for row in rows):
        group = [r for r in rows if r["game"] == name and float(r["ratio"]) > 0 and math.isfinite(float(r["ratio"]))]
        sizes = np.array([float(r["n_train_episodes"]) for r in group])
        if len(set(sizes.tolist())) < 2:
            continue
        slope = float(np.polyfit(np.log(sizes), np.log([float(r["ratio"]) for r in group]), 1)[0])
        largest = [float(r["ratio"]) for r in group if float(r["n_train_episodes"]) == sizes.max()]
        exponents[name] = (slope, float(np.mean(largest)))
    return exponents


def build_data_needs_report(out: str | Path) -> dict[str, Path]:
    """Merge ``OUT/zoo/data_needs/seed*/*.csv`` into ``data_needs.csv``, ``data_needs.md`` and ``data_needs.png``.

    Raises:
        ConfigurationError: there are no results.
    """
    from diml_inverse.experiments.report import read_rows

    root = Path(out) / "zoo" / "data_needs"
    rows = [row for path in sorted(root.glob("seed*/*.csv")) for row in read_rows(path)]
    if not rows:
        raise ConfigurationError(f"no data-needs results under {root}; run the zoo with --episodes first")
    order = {game.name: k for k, game in enumerate(ZOO_GAMES)}
    rows.sort(key=lambda r: (order.get(str(r["game"]), len(order)), int(r["seed"]), int(r["n_train_episodes"])))
    paths = {
        "results": write_rows(root / DATA_NEEDS_FILE, [{c: r.get(c, "") for c in DATA_NEEDS_COLUMNS} for r in rows])
    }
    sizes = sorted({int(r["n_train_episodes"]) for r in rows})
    lines = [
        "ratio = diff_mse / zero_diff_mse, mean over seeds, by training episodes; "
        "k: slope of log ratio on log episodes.",
        "",
        "| game | " + " | ".join(f"E={e}" for e in sizes) + " | k |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    exponents = data_needs_exponents(rows)
    for name in dict.fromkeys(str(r["game"]) for r in rows):
        cells = []
        for size in sizes:
            values = [float(r["ratio"]) for r in rows if r["game"] == name and int(r["n_train_episodes"]) == size]
            cells.append(f"{np.mean(values):.3g}" if values else "—")
        slope = f"{exponents[name][0]:.2f}" if name in exponents else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {slope} |")
    paths["markdown"] = root / "data_needs.md"
    paths["markdown"].write_text("\n".join(lines) + "\n")
    paths["figure"] = _plot(rows, exponents, root / DATA_NEEDS_FIGURE)
    return paths


def _plot(rows: Sequence[Mapping[str, Any]], exponents: Mapping[str, tuple[float, float]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.6), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for name in dict.fromkeys(str(r["game"]) for r in rows):
        sizes = sorted({int(r["n_train_episodes"]) for r in rows if r["game"] == name})
        means = [
            np.mean([float(r["ratio"]) for r in rows if r["game"] == name and int(r["n_train_episodes"]) == e])
            for e in sizes
        ]
        label = f"{name} (k={exponents[name][0]:.2f})" if name in exponents else name
        axis.plot(sizes, means, marker="o", markersize=3, linewidth=1.2, label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("training episodes")
    axis.set_ylabel("diff_mse / zero baseline")
    models = ", ".join(sorted({str(row.get("model", "")) for row in rows} - {""})) or "unknown"
    axis.set_title(f"How much data an audit needs (models fitted: {models}; mean over seeds)", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
