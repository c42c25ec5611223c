"""Merge the run seeds of an experiment into curves, tables (CSV + Markdown), timings and a figure.

``build_report(OUT, "e1")`` reads every ``OUT/e1/seed*/<game>/`` written by
:func:`~diml_inverse.experiments.runner.run_experiment` (seeds may come from separate runs) and writes
``OUT/e1/curves.csv``, ``final.csv``, ``timing.csv``, ``final.md`` and ``e1.png``.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diml_inverse.experiments.configs import PUBLISHED
from diml_inverse.experiments.plots import plot_curves
from diml_inverse.experiments.runner import CONFIG_FILE, CURVES_FILE, FINAL_FILE, TIMING_FILE, write_rows
from diml_inverse.metrics import format_metrics_table
from mechgym.errors import ConfigurationError

#: diff_mse at the end of training of the published script (reference-facts: its final values on a 2-core
#: CPU for E1–E3 and the E4 curve ends of its figure), by (experiment, game, method).
PUBLISHED_DIFF_MSE: dict[tuple[str, str, str], float] = {
    ("e1", "E1", "DIML"): 0.0099,
    ("e1", "E1", "Tabular MLE"): 0.0133,
    ("e1", "E1", "DIML-Wrong"): 0.047,
    ("e2", "E2", "StructMLE"): 0.0016,
    ("e2", "E2", "DIML"): 0.129,
    ("e2", "E2", "Tabular MLE"): 0.180,
    ("e3", "E3", "StructMLE"): 5e-5,
    ("e3", "E3", "DIML"): 0.018,
    ("e3", "E3", "DIML-Wrong"): 0.092,
    ("e4", "n40", "DIML"): 2.5e-4,
    ("e4", "n80", "DIML"): 6.9e-5,
    ("e4", "n120", "DIML"): 3.4e-5,
    ("e4", "n200", "DIML"): 4.6e-5,
    ("e4", "n300", "DIML"): 4.3e-5,
}

_TEXT_COLUMNS = frozenset({"experiment", "game", "method", "checkpoint"})


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read a CSV written by :func:`write_rows`: text columns stay strings, the rest become numbers."""
    rows = []
    with Path(path).open(newline="") as stream:
        for raw in csv.DictReader(stream):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if key in _TEXT_COLUMNS or value == "":
                    row[key] = value
                elif key in ("seed", "epoch"):
                    row[key] = int(value)
                else:
                    try:
                        row[key] = float(value)
                    except ValueError:  # a text column of another table (e.g. the misspecification study's)
                        row[key] = value
            rows.append(row)
    return rows


def _game_order(path: Path) -> tuple[int, str]:
    return int(path.parent.parent.name[4:] or 0), path.parent.name


