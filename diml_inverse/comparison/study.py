"""How often :func:`~diml_inverse.compare_learners` names the rule that generated the traces.

For each game of E1–E3 (the misspecification study's truths: ``mechanism_seed = s``), each learning-rule
generator of :data:`~diml_inverse.experiments.misspec.LEARNER_GENERATORS` (logit-Q, Hedge, bandit Q, smooth FP)
and each run seed ``s``, the generator records traces and :func:`compare_learners` compares all four rules as
candidates, each with its generating parameters (logit-Q's ``alpha`` and ``epsilon`` are learned). One row per
comparison records the winner, whether the win is significant against every other candidate, and the z of the
runner-up.

Command::

    python -m diml_inverse.comparison.study --seeds 0 1 2 --out runs/compare

writes ``OUT/rows.csv`` (one row per comparison, appended as each finishes) and prints the Markdown table of
:func:`summary_table`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diml_inverse.comparison.compare import compare_learners
from diml_inverse.experiments.misspec import GAMES, LEARNER_GENERATORS
from diml_inverse.metrics import derive_seed
from mechgym.errors import ConfigurationError, suggest
from mechgym.registration import make
from mechgym.rollout import rollout

__all__ = ["StudyConfig", "main", "run_comparison", "summary_table"]


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs (defaults: the command documented in docs/results.md)."""

    games: tuple[str, ...] = tuple(GAMES)
    """Games by experiment name (``"e1"``, ``"e2"``, ``"e3"``)."""
    generators: tuple[str, ...] = tuple(LEARNER_GENERATORS)
    """Generating rules; every one of :data:`LEARNER_GENERATORS` is a candidate."""
    n_episodes: int = 60
    """Episodes recorded per comparison (the games' published 60 rounds each)."""
    folds: int = 3
    """Cross-validation folds."""
    fit_options: Mapping[str, Any] = field(
        default_factory=lambda: {"epochs": 100, "batch_size": 16, "device": "cpu", "model": "neural"}
    )
    """Options of every fit (the neural model: the auditor knows nothing of the game)."""


def run_comparison(config: StudyConfig, game_name: str, generator: str, seed: int) -> dict[str, Any]:
    """Record ``generator``'s traces on ``game_name``'s truth ``seed`` and compare every rule on them.

    Returns:
        The study's row: the winner, whether it is the generator, whether the win is decisive, the runner-up's
        name and z, and each candidate's NLL difference to the best.
    """
    game = GAMES[game_name]
    env = make(game.env_id, **game.make_kwargs(seed))
    data_seed = derive_seed(seed, f"compare-study/{game_name}/{generator}/data")
    traces = rollout(env, LEARNER_GENERATORS[generator], config.n_episodes, game.n_rounds, seed=data_seed)
    started = time.perf_counter()
    comparison = compare_learners(
        game.env_id, traces, LEARNER_GENERATORS, progress=False, folds=config.folds, seed=seed, **config.fit_options
    )
    runner_up = comparison.scores[1]
    return {
        "game": game_name,
        "generator": generator,
        "seed": seed,
        "best": comparison.best,
        "true_wins": int(comparison.best == generator),
        "decisive": int(comparison.decisive),
        "runner_up": runner_up.name,
        "runner_up_diff": runner_up.diff_to_best,
        "runner_up_z": runner_up.z,
        **{f"diff_{name}": comparison[name].diff_to_best for name in LEARNER_GENERATORS},  # fixed column order
        "seconds": time.perf_counter() - started,
    }


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per game and generator: how often the generator won, how often decisively, how often another rule won
    decisively (a confident wrong answer), the winners by seed and the runner-up's median z."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(str(row["game"]), str(row["generator"]))].append(row)
    lines = [
        "| game | generator | true rule wins | decisive wins | decisive wrong wins | winners | runner-up z (median) |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for (game, generator), group in sorted(groups.items()):
        wins = sum(int(row["true_wins"]) for row in group)
        decisive = sum(int(row["true_wins"]) and int(row["decisive"]) for row in group)
        wrong = sum((not int(row["true_wins"])) and int(row["decisive"]) for row in group)
        winners = ", ".join(str(row["best"]) for row in sorted(group, key=lambda r: int(r["seed"])))
        median = statistics.median(float(row["runner_up_z"]) for row in group)
        lines.append(
            f"| {game.upper()} | {generator} | {wins}/{len(group)} | {decisive}/{len(group)} | {wrong}/{len(group)} | "
            f"{winners} | "
            f"{median:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _append(path: Path, row: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _checked(names: Sequence[str] | None, known: Sequence[str], what: str) -> tuple[str, ...]:
    for name in names or ():
        if name not in known:
            raise ConfigurationError(suggest(name, known, what))
    return tuple(names) if names else tuple(known)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study from the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m diml_inverse.comparison.study", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (seed s: truth s)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (OUT/rows.csv)")
    parser.add_argument("--games", nargs="+", default=None, help="e1 e2 e3 (default: all)")
    parser.add_argument("--generators", nargs="+", default=None, help="generating rules (default: all four)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every fit (default 100)")
    args = parser.parse_args(argv)
    config = StudyConfig(
        games=_checked(args.games, tuple(GAMES), "game"),
        generators=_checked(args.generators, tuple(LEARNER_GENERATORS), "generator"),
    )
    if args.epochs is not None:
        config = StudyConfig(config.games, config.generators, fit_options={**config.fit_options, "epochs": args.epochs})
    path, rows = args.out / "rows.csv", []
    for seed in args.seeds:
        for game_name in config.games:
            for generator in config.generators:
                row = run_comparison(config, game_name, generator, seed)
                _append(path, row)
                rows.append(row)
                print(f"{game_name} {generator} seed {seed}: best {row['best']} ({row['seconds']:.0f} s)", flush=True)
    print(summary_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
