"""How many CPU threads torch uses for a piece of work: one for small problems and on a loaded machine.

Torch's intra-op threads are OpenMP threads that spin while they wait for work. When the operations are
small (the games of E1-E3: tensors of tens of thousands of elements) a second thread cannot pay for its
start-up, and when other processes hold the cores a spinning thread waits for a core that is busy: on the
project's 2-core machine under a load average of 11-15, a 5-epoch E1 fit took 128-180 s with 2 threads and
6.5-9.5 s with one, and one E4 n40 likelihood step 4.6-7.5 s against 0.66-0.80 s (docs/benchmarks.md).

The policy (:func:`resolve_threads` with ``"auto"``): one thread when the largest activation of a step holds
fewer than :data:`SMALL_WORK_ELEMENTS` floats; otherwise as many as there are idle cores (the cores this
process may run on, less the 1-minute load average of the others), at least one and at most torch's
current setting. ``MECHGYM_THREADS`` (an integer, or ``auto``) overrides it where no ``threads`` is given;
:func:`torch_threads` applies the choice for the duration of a block and then restores torch's setting.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Literal

import torch

from mechgym.errors import ConfigurationError

__all__ = [
    "SMALL_WORK_ELEMENTS",
    "THREADS_ENV",
    "Threads",
    "idle_cores",
    "parse_threads",
    "resolve_threads",
    "threads_setting",
    "torch_threads",
]

#: ``threads`` options: a count, ``"auto"`` (the policy above) or ``None`` (``MECHGYM_THREADS``, else ``"auto"``).
Threads = int | Literal["auto"] | None

#: Steps whose largest activation holds fewer floats than this run on one thread under ``"auto"``.
SMALL_WORK_ELEMENTS = 1 << 20

#: The environment variable read when no ``threads`` is given.
THREADS_ENV = "MECHGYM_THREADS"


def idle_cores() -> float:
    """Cores this process may use less the others' 1-minute load average (this process counts as one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return float(cores)
    return cores - max(0.0, load - 1.0)


def _check_threads(threads: object, source: str) -> int | Literal["auto"]:
    if threads == "auto":
        return "auto"
    if isinstance(threads, str) and threads.strip().isdigit():
        threads = int(threads)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigurationError(
            f"{source} must be a positive integer or 'auto'; got {threads!r}. "
            "Use 1 on a shared machine, 'auto' to let mechgym choose."
        )
    return threads


def parse_threads(text: str) -> int | Literal["auto"]:
    """``--threads`` of the command lines: a positive integer or ``auto``.

    Raises:
        ConfigurationError: anything else.
    """
    return _check_threads(text.strip(), "--threads")


@contextlib.contextmanager
def threads_setting(threads: int | Literal["auto"] | None) -> Iterator[None]:
    """Within the block, calls that take ``threads=None`` (``diml_inverse.fit``, ``mechgym.rollout``) use ``threads``.

    It sets ``MECHGYM_THREADS`` for the block and restores it afterwards; ``None`` changes nothing. Wrap a fit
    in ``threads_setting(2)`` to use two threads on an idle 2-core machine whatever the size of the problem.

    Raises:
        ConfigurationError: ``threads`` is neither ``None``, a positive integer nor ``"auto"``.
    """
    if threads is None:
        yield
        return
    value = str(_check_threads(threads, "threads"))
    previous = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = previous


def resolve_threads(threads: Threads, work_elements: int) -> int:
    """The torch thread count for a step whose largest activation holds ``work_elements`` floats.

    Args:
        threads: A positive count (used as given), ``"auto"`` (the module's policy) or ``None``
            (``MECHGYM_THREADS`` if set, else ``"auto"``).
        work_elements: Float elements of the step's largest activation (e.g.
            ``diml_inverse.models.activation_elements``).

    Returns:
        A thread count, at least 1.

    Raises:
        ConfigurationError: ``threads`` (or ``MECHGYM_THREADS``) is neither a positive integer nor ``"auto"``.
    """
    if threads is None:
        setting = os.environ.get(THREADS_ENV, "").strip()
        choice = _check_threads(setting, f"the environment variable {THREADS_ENV}") if setting else "auto"
    else:
        choice = _check_threads(threads, "threads")
    if choice != "auto":
        return choice
    if work_elements < SMALL_WORK_ELEMENTS:
        return 1
    return max(1, min(torch.get_num_threads(), math.floor(idle_cores() + 0.5)))


@contextlib.contextmanager
def torch_threads(threads: Threads, work_elements: int) -> Iterator[int]:
    """Run the block with :func:`resolve_threads`'s count of torch threads, then restore the previous count.

    Args:
        threads: As in :func:`resolve_threads`.
        work_elements: As in :func:`resolve_threads`.

    Yields:
        The thread count in effect.

    Raises:
        ConfigurationError: a bad ``threads`` (before the block runs).
    """
    previous = torch.get_num_threads()
    chosen = resolve_threads(threads, work_elements)
    if chosen != previous:
        torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
