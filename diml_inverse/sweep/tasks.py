"""What a sweep runs: a picklable :class:`Task` (a function and its arguments), and the fit-shaped :class:`FitTask`.

A task is executed by :func:`execute` on whichever engine runs it (in this process, a pool process or a Ray
worker): it sets torch's thread count, calls the function, and returns a :class:`TaskOutcome` with the result
or the traceback. Nothing in a task depends on where or when it runs: every seed is one of its arguments.

Large arguments shared by many tasks (a trace dataset resampled by a bootstrap) are wrapped in :class:`Shared`:
the Ray engine puts each :class:`Shared` object into the object store once, and every task that carries it gets
a reference; the local engines pass the value itself.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import torch

from diml_inverse.config import FitConfig
from diml_inverse.fit import fit
from diml_inverse.result import FitResult
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner
from mechgym.registration import make
from mechgym.rollout import rollout
from mechgym.traces import TraceDataset

__all__ = [
    "FitTask",
    "Shared",
    "SharedSlot",
    "Task",
    "TaskOutcome",
    "TraceRecipe",
    "execute",
    "fit_episodes",
    "run_fit_task",
]

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Shared(Generic[T]):
    """A task argument that many tasks share (e.g. one trace dataset): sent to Ray's object store once.

    Sharing is by identity: wrap a value once and pass the same :class:`Shared` to every task that needs it.
    The task's function receives ``value`` itself, never the wrapper.
    """

    value: T


@dataclass(frozen=True)
class SharedSlot:
    """Where the ``index``-th shared value goes back in a task's arguments (the Ray engine's placeholder)."""

    index: int


@dataclass(frozen=True)
class Task:
    """One unit of a sweep: ``function(*args, **kwargs)``, picklable, identified by ``name``.

    Attributes:
        name: Unique within a sweep; the key under which its outcome is stored (``resume`` skips stored names).
        function: A module-level function (pickled by reference: Ray workers and pool processes import it).
        args: Positional arguments; any of them may be a :class:`Shared`.
        kwargs: Keyword arguments; any value may be a :class:`Shared`.
        spec: What a failure report shows to say which task failed (default: the function and ``name``).
    """

    name: str
    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    spec: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"a task's name must be a non-empty string; got {self.name!r}")
        if not callable(self.function):
            raise ConfigurationError(f"task {self.name!r}: function must be callable; got {self.function!r}")

    def describe(self) -> str:
        """The spec shown in failure reports."""
        function = f"{getattr(self.function, '__module__', '?')}.{getattr(self.function, '__qualname__', '?')}"
        return self.spec or f"{self.name}: {function}"

    def shared(self) -> list[Shared[Any]]:
        """The distinct :class:`Shared` arguments, in order of first appearance."""
        found: dict[int, Shared[Any]] = {}
        for value in (*self.args, *self.kwargs.values()):
            if isinstance(value, Shared):
                found.setdefault(id(value), value)
        return list(found.values())

    def with_slots(self, index_of: Mapping[int, int]) -> Task:
        """This task with every :class:`Shared` replaced by a :class:`SharedSlot` (``index_of``: id -> index)."""

        def slot(value: Any) -> Any:
            return SharedSlot(index_of[id(value)]) if isinstance(value, Shared) else value

        return replace(self, args=tuple(map(slot, self.args)), kwargs={k: slot(v) for k, v in self.kwargs.items()})


@dataclass(frozen=True)
class TaskOutcome:
    """What one task produced.

    Attributes:
        name: The task's name.
        result: What its function returned; ``None`` when it failed.
        error: The traceback text when it failed (its spec first); ``None`` when it succeeded.
        seconds: Wall-clock seconds of the function (in the worker).
        resumed: Whether the outcome was read from the sweep's ``out_dir`` rather than computed.
    """

    name: str
    result: Any
    error: str | None
    seconds: float
    resumed: bool = False

    @property
    def ok(self) -> bool:
        """Whether the task succeeded."""
        return self.error is None


def _unwrap(value: Any, shared_values: tuple[Any, ...]) -> Any:
    if isinstance(value, Shared):
        return value.value
    if isinstance(value, SharedSlot):
        return shared_values[value.index]
    return value


def execute(task: Task, threads: int | None, *shared_values: Any) -> TaskOutcome:
    """Run ``task`` here on ``threads`` torch threads (``None``: leave them); failures become the outcome.

    Args:
        task: The task; its :class:`SharedSlot` arguments are filled from ``shared_values``.
        threads: Torch CPU threads during the task (restored afterwards), so that results never depend on the
            engine or the machine's core count.
        *shared_values: The values of the task's shared arguments, by slot index.

    Returns:
        The :class:`TaskOutcome`; an exception raised by the function is caught and reported as its ``error``.
    """
    previous = torch.get_num_threads()
    started = time.perf_counter()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        args = tuple(_unwrap(value, shared_values) for value in task.args)
        kwargs = {key: _unwrap(value, shared_values) for key, value in task.kwargs.items()}
        result = task.function(*args, **kwargs)
    except Exception:
        text = f"task {task.describe()} failed:\n{traceback.format_exc()}"
        return TaskOutcome(task.name, None, text, time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return TaskOutcome(task.name, result, None, time.perf_counter() - started)


# -- the fit-shaped front ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TraceRecipe:
    """How to record the traces of a fit inside its task: ``rollout(make(env_id, **env_kwargs), learner, ...)``.

    Attributes:
        env_id: A registered id.
        n_episodes: Episodes ``E``.
        n_rounds: Rounds ``T`` (``None``: the game's).
        seed: Seed of the action draws.
        learner: The learners' rule (``None``: the game's default learner).
        env_kwargs: Arguments of :func:`mechgym.make` (e.g. ``mechanism_seed``).
    """

    env_id: str
    n_episodes: int
    n_rounds: int | None = None
    seed: int = 0
    learner: Learner | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> TraceDataset:
        """Record the traces (the same ones for the same recipe, wherever it runs)."""
        env = make(self.env_id, **dict(self.env_kwargs))
        return rollout(env, self.learner, self.n_episodes, self.n_rounds, seed=self.seed)


@dataclass(frozen=True)
class FitTask:
    """One :func:`diml_inverse.fit` of a sweep.

    Attributes:
        name: Unique within a sweep; the resume key.
        env_id: The game (a registered id): the fit reads its sizes and family from it, never its truth.
        traces: The traces, or a :class:`TraceRecipe` that records them inside the task. Tasks that carry the same
            :class:`~mechgym.traces.TraceDataset` object share one copy in Ray's object store.
        config: Every fit option; ``config.seed`` is the fit's seed (derive it from the task, e.g. with
            :func:`~diml_inverse.metrics.derive_seed`, never from the order tasks run in).
        episodes: Fit on these episodes of ``traces``, in this order, repetitions allowed (a bootstrap
            resample); ``None``: all of them.
        learner: The assumed learner (``None``: the one recorded in the traces).
    """

    name: str
    env_id: str
    traces: TraceDataset | TraceRecipe
    config: FitConfig = field(default_factory=lambda: FitConfig(progress=False))
    episodes: tuple[int, ...] | None = None
    learner: Learner | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.traces, TraceDataset | TraceRecipe):
            raise ConfigurationError(
                f"FitTask {self.name!r}: traces must be a TraceDataset or a TraceRecipe; got {type(self.traces)!r}"
            )
        if not isinstance(self.config, FitConfig):
            raise ConfigurationError(f"FitTask {self.name!r}: config must be a FitConfig; got {type(self.config)!r}")


def fit_episodes(
    env_id: str,
    traces: TraceDataset | TraceRecipe,
    config: FitConfig,
    episodes: tuple[int, ...] | None = None,
    learner: Learner | None = None,
) -> FitResult:
    """Record or take the traces, select the episodes (in order, repetitions allowed) and fit them.

    The function behind every :class:`FitTask`: its traces arrive as a separate argument, so that many tasks can
    share one copy.

    Returns:
        The :class:`~diml_inverse.result.FitResult`.

    Raises:
        ConfigurationError: an episode index outside the traces.
    """
    dataset = traces.record() if isinstance(traces, TraceRecipe) else traces
    if episodes is not None:
        bad = [index for index in episodes if not 0 <= index < dataset.n_episodes]
        if bad:
            raise ConfigurationError(
                f"episode indices must be in [0, {dataset.n_episodes}) for these traces; got {bad[:5]}"
            )
        dataset = dataset.episodes(list(episodes))  # a copy
    elif not dataset.actions.flags.writeable:  # Ray's zero-copy arrays are read-only, which torch warns about
        dataset = dataset.episodes(list(range(dataset.n_episodes)))
    return fit(env_id, dataset, learner=learner, config=config)


def run_fit_task(task: FitTask) -> FitResult:
    """Run one :class:`FitTask` here (what every engine does with it)."""
    return fit_episodes(task.env_id, task.traces, task.config, task.episodes, task.learner)
