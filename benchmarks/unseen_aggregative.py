"""Recovery on two aggregative games that are not in the zoo: a Cournot market and a Tullock contest.

Both payoffs depend on one's own action and the *total* of the others' actions, as the zoo's threshold public good
does, but smoothly: Cournot's price is linear in the total quantity (so the payoff is additive in the counts), the
contest's share of the prize is ``e_i / (1 + total)``. Written here as ordinary third-party mechanisms (registered
through ``mechgym.register``, ids ``unseen/...-v0``), recorded and scored exactly as the zoo does (its sizes, its
learner, ``score_fit``), each fitted with every ``--models`` entry (``auto`` is the default fit)::

    python benchmarks/unseen_aggregative.py --models additive_counts aggregate_counts auto --threads 1

Prints one row per game, seed and model: ``ratio = diff_mse / zero_diff_mse``, the oracle gap, the family kept and
the fit's seconds. ``--quick`` runs the zoo's smoke sizes (seed 0, 2 epochs, the aggregate model unless ``--models``
says) as a check that the script works.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import Tensor

from diml_inverse.experiments.zoo.catalog import ZooGame
from diml_inverse.experiments.zoo.runner import fit_and_score, record_zoo_game, zoo_config
from mechgym import register, registered_ids
from mechgym.mechanisms import AnonymousMechanism


class CournotMechanism(AnonymousMechanism):
    """Quantity ``q = a / (A - 1)``; price ``2 - 1.5 Q / N`` in the total quantity ``Q`` (oneself included); unit
    cost ``c ~ U(0.3, 0.7)``: ``u_i = 3 q_i (price - c)``."""

    family = "unseen_cournot"

    def __init__(self, n_agents: int = 30, n_actions: int = 5, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions)
        self.cost = float(0.3 + 0.4 * torch.rand((), generator=torch.Generator().manual_seed(int(seed or 0))))

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        quantity = torch.arange(self.n_actions, dtype=other_counts.dtype, device=other_counts.device)
        quantity = quantity / (self.n_actions - 1)
        total = (other_counts * quantity).sum(-1) + quantity[actions]
        return 3.0 * quantity[actions] * (2.0 - 1.5 * total / self.n_agents - self.cost)


class ContestMechanism(AnonymousMechanism):
    """Effort ``e = a``; a prize ``V ~ U(8, 16)`` shared in proportion to effort, ``V e_i / (1 + total effort)``,
    at cost ``0.15 e_i``."""

    family = "unseen_contest"

    def __init__(self, n_agents: int = 30, n_actions: int = 4, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions)
        self.prize = float(8.0 + 8.0 * torch.rand((), generator=torch.Generator().manual_seed(int(seed or 0))))

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        effort = torch.arange(self.n_actions, dtype=other_counts.dtype, device=other_counts.device)
        total = (other_counts * effort).sum(-1) + effort[actions]
        return self.prize * effort[actions] / (1.0 + total) - 0.15 * effort[actions]


class UnseenGame(ZooGame):
    """A game recorded and scored as the zoo's are, under the ``unseen/`` namespace."""

    @property
    def env_id(self) -> str:
        return f"unseen/{self.name}-v0"


GAMES = (
    UnseenGame("Cournot", CournotMechanism, "anonymous", 30, 5),
    UnseenGame("Contest", ContestMechanism, "anonymous", 30, 4),
)


def run(models: list[str], seeds: list[int], quick: bool) -> list[dict[str, Any]]:
    """One row per game, seed and model."""
    rows = []
    for game in GAMES:
        if game.env_id not in registered_ids():
            factory = game.factory()
            register(game.env_id, factory, factory.spec_kwargs())
        for seed in seeds:
            config = zoo_config(smoke=quick)
            n_episodes, n_rounds = config.sizes(game)
            truth, traces = record_zoo_game(game, seed, n_episodes, n_rounds, f"unseen/{game.name}")
            train, test = traces.split(config.train_fraction)
            for model in models:
                options = {} if model == "auto" else {"model": model}
                config = zoo_config(smoke=quick, fit_options=options)
                row, _ = fit_and_score(config, game, seed, truth, train, test, f"unseen/{game.name}", "fit")
                rows.append({**row, "asked": model})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=None, help="fit models (default: additive_counts aggregate_counts auto)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="the zoo's smoke sizes, seed 0: a check, no figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = args.models or (["aggregate_counts"] if args.quick else ["additive_counts", "aggregate_counts", "auto"])
    rows = run(models, [0] if args.quick else args.seeds, args.quick)
    print("| game | seed | asked | kept | ratio | oracle gap | fit s |")
    print("|---|---:|---|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['game']} | {row['seed']} | {row['asked']} | {row['model']} | {row['ratio']:.3g} | "
            f"{row['oracle_gap']:.4f} | {row['fit_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
