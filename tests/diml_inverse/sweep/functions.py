"""Task functions of the sweep tests: module-level, so pool processes and Ray workers import them by name."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def square(x: int, marker_dir: str | None = None) -> dict[str, int]:
    """``x**2`` and the torch threads the task ran on; with ``marker_dir``, leaves a file per call there."""
    if marker_dir is not None:
        calls = Path(marker_dir) / f"call-{x}-{os.getpid()}-{len(list(Path(marker_dir).iterdir()))}"
        calls.touch()
    return {"x": x, "square": x * x, "threads": torch.get_num_threads()}


def fail_on(x: int, bad: int) -> int:
    """Raise for ``x == bad``; otherwise ``x``."""
    if x == bad:
        raise RuntimeError(f"task {x} refuses to run")
    return x


def shared_sum(values: list[int], offset: int) -> int:
    """The sum of a shared list plus the task's own offset."""
    return sum(values) + offset


def die_once_then(marker: str, function: Callable[..., Any], *args: Any) -> Any:
    """Kill this worker process outright on the first call (``marker`` does not exist yet), then run ``function``."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        os._exit(1)
    return function(*args)


def die(x: int) -> int:
    """Kill this worker process outright, every time."""
    os._exit(1)


def report_pid_then_sleep(path: str, seconds: float) -> None:
    """Append this process's id to ``path``, then sleep: a task still running when its sweep's process dies."""
    import time

    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")
    time.sleep(seconds)


def run_pool_then_die(path: str) -> None:
    """A sweep's process: two pool workers run :func:`report_pid_then_sleep`; once both have reported, this
    process is killed (SIGKILL: no shutdown of the pool runs)."""
    import signal
    import threading
    import time

    from diml_inverse.sweep.local import run_local
    from diml_inverse.sweep.tasks import Task

    def die_once_reported() -> None:
        while not (Path(path).exists() and len(Path(path).read_text().split()) >= 2):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=die_once_reported, daemon=True).start()
    tasks = [Task(f"sleep{k}", report_pid_then_sleep, (path, 600.0)) for k in range(2)]
    run_local(tasks, [0, 1], lambda index, outcome: None, workers=2, threads=None)