def collect(directory: str | Path, file_name: str, games: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``file_name`` from every ``seed*/<game>/`` under ``directory``, by seed then game.

    Args:
        directory: ``OUT/<experiment>``.
        file_name: ``"curves.csv"``, ``"final.csv"`` or ``"timing.csv"``.
        games: Order of the games (the configuration's); others follow alphabetically.
    """
    rank = {label: index for index, label in enumerate(games or [])}
    paths = sorted(
        Path(directory).glob(f"seed*/*/{file_name}"),
        key=lambda p: (_game_order(p)[0], rank.get(p.parent.name, len(rank)), p.parent.name),
    )
    return [row for path in paths for row in read_rows(path)]


def _mean_spread(values: Sequence[float], digits: int = 3) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return ""
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {float(np.std(values, ddof=1)):.2g}"


def summarise(final: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (game, method): mean ± standard deviation over seeds of the final metrics."""
    groups: dict[tuple[str, str, str], dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in final:
        groups[(row["experiment"], row["game"], row["method"])][row["checkpoint"]].append(row)
    table = []
    for (experiment, game, method), by_checkpoint in groups.items():
        best, last = by_checkpoint.get("best", []), by_checkpoint.get("last", [])
        published = PUBLISHED_DIFF_MSE.get((experiment, game, method))
        table.append(
            {
                "game": game,
                "method": method,
                "seeds": len(last or best),
                "diff_mse (last)": _mean_spread([r["diff_mse"] for r in last]),
                "diff_mse (best valid)": _mean_spread([r["diff_mse"] for r in best]),
                "published (last)": "" if published is None else f"{published:.2g}",
                "zero baseline": _mean_spread([r["zero_diff_mse"] for r in last or best], 2),
                "best epoch": _mean_spread([float(r["epoch"]) for r in best], 2),
                "cfkl (last)": _mean_spread([r["cfkl_params"] for r in last]),
                "cfkl (best valid)": _mean_spread([r["cfkl_params"] for r in best]),
                "noise floor": _mean_spread([r["cfkl_noise_floor"] for r in last or best], 2),
                **(
                    {
                        "index-sum KL (last)": _mean_spread([r["cfkl_index_sum"] for r in last]),
                        "index-sum floor": _mean_spread([r["cfkl_index_sum_noise_floor"] for r in last or best], 2),
                    }
                    if isinstance((last or best)[0].get("cfkl_index_sum"), float)
                    else {}
                ),
                "test NLL (best)": _mean_spread([r["test_nll"] for r in best], 4),
                "truth NLL": _mean_spread([r["truth_test_nll"] for r in last or best], 4),
            }
        )
    return table


def timing_summary(timing: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Seconds per (game, method), mean over seeds: fit, per-epoch evaluation, final evaluation, total."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in timing:
        groups[(row["game"], row["method"])].append(row)
    per_seed: dict[Any, float] = defaultdict(float)
    per_seed_cpu: dict[Any, float] = defaultdict(float)
    for row in timing:
        if row["method"] == "(all)":
            per_seed[row["seed"]] += row["total_seconds"]
            per_seed_cpu[row["seed"]] += row.get("cpu_seconds") or 0.0
    for seed, seconds in per_seed.items():
        groups[("(all games)", "(all)")].append(
            {"seed": seed, "total_seconds": seconds, "cpu_seconds": per_seed_cpu[seed]}
        )
    table = []
    for (game, method), rows in groups.items():
        entry: dict[str, Any] = {"game": game, "method": method, "seeds": len(rows)}
        for column in (
            "fit_seconds",
            "epoch_eval_seconds",
            "epoch_cfkl_seconds",
            "final_eval_seconds",
            "total_seconds",
            "cpu_seconds",
        ):
            values = [r[column] for r in rows if isinstance(r.get(column), float)]
            entry[column] = float(np.mean(values)) if values else None
        table.append(entry)
    return table


def markdown(
    name: str,
    title: str,
    final: Sequence[Mapping[str, Any]],
    timing: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any] | None,
) -> str:
    """The Markdown report of one experiment: summary over seeds, every seed, timings."""
    lines = [f"# {title}", ""]
    if config is not None:
        training, evaluation = config["training"], config["evaluation"]
        lines += [
            f"{training['epochs']} epochs, batch {training['batch_size']}, validation fraction "
            f"{training['valid_fraction']} of the training episodes; diff_mse on up to {evaluation['diff_samples']} "
            f"test contexts; cfkl_params {evaluation['cf_episodes']}x{evaluation['cf_rounds']} every "
            f"{evaluation['cf_every']} epoch(s), {evaluation['final_cf_episodes']}x{evaluation['final_cf_rounds']} "
            f"at the end.{' SMOKE configuration: numbers are meaningless.' if config.get('smoke') else ''}",
            "",
        ]
    lines += ["## Final metrics (mean ± sd over seeds)", "", format_metrics_table(summarise(final)), ""]
    per_seed = [
        {
            key: row[key]
            for key in (
                "game",
                "method",
                "seed",
                "checkpoint",
                "epoch",
                "diff_mse",
                "zero_diff_mse",
                "cfkl_params",
                "cfkl_noise_floor",
                "valid_nll",
                "test_nll",
            )
        }
        for row in final
    ]
    lines += ["## Every seed", "", format_metrics_table(per_seed), ""]
    lines += [
        "## Wall time (seconds, mean over seeds)",
        "",
        format_metrics_table(timing_summary(timing), float_format=".3g"),
        "",
    ]
    return "\n".join(lines)


def build_report(out: str | Path, name: str, *, figures_dir: str | Path | None = None) -> dict[str, Path]:
    """Merge the seeds of experiment ``name`` under ``out`` into CSVs, ``final.md`` and ``<name>.png``.

    Args:
        out: The directory given to ``run`` (holding ``<name>/seed*/``).
        name: ``"e1"`` ... ``"e4"``.
        figures_dir: Also copy the figure there (e.g. ``docs/figures``).

    Returns:
        The paths written, by kind.

    Raises:
        ConfigurationError: no seed of ``name`` has been run under ``out``.
    """
    directory = Path(out) / name
    configs = [json.loads(path.read_text()) for path in sorted(directory.glob(f"seed*/*/{CONFIG_FILE}"))]
    published = [game.label for game in PUBLISHED[name].games] if name in PUBLISHED else []
    games = list(dict.fromkeys([*published, *(game["label"] for config in configs for game in config["games"])]))
    curves, final, timing = (collect(directory, f, games) for f in (CURVES_FILE, FINAL_FILE, TIMING_FILE))
    if not curves:
        raise ConfigurationError(
            f"no results of {name} under {directory}; run `python -m diml_inverse.experiments "
            f"run {name} --out {out}` first"
        )
    config = configs[0] if configs else None
    title = config["title"] if config else name
    paths = {
        "curves": write_rows(directory / CURVES_FILE, curves),
        "final": write_rows(directory / FINAL_FILE, final),
        "timing": write_rows(directory / TIMING_FILE, timing),
    }
    paths["markdown"] = directory / "final.md"
    paths["markdown"].write_text(markdown(name, title, final, timing, config))
    group = "game" if len({row["game"] for row in curves}) > 1 else "method"
    paths["figure"] = plot_curves(curves, directory / f"{name}.png", title=title, group=group)
    if figures_dir is not None:
        target = Path(figures_dir)
        target.mkdir(parents=True, exist_ok=True)
        paths["figure_copy"] = Path(shutil.copyfile(paths["figure"], target / f"{name}.png"))
    return paths
