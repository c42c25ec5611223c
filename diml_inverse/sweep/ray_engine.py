"""The Ray engine: each task a Ray task, shared values put into the object store once, dead workers retried.

Ray is the optional ``.[ray]`` extra, imported only here and only when the engine runs.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from diml_inverse.sweep.tasks import Shared, Task, TaskOutcome, execute

__all__ = ["import_ray", "run_ray"]

logger = logging.getLogger(__name__)


def import_ray() -> ModuleType:
    """``import ray``, or an ImportError that says how to install it.

    Raises:
        ImportError: Ray is not installed.
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "engine='ray' needs Ray: pip install '.[ray]' (or pip install 'ray[default]>=2.60'); "
            "engine='local' runs without it"
        ) from error
    return ray


def _start(ray: ModuleType, address: str | None, workers: int | None, threads: int) -> bool:
    """Initialise Ray unless this process already did; returns whether it was started here."""
    if ray.is_initialized():
        if address is not None:
            logger.info("Ray is already initialised in this process; address=%r is not used", address)
        return False
    options: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address is None:  # a fresh instance of this machine, sized for the sweep (never a cluster found by chance)
        cpus = (workers or os.cpu_count() or 1) * threads
        ray.init(address="local", num_cpus=cpus, **options)
    else:
        ray.init(address=address, **options)
    return True


def run_ray(
    tasks: Sequence[Task],
    indices: Sequence[int],
    finished: Callable[[int, TaskOutcome], None],
    workers: int | None,
    address: str | None,
    threads: int | None,
    max_retries: int,
) -> None:
    """Run ``tasks`` (the sweep's tasks ``indices``) as Ray tasks; call ``finished(index, outcome)`` as each ends.

    Args:
        tasks: The tasks to run.
        indices: Their positions in the sweep.
        finished: Called in this process with each outcome, in completion order.
        workers: The most tasks in flight (``None``: all are submitted; Ray runs as many as there are CPUs).
        address: The cluster to join (``None``: a new local instance with ``workers x threads`` CPUs).
        threads: Torch threads and CPUs per task (``None``: 1 CPU, torch's own thread count).
        max_retries: Reruns of a task whose worker process died.

    Raises:
        ImportError: Ray is not installed.
    """
    if not tasks:
        return
    ray = import_ray()
    cpus = threads or 1
    started_here = _start(ray, address, workers, cpus)
    try:
        references: dict[int, Any] = {}
        for task in tasks:  # one object-store copy per shared value, however many tasks carry it
            for value in task.shared():
                if id(value) not in references:
                    references[id(value)] = ray.put(value.value)
        remote = ray.remote(execute).options(num_cpus=cpus, max_retries=max_retries, retry_exceptions=False)

        def submit(k: int) -> Any:
            own: list[Shared[Any]] = tasks[k].shared()
            runnable = tasks[k].with_slots({id(value): slot for slot, value in enumerate(own)})
            return remote.remote(runnable, threads, *(references[id(value)] for value in own))

        limit = workers or len(tasks)
        waiting = list(range(len(tasks)))
        in_flight: dict[Any, int] = {}
        while waiting or in_flight:
            while waiting and len(in_flight) < limit:
                k = waiting.pop(0)
                in_flight[submit(k)] = k
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for reference in done:
                k = in_flight.pop(reference)
                try:
                    outcome = ray.get(reference)
                except ray.exceptions.RayError:  # the worker died more than max_retries times
                    text = f"task {tasks[k].describe()} failed on Ray:\n{traceback.format_exc()}"
                    outcome = TaskOutcome(tasks[k].name, None, text, float("nan"))
                finished(indices[k], outcome)
    finally:
        if started_here:
            ray.shutdown()
