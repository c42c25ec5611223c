"""The local engine: tasks one after another in this process, or on a pool of ``spawn`` processes.

The pool sends each shared value to each worker process once (as the pool's initialiser argument); the tasks
carry slots into it, as on Ray.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from diml_inverse.sweep.tasks import Shared, Task, TaskOutcome, execute

__all__ = ["run_local", "slotted"]

_SHARED_VALUES: tuple[Any, ...] = ()


def slotted(tasks: Sequence[Task]) -> tuple[list[Task], list[Shared[Any]]]:
    """The tasks with their :class:`Shared` arguments replaced by slots, and the distinct shared values in order."""
    index_of: dict[int, int] = {}
    shared: list[Shared[Any]] = []
    for task in tasks:
        for value in task.shared():
            if id(value) not in index_of:
                index_of[id(value)] = len(shared)
                shared.append(value)
    return [task.with_slots(index_of) for task in tasks], shared


def _install(values: tuple[Any, ...]) -> None:
    """Pool initialiser: keep the shared values in this worker process, and end it if the sweep's process ends."""
    global _SHARED_VALUES
    _SHARED_VALUES = values
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True, name="sweep-parent-watch").start()


def _exit_with(sentinel: int) -> None:
    """Wait for the sweep's process to end (killed, say, so that the pool never shut down), then end this worker
    at once: an orphaned worker would go on computing a task whose outcome no one can receive."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _execute_in_pool(task: Task, threads: int | None) -> TaskOutcome:
    return execute(task, threads, *_SHARED_VALUES)


def run_local(
    tasks: Sequence[Task],
    indices: Sequence[int],
    finished: Callable[[int, TaskOutcome], None],
    workers: int | None,
    threads: int | None,
) -> None:
    """Run ``tasks`` (the sweep's tasks ``indices``) here; call ``finished(index, outcome)`` as each completes.

    Args:
        tasks: The tasks to run.
        indices: Their positions in the sweep (what ``finished`` receives).
        finished: Called in this process with each outcome, in completion order.
        workers: ``None`` or 1: this process, in order; more: a pool of that many ``spawn`` processes.
        threads: Torch threads per task (``None``: leave them).
    """
    if not tasks:
        return
    if workers is None or workers == 1:
        for index, task in zip(indices, tasks, strict=True):
            finished(index, execute(task, threads))
        return
    runnable, shared = slotted(tasks)
    context = multiprocessing.get_context("spawn")
    values = tuple(item.value for item in shared)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_install, initargs=(values,)) as pool:
        futures: dict[Future[TaskOutcome], int] = {
            pool.submit(_execute_in_pool, task, threads): k for k, task in enumerate(runnable)
        }
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=futures.__getitem__):
                k = futures[future]
                try:
                    outcome = future.result()
                except Exception:  # the worker process died (BrokenProcessPool) or the outcome did not unpickle
                    text = f"task {tasks[k].describe()} failed in its worker process:\n{traceback.format_exc()}"
                    outcome = TaskOutcome(tasks[k].name, None, text, float("nan"))
                finished(indices[k], outcome)
