"""The paper's games E1–E3 scored like zoo games: the data of the experiments, any fit options, the zoo's row.

``python -m diml_inverse.experiments zoo --games E1 E2 E3`` fits the zoo's estimator (the default fit unless
``--fit-options`` says otherwise) to exactly the traces ``run e1|e2|e3`` records at the same run seed (the
experiments' :func:`~diml_inverse.experiments.runner.run_seeds` and
:func:`~diml_inverse.experiments.runner.record_data`), so its ``diff_mse`` compares with the experiment tables of
docs/results.md. They are kept out of the zoo's median and worst ratio (they are not games nobody tuned for).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import torch

from diml_inverse.experiments.configs import PUBLISHED
from diml_inverse.experiments.runner import record_data, run_seeds
from diml_inverse.experiments.zoo.scoring import score_fit
from diml_inverse.fit import fit
from diml_inverse.metrics import uniform_nll

if TYPE_CHECKING:
    from diml_inverse.experiments.zoo.runner import ZooConfig

__all__ = ["PAPER_GAMES", "run_paper_game"]

#: The paper's games the zoo can score, by name (``--games E1``): the experiment each comes from.
PAPER_GAMES: dict[str, str] = {"E1": "e1", "E2": "e2", "E3": "e3"}


def run_paper_game(config: ZooConfig, name: str, run_seed: int) -> dict[str, Any]:
    """Record E1, E2 or E3's data at ``run_seed`` as the experiments do, fit with ``config.training``, score.

    Returns:
        A row of the zoo's ``results.csv`` (``kind="paper"``).
    """
    experiment = PUBLISHED[PAPER_GAMES[name]]
    game = experiment.games[0]
    if config.smoke:
        game = dataclasses.replace(game, n_episodes=5, n_rounds=8)
    seeds = run_seeds(experiment, game, run_seed)
    started = time.perf_counter()
    truth, train, test = record_data(experiment, game, seeds, torch.device("cpu"))
    record_seconds = time.perf_counter() - started
    fit_started = time.perf_counter()
    result = fit(game.env_id, train, config=config.training, seed=seeds.fit)
    fit_seconds = time.perf_counter() - fit_started
    return {
        "game": name,
        "kind": "paper",
        "seed": run_seed,
        "n_agents": game.n_agents,
        "n_actions": game.n_actions,
        "scale": 1.0,
        **score_fit(truth, result, test, experiment.learner, config.diff_samples, seeds.evaluation),
        "uniform_nll": uniform_nll(game.n_actions),
        "epoch": result.selected_epoch,
        "record_seconds": record_seconds,
        "fit_seconds": fit_seconds,
        "model": result.model_name,
    }
