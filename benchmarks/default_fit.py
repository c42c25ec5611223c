"""The default fit against the one before the recovery study, alternating in one process (issue 12's time budget).

For each zoo game: record the zoo's traces at seed 0 (or the paper's E1-E3 as their experiments do), then fit
them ``--repeats`` times each way, alternating, with the old default (``model="neural"`` for small games,
``"anonymous"`` for anonymous ones: Adam, 100 epochs) and the new one (``model="auto"``: the prior search by
L-BFGS). Prints the minimum and median seconds of each and their ratio; the ratio is what carries over to another
machine.

    python benchmarks/default_fit.py                                  # three small zoo games, 2 repeats
    python benchmarks/default_fit.py --games ElFarol --repeats 3
    python benchmarks/default_fit.py --games E1 E2 E3                 # the paper's games (their data, run seed 0)
    python benchmarks/default_fit.py --quick                          # tiny sizes
    python benchmarks/default_fit.py --new-options '{"prior_selection": "evidence", "valid_fraction": 0}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from _common import describe_machine

import diml_inverse
from diml_inverse.experiments.configs import PUBLISHED
from diml_inverse.experiments.runner import record_data, run_seeds
from diml_inverse.experiments.zoo import register_zoo, zoo_game
from diml_inverse.experiments.zoo.paper import PAPER_GAMES
from diml_inverse.metrics import derive_seed
from mechgym.registration import make
from mechgym.rollout import rollout
from mechgym.traces import TraceDataset


def recorded(name: str, quick: bool) -> tuple[str, TraceDataset, str]:
    """``(env_id, training traces, kind)`` of zoo game ``name`` at seed 0, or of the paper's ``E1``-``E3`` (their
    experiments' data at run seed 0, ``kind`` small)."""
    if name in PAPER_GAMES:
        experiment = PUBLISHED[PAPER_GAMES[name]]
        game = experiment.games[0]
        if quick:
            game = dataclasses.replace(game, n_episodes=10, n_rounds=10)
        _, train, _ = record_data(experiment, game, run_seeds(experiment, game, 0), torch.device("cpu"))
        return game.env_id, train, "small"
    zoo = zoo_game(name)
    n_episodes, n_rounds = (8, 10) if quick else (zoo.n_episodes, zoo.n_rounds)
    env = make(zoo.env_id, n_rounds=n_rounds, mechanism_seed=0)
    traces = rollout(env, zoo.learner, n_episodes, n_rounds, seed=derive_seed(0, f"zoo/{name}/data"))
    return zoo.env_id, traces.split(0.8)[0], zoo.kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["Polymatrix", "RandomNormalForm", "ThresholdParticipation"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="8 episodes x 10 rounds, 2 epochs, one game, 1 repeat")
    parser.add_argument(
        "--new-options", type=json.loads, default={}, help="fit options of the new fit, as a JSON object"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_zoo()
    games, repeats = (args.games[:1], 1) if args.quick else (args.games, args.repeats)
    print(describe_machine(torch.device("cpu")))
    print(f"new fit's options: {args.new_options or 'the defaults'}")
    print("| game | old default, min / median s | new default, min / median s | new / old (min) |")
    print("|---|---:|---:|---:|")
    for name in games:
        env_id, train, kind = recorded(name, args.quick)
        old = {"model": "neural" if kind == "small" else "anonymous"}
        options = {"progress": False, "seed": 1, **({"epochs": 2} if args.quick else {})}
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(repeats):
            for label, extra in (("old", old), ("new", args.new_options)):
                started = time.perf_counter()
                diml_inverse.fit(env_id, train, **options, **extra)  # type: ignore[arg-type]
                times[label].append(time.perf_counter() - started)
        cells = [f"{min(times[k]):.1f} / {statistics.median(times[k]):.1f}" for k in ("old", "new")]
        print(f"| {name} | {cells[0]} | {cells[1]} | {min(times['new']) / min(times['old']):.1f}× |")


if __name__ == "__main__":
    main()
