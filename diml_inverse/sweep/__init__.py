"""Sweeps: many independent fits (or any picklable tasks) on this machine or a Ray cluster, results in order.

>>> tasks = [FitTask(f"seed{s}", env_id, traces, FitConfig(epochs=50, seed=s, progress=False)) for s in range(8)]
>>> outcomes = run_sweep(tasks, engine="ray", workers=2)  # doctest: +SKIP
>>> [outcome.result.selected_epoch for outcome in outcomes]  # doctest: +SKIP

Two layers:

* :func:`run_tasks` runs :class:`Task` objects (a module-level function and its arguments) on the ``"local"``
  engine (this process, or a pool of processes) or the ``"ray"`` engine (``pip install '.[ray]'``), one progress
  bar over all tasks, failures captured with their traceback, each finished task written to ``out_dir`` as it
  completes and skipped by ``resume=True``. The experiments (``python -m diml_inverse.experiments run|misspec|zoo
  --engine ray``) run through it.
* :func:`run_sweep` is its fit-shaped front: :class:`FitTask` (a game, traces or a :class:`TraceRecipe`, a
  :class:`~diml_inverse.config.FitConfig` whose ``seed`` is the fit's, optional episode indices) in,
  :class:`TaskOutcome` with a :class:`~diml_inverse.result.FitResult` out. Tasks sharing one trace dataset
  share one copy in Ray's object store.

Results are the same on every engine and worker count: seeds are the tasks' own, and each task runs on
``threads_per_task`` torch threads (one by default). See docs/sweeps.md.
"""

from diml_inverse.sweep.engine import ENGINES, Engine, OutcomeCallback, failures_report, fit_tasks, run_sweep, run_tasks
from diml_inverse.sweep.options import SWEEP_DIRECTORY, SweepError, SweepOptions
from diml_inverse.sweep.store import OutcomeStore
from diml_inverse.sweep.tasks import (
    FitTask,
    Shared,
    Task,
    TaskOutcome,
    TraceRecipe,
    execute,
    fit_episodes,
    run_fit_task,
)

__all__ = [
    "ENGINES",
    "SWEEP_DIRECTORY",
    "Engine",
    "FitTask",
    "OutcomeCallback",
    "OutcomeStore",
    "Shared",
    "SweepError",
    "SweepOptions",
    "Task",
    "TaskOutcome",
    "TraceRecipe",
    "execute",
    "failures_report",
    "fit_episodes",
    "fit_tasks",
    "run_fit_task",
    "run_sweep",
    "run_tasks",
]
