"""Recovery on games from OpenSpiel: the default :func:`diml_inverse.fit` on its 2 x 2 and 3 x 3 matrix games.

Each game is imported with :func:`mechgym.from_openspiel` (id ``openspiel/<name>-v0``; the truth is OpenSpiel's
payoff table, the same at every seed). Per game and run seed ``s``: logit-Q learners (E1's, alpha 0.25, beta 3,
epsilon 0.06) play 60 episodes x 60 rounds, the first 80 % of the episodes are fitted by the default fit and by
Tabular MLE fitted to convergence (``model="tabular", optimizer="lbfgs"``), and both are scored on the rest
beside the zero mechanism. The data, fit and evaluation seeds are derived from ``s`` and the game's name
(:func:`~diml_inverse.metrics.derive_seed`).

Columns of ``results.csv``: ``game``, ``seed``, ``model`` (``default`` or ``tabular``), ``n_actions``,
``diff_mse``, ``zero_diff_mse``, ``ratio = diff_mse / zero_diff_mse``, ``fit_nll``, ``truth_nll``,
``oracle_gap = fit_nll - truth_nll`` (held-out NLL per agent-round), ``fit_seconds``.

Command line (needs the ``.[openspiel]`` extra)::

    python -m diml_inverse.experiments.openspiel_games --seeds 0 1 2 --out runs/openspiel --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diml_inverse.config import FitConfig
from diml_inverse.experiments.configs import E1_E3_LEARNER
from diml_inverse.experiments.runner import write_rows
from diml_inverse.experiments.zoo.scoring import score_fit
from diml_inverse.fit import fit
from diml_inverse.metrics import derive_seed
from mechgym.errors import ConfigurationError
from mechgym.interop import from_openspiel
from mechgym.registration import make
from mechgym.rollout import rollout
from mechgym.validation import check_seed

__all__ = ["OPENSPIEL_GAMES", "markdown_table", "run_openspiel_game", "run_openspiel_games"]

#: The games, by OpenSpiel name: prisoner's dilemma, stag hunt, rock-paper-scissors, matching pennies,
#: battle of the sexes, pure coordination.
OPENSPIEL_GAMES: tuple[str, ...] = (
    "matrix_pd",
    "matrix_sh",
    "matrix_rps",
    "matrix_mp",
    "matrix_bos",
    "matrix_coordination",
)
#: The fits of every game and seed, by label: the options of :func:`diml_inverse.fit` besides the defaults.
#: ``tabular`` is Tabular MLE (the game's own family) fitted to convergence by full-batch L-BFGS: what the data
#: pin down, the reference for the default fit (with the default Adam budget Tabular MLE stays far from it).
MODELS: dict[str, dict[str, Any]] = {"default": {}, "tabular": {"model": "tabular", "optimizer": "lbfgs"}}
TABLE_COLUMNS = ("diff_mse", "zero_diff_mse", "ratio", "oracle_gap", "fit_seconds")


def run_openspiel_game(
    name: str,
    run_seed: int,
    *,
    n_episodes: int = 60,
    n_rounds: int = 60,
    epochs: int | None = None,
    diff_samples: int = 20_000,
) -> list[dict[str, Any]]:
    """Record one OpenSpiel game at one run seed, fit it with each of :data:`MODELS` and score the fits.

    Returns:
        One row of ``results.csv`` per model.

    Raises:
        ImportError: OpenSpiel is not installed.
        ConfigurationError: an unknown game or a bad seed.
    """
    check_seed(run_seed, "run_seed")
    env_id = from_openspiel(name)
    env = make(env_id, n_rounds=n_rounds)
    prefix = f"openspiel/{name}"
    traces = rollout(env, E1_E3_LEARNER, n_episodes, n_rounds, seed=derive_seed(run_seed, f"{prefix}/data"))
    train, test = traces.split(0.8)
    truth = env.mechanism
    evaluation_seed = derive_seed(run_seed, f"{prefix}/evaluation")
    rows = []
    for label, model_options in MODELS.items():
        sizes: dict[str, Any] = {} if epochs is None else {"epochs": epochs}
        config = FitConfig(progress=False, **sizes, **model_options)
        started = time.perf_counter()
        result = fit(env_id, train, config=config, seed=derive_seed(run_seed, f"{prefix}/fit/{label}"))
        seconds = time.perf_counter() - started
        rows.append(
            {
                "game": name,
                "seed": run_seed,
                "model": label,
                "n_actions": truth.n_actions,
                **score_fit(truth, result, test, E1_E3_LEARNER, diff_samples, evaluation_seed),
                "fit_seconds": seconds,
            }
        )
    return rows


def run_openspiel_games(
    games: Sequence[str], seeds: Sequence[int], out: str | Path, *, progress: bool = True, **options: Any
) -> Path:
    """Run :func:`run_openspiel_game` for every game and seed; writes ``OUT/openspiel/results.csv`` and ``table.md``.

    Args:
        games: OpenSpiel names.
        seeds: Run seeds.
        out: Output directory.
        progress: Show a progress bar.
        **options: Passed to :func:`run_openspiel_game` (``n_episodes``, ``n_rounds``, ``epochs``, ``diff_samples``).

    Returns:
        The path of ``table.md``.
    """
    if not games or not seeds:
        raise ConfigurationError("run_openspiel_games needs at least one game and one seed")
    rows: list[dict[str, Any]] = []
    for game, seed in tqdm([(g, s) for g in games for s in seeds], desc="openspiel", disable=not progress):
        rows += run_openspiel_game(game, seed, **options)
    directory = Path(out) / "openspiel"
    write_rows(directory / "results.csv", rows)
    table = directory / "table.md"
    table.write_text(markdown_table(rows), encoding="utf-8")
    return table


def _mean_sd(values: Sequence[float]) -> str:
    array = np.asarray(values, dtype=float)
    sd = f" ± {array.std(ddof=1):.2g}" if array.size > 1 else ""
    return f"{array.mean():.3g}{sd}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per game and model: mean ± sd over seeds of diff_mse, the zero mechanism's, their ratio, the oracle gap."""
    seeds = sorted({int(row["seed"]) for row in rows})
    lines = [
        f"Seeds {', '.join(map(str, seeds))}; mean ± sd over seeds. ratio = diff_mse / zero_diff_mse (lower is "
        "better, 1 is the zero mechanism); oracle_gap = fit_nll - truth_nll (held-out NLL per agent-round).",
        "",
        "| game | A | model | " + " | ".join(TABLE_COLUMNS) + " |",
        "|---|---:|---|" + "---:|" * len(TABLE_COLUMNS),
    ]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["game"]), str(row["model"])), []).append(row)
    for (game, model), group in groups.items():
        cells = [_mean_sd([float(row[column]) for row in group]) for column in TABLE_COLUMNS]
        lines.append(f"| {game} | {int(group[0]['n_actions'])} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diml_inverse.experiments.openspiel_games``: run the games and print the table."""
    parser = argparse.ArgumentParser(prog="python -m diml_inverse.experiments.openspiel_games", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output directory (OUT/openspiel/...)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds")
    parser.add_argument("--games", nargs="+", default=list(OPENSPIEL_GAMES), help="OpenSpiel game names")
    parser.add_argument("--epochs", type=int, default=None, help="override the default fit's epochs")
    parser.add_argument("--smoke", action="store_true", help="8 episodes x 10 rounds, 2 epochs: the pipeline only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options: dict[str, Any] = {"epochs": args.epochs}
    if args.smoke:
        options = {"n_episodes": 8, "n_rounds": 10, "epochs": 2, "diff_samples": 400}
    try:
        table = run_openspiel_games(args.games, args.seeds, args.out, progress=not args.quiet, **options)
    except (ImportError, ConfigurationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
