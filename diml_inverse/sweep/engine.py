"""``run_tasks`` and ``run_sweep``: run many independent tasks on one engine, results in order, failures captured.

Engines:

* ``"local"``: this machine, no Ray needed. ``workers`` of ``None`` or 1 runs the tasks one after another in
  this process; more starts a pool of that many processes (``spawn``: a fresh interpreter each).
* ``"ray"``: Ray tasks, on a local Ray instance that :func:`run_tasks` starts (and stops) or on an existing
  cluster (``address="auto"`` or ``"HOST:PORT"``; a Ray session already initialised in this process is used as
  it is). ``workers`` caps the tasks in flight; each task asks for ``threads_per_task`` CPUs.

Whatever the engine and the number of workers, each task runs on ``threads_per_task`` torch threads and takes
its seeds from its own arguments, so the results are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from diml_inverse.result import FitResult
from diml_inverse.sweep.local import run_local
from diml_inverse.sweep.store import OutcomeStore
from diml_inverse.sweep.tasks import FitTask, Shared, Task, TaskOutcome, TraceRecipe, fit_episodes
from mechgym.errors import ConfigurationError, suggest
from mechgym.traces import TraceDataset
from mechgym.validation import check_int

__all__ = ["ENGINES", "Engine", "OutcomeCallback", "failures_report", "fit_tasks", "run_sweep", "run_tasks"]

logger = logging.getLogger(__name__)

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")
#: ``callback(index, outcome)``: called in this process as each task finishes (or is read back by ``resume``).
OutcomeCallback = Callable[[int, TaskOutcome], None]


def _check_options(
    tasks: Sequence[Task], engine: str, workers: int | None, threads_per_task: int | None, max_retries: int
) -> None:
    if engine not in ENGINES:
        raise ConfigurationError(suggest(str(engine), ENGINES, "engine"))
    if workers is not None:
        check_int(workers, "workers", low=1)
    if threads_per_task is not None:
        check_int(threads_per_task, "threads_per_task", low=1)
    check_int(max_retries, "max_retries", low=0)
    names: set[str] = set()
    for task in tasks:
        if not isinstance(task, Task):
            raise ConfigurationError(f"run_tasks takes Task objects; got {type(task).__name__}")
        if task.name in names:
            raise ConfigurationError(
                f"task names must be unique within a sweep (they key resume); {task.name!r} repeats"
            )
        names.add(task.name)


def run_tasks(
    tasks: Sequence[Task],
    *,
    engine: Engine = "local",
    workers: int | None = None,
    address: str | None = None,
    threads_per_task: int | None = 1,
    progress: bool = True,
    out_dir: str | Path | None = None,
    resume: bool = False,
    max_retries: int = 3,
    on_outcome: OutcomeCallback | None = None,
    description: str = "sweep",
) -> list[TaskOutcome]:
    """Run independent tasks on an engine; one outcome per task, in the tasks' order.

    A task that raises does not stop the others: its outcome carries the traceback (see
    :func:`failures_report`). On Ray, a task whose worker dies (killed, out of memory) is retried up to
    ``max_retries`` times; a task that raises is not retried (it would raise again).

    Args:
        tasks: The tasks (unique names).
        engine: ``"local"`` or ``"ray"`` (the ``.[ray]`` extra).
        workers: Local: processes (``None`` or 1: this process, one task after another). Ray: the most tasks in
            flight at once (``None``: as many as the cluster's CPUs take).
        address: Ray only: the cluster to join (``"auto"``, ``"HOST:PORT"``); ``None`` starts a local instance.
        threads_per_task: Torch CPU threads inside each task (``None``: leave torch's setting; only the local
            sequential engine then matches itself). On Ray, also the CPUs each task reserves.
        progress: One progress bar over all tasks.
        out_dir: Where each finished task's outcome is written (atomically, with a checksum) as it completes.
        resume: Read the outcomes already in ``out_dir`` instead of running those tasks again.
        max_retries: Ray only: reruns of a task whose worker died.
        on_outcome: Called in this process with ``(index, outcome)`` as each task finishes or is read back.
        description: The progress bar's label.

    Returns:
        One :class:`TaskOutcome` per task, in order.

    Raises:
        ConfigurationError: an unknown engine, bad counts, repeated names, ``resume`` without ``out_dir``, or an
            ``address`` for the local engine.
        ImportError: ``engine="ray"`` without Ray installed (``pip install '.[ray]'``).
    """
    _check_options(tasks, engine, workers, threads_per_task, max_retries)
    if resume and out_dir is None:
        raise ConfigurationError("resume=True needs the out_dir the earlier run wrote its outcomes to")
    if address is not None and engine != "ray":
        raise ConfigurationError(f"address={address!r} is for engine='ray'; the local engine runs on this machine")
    store = OutcomeStore(Path(out_dir)) if out_dir is not None else None
    outcomes: list[TaskOutcome | None] = [None] * len(tasks)
    failed = 0
    bar = tqdm(total=len(tasks), desc=description, unit="task", disable=not progress)

    def finished(index: int, outcome: TaskOutcome) -> None:
        nonlocal failed
        outcomes[index] = outcome
        failed += not outcome.ok
        if store is not None and outcome.ok and not outcome.resumed:
            store.write(tasks[index], outcome)
        if not outcome.ok:
            logger.warning("task %s failed: %s", outcome.name, str(outcome.error).strip().splitlines()[-1])
        bar.update(1)
        bar.set_postfix(failed=failed)
        if on_outcome is not None:
            on_outcome(index, outcome)

    try:
        pending = []
        for index, task in enumerate(tasks):
            stored = store.read(task) if store is not None and resume else None
            if stored is not None:
                finished(index, stored)
            else:
                pending.append(index)
        todo = [tasks[index] for index in pending]
        if engine == "ray":
            from diml_inverse.sweep.ray_engine import run_ray

            run_ray(todo, pending, finished, workers, address, threads_per_task, max_retries)
        else:
            run_local(todo, pending, finished, workers, threads_per_task)
    finally:
        bar.close()
    return [outcome for outcome in outcomes if outcome is not None]


def failures_report(outcomes: Sequence[TaskOutcome]) -> str:
    """The failed tasks' specs and tracebacks, one after another (empty when every task succeeded)."""
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if not failed:
        return ""
    header = f"{len(failed)} of {len(outcomes)} tasks failed:"
    return "\n\n".join([header, *(str(outcome.error) for outcome in failed)])


def fit_tasks(tasks: Sequence[FitTask]) -> list[Task]:
    """The general tasks of fit tasks: each dataset becomes one :class:`Shared` (one object-store copy)."""
    shared: dict[int, Shared[TraceDataset | TraceRecipe]] = {}
    general = []
    for task in tasks:
        if not isinstance(task, FitTask):
            raise ConfigurationError(f"run_sweep takes FitTask objects; got {type(task).__name__}")
        traces = shared.setdefault(id(task.traces), Shared(task.traces))
        spec = f"{task.name}: fit {task.env_id} (episodes {task.episodes or 'all'}, config {task.config!r})"
        arguments = (task.env_id, traces, task.config, task.episodes, task.learner)
        general.append(Task(task.name, fit_episodes, arguments, spec=spec))
    return general


def run_sweep(
    tasks: Sequence[FitTask],
    *,
    engine: Engine = "local",
    workers: int | None = None,
    address: str | None = None,
    threads_per_task: int = 1,
    progress: bool = True,
    out_dir: Path | None = None,
    resume: bool = False,
    max_retries: int = 3,
    on_outcome: OutcomeCallback | None = None,
) -> list[TaskOutcome]:
    """Run fit tasks on an engine; one :class:`TaskOutcome` per task, in order (``result``: a ``FitResult``).

    The traces of tasks that share one :class:`~mechgym.traces.TraceDataset` object travel once (on Ray: one
    ``ray.put``); each task carries its episode indices. See :func:`run_tasks` for the arguments.

    >>> outcomes = run_sweep([FitTask("a", env_id, traces, FitConfig(epochs=5, seed=1))])  # doctest: +SKIP

    Returns:
        The outcomes, in the tasks' order; a failed fit has ``result=None`` and its traceback in ``error``.

    Raises:
        ConfigurationError: see :func:`run_tasks`; also a task that is not a :class:`FitTask`.
    """
    outcomes = run_tasks(
        fit_tasks(tasks),
        engine=engine,
        workers=workers,
        address=address,
        threads_per_task=threads_per_task,
        progress=progress,
        out_dir=out_dir,
        resume=resume,
        max_retries=max_retries,
        on_outcome=on_outcome,
        description="fits",
    )
    for outcome in outcomes:
        if outcome.ok and not isinstance(outcome.result, FitResult):  # pragma: no cover - internal invariant
            raise TypeError(f"task {outcome.name} returned {type(outcome.result).__name__}, not a FitResult")
    return outcomes
