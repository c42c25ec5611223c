"""The paper's experiments E1–E4 (§6): configurations, runner, tables and figures.

Every epoch is evaluated with :class:`diml_inverse.metrics.Evaluator` (the truth's share of the work done once).

Run them from the command line::

    python -m diml_inverse.experiments run e1 --seeds 0 1 2 --out runs/experiments
    python -m diml_inverse.experiments run all --smoke --out /tmp/smoke
    python -m diml_inverse.experiments report runs/experiments --figures-dir docs/figures

or from Python::

    from diml_inverse.experiments import build_report, experiment_config, run_experiment
    run_experiment(experiment_config("e3"), seeds=[0], out="runs/experiments")
    build_report("runs/experiments", "e3")
"""

from diml_inverse.experiments.configs import (
    EXPERIMENT_NAMES,
    PUBLISHED,
    EvaluationConfig,
    ExperimentConfig,
    GameConfig,
    MethodConfig,
    experiment_config,
)
from diml_inverse.experiments.report import build_report
from diml_inverse.experiments.runner import RunSeeds, run_experiment, run_game, run_seeds

__all__ = [
    "EXPERIMENT_NAMES",
    "PUBLISHED",
    "EvaluationConfig",
    "ExperimentConfig",
    "GameConfig",
    "MethodConfig",
    "RunSeeds",
    "build_report",
    "experiment_config",
    "run_experiment",
    "run_game",
    "run_seeds",
]
