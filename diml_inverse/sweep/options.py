"""How a study runs its tasks: :class:`SweepOptions` (engine, workers, threads, resume), shared by the experiments.

The experiments (``run``, ``misspec``, ``zoo``) take one :class:`SweepOptions`, which the command line builds from
``--engine``, ``--address``, ``--workers``, ``--threads`` and ``--resume``; each study keeps its finished tasks
under ``OUT/<study>/`` :data:`SWEEP_DIRECTORY` so that ``--resume`` can skip them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from diml_inverse.sweep.engine import ENGINES, Engine, OutcomeCallback, failures_report, run_tasks
from diml_inverse.sweep.tasks import Task, TaskOutcome
from mechgym.errors import ConfigurationError, MechGymError, suggest
from mechgym.validation import check_int

__all__ = ["SWEEP_DIRECTORY", "SweepError", "SweepOptions"]

#: The directory, under a study's output directory, that holds its finished tasks (see ``resume``).
SWEEP_DIRECTORY = "tasks"


class SweepError(MechGymError):
    """Some tasks of a sweep failed; the others finished. ``outcomes`` has every task's outcome, in order."""

    def __init__(self, message: str, outcomes: Sequence[TaskOutcome]) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


@dataclass(frozen=True)
class SweepOptions:
    """Where and how a study's tasks run (see :func:`~diml_inverse.sweep.run_tasks`).

    Attributes:
        engine: ``"local"`` (this machine; no Ray) or ``"ray"``.
        workers: Local: processes (``None`` or 1: this process). Ray: the most tasks in flight.
        address: Ray: the cluster to join (``"auto"``, ``"HOST:PORT"``); ``None`` starts a local instance.
        threads_per_task: Torch threads of each task (the results depend on it, never on the engine).
        resume: Skip the tasks whose outcomes an earlier run of the same study wrote.
        max_retries: Ray: reruns of a task whose worker died.
    """

    engine: Engine = "local"
    workers: int | None = None
    address: str | None = None
    threads_per_task: int = 1
    resume: bool = False
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigurationError(suggest(str(self.engine), ENGINES, "engine"))
        if self.workers is not None:
            check_int(self.workers, "workers", low=1)
        check_int(self.threads_per_task, "threads_per_task", low=1)
        if self.address is not None and self.engine != "ray":
            raise ConfigurationError(f"--address {self.address} joins a Ray cluster; add --engine ray")

    def run(
        self,
        tasks: Sequence[Task],
        out_dir: Path,
        on_outcome: OutcomeCallback | None,
        description: str,
        progress: bool,
    ) -> list[TaskOutcome]:
        """Run ``tasks`` keeping their outcomes in ``out_dir``; every task finishes before a failure is raised.

        Returns:
            The outcomes, in order (all successful).

        Raises:
            SweepError: some tasks failed; its message lists each one's spec and traceback.
        """
        outcomes = run_tasks(
            tasks,
            engine=self.engine,
            workers=self.workers,
            address=self.address,
            threads_per_task=self.threads_per_task,
            progress=progress,
            out_dir=out_dir,
            resume=self.resume,
            max_retries=self.max_retries,
            on_outcome=on_outcome,
            description=description,
        )
        report = failures_report(outcomes)
        if report:
            raise SweepError(report + "\n\nthe other tasks' results are written; rerun with --resume", outcomes)
        return outcomes
