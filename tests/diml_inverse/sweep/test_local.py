"""diml_inverse.sweep on the local engine: order, failures, threads, resume, bad options, fit tasks."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mechgym
from diml_inverse import FitConfig
from diml_inverse.sweep import (
    FitTask,
    OutcomeStore,
    Shared,
    SweepError,
    SweepOptions,
    Task,
    TraceRecipe,
    failures_report,
    fit_tasks,
    run_sweep,
    run_tasks,
)
from mechgym.errors import ConfigurationError
from tests.diml_inverse.sweep.functions import fail_on, shared_sum, square

ENV = "mechgym/NeuralMechanism-v0"


def squares(n: int, marker_dir: Path | None = None) -> list[Task]:
    kwargs = {"marker_dir": str(marker_dir)} if marker_dir is not None else {}
    return [Task(f"square/{x}", square, (x,), kwargs) for x in range(n)]


def test_results_come_back_in_order_on_the_requested_threads() -> None:
    threads = torch.get_num_threads()
    outcomes = run_tasks(squares(4), threads_per_task=1, progress=False)
    assert [o.name for o in outcomes] == [f"square/{x}" for x in range(4)]
    assert [o.result["square"] for o in outcomes] == [0, 1, 4, 9]
    assert {o.result["threads"] for o in outcomes} == {1}
    assert all(o.ok and o.error is None and o.seconds >= 0 for o in outcomes)
    assert torch.get_num_threads() == threads  # restored after each task


def test_a_failed_task_reports_its_spec_and_traceback_while_the_others_finish() -> None:
    tasks = [Task(f"t{x}", fail_on, (x, 1), spec=f"fail_on({x}, bad=1)") for x in range(3)]
    seen: list[int] = []
    outcomes = run_tasks(tasks, progress=False, on_outcome=lambda index, outcome: seen.append(index))
    assert seen == [0, 1, 2]
    assert [o.result for o in outcomes] == [0, None, 2]
    error = outcomes[1].error
    assert error is not None and "fail_on(1, bad=1)" in error and "Traceback" in error
    assert "RuntimeError: task 1 refuses to run" in error
    report = failures_report(outcomes)
    assert report.startswith("1 of 3 tasks failed") and "fail_on(1, bad=1)" in report
    with pytest.raises(SweepError, match="1 of 3 tasks failed") as caught:
        SweepOptions().run(tasks, Path("/nonexistent/never-written"), None, "t", False)
    assert [o.ok for o in caught.value.outcomes] == [True, False, True]


def test_resume_skips_finished_tasks_and_reruns_failed_or_changed_ones(tmp_path: Path) -> None:
    calls, out = tmp_path / "calls", tmp_path / "sweep"
    calls.mkdir()
    tasks = [*squares(3, calls), Task("bad", fail_on, (7, 7))]
    first = run_tasks(tasks, progress=False, out_dir=out)
    assert [o.ok for o in first] == [True, True, True, False]
    assert len(list(calls.iterdir())) == 3 and len(OutcomeStore(out).files()) == 3  # the failure is not stored
    changed = Task("square/2", square, (5,), {"marker_dir": str(calls)})  # same name, other arguments
    second = run_tasks([*tasks[:2], changed, tasks[3]], progress=False, out_dir=out, resume=True)
    assert [o.resumed for o in second] == [True, True, False, False]
    assert [o.result for o in second[:3]] == [
        first[0].result,
        first[1].result,
        {**square(5), "threads": 1},
    ]  # a task runs on threads_per_task=1
    assert len(list(calls.iterdir())) == 4  # only the changed task ran again
    with pytest.raises(ConfigurationError, match="out_dir"):
        run_tasks(tasks, resume=True, progress=False)


def test_a_damaged_outcome_file_is_run_again(tmp_path: Path) -> None:
    (task,) = squares(1)
    run_tasks([task], progress=False, out_dir=tmp_path)
    path = OutcomeStore(tmp_path).path(task.name)
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    (outcome,) = run_tasks([task], progress=False, out_dir=tmp_path, resume=True)
    assert outcome.ok and not outcome.resumed
    (outcome,) = run_tasks([task], progress=False, out_dir=tmp_path, resume=True)
    assert outcome.resumed  # rewritten by the rerun


def test_bad_options_are_refused_with_a_fix() -> None:
    tasks = squares(2)
    with pytest.raises(ConfigurationError, match="Did you mean 'ray'"):
        run_tasks(tasks, engine="rya", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unique"):
        run_tasks([tasks[0], tasks[0]], progress=False)
    with pytest.raises(ConfigurationError, match="workers must be an integer >= 1"):
        run_tasks(tasks, workers=0, progress=False)
    with pytest.raises(ConfigurationError, match="engine='ray'"):
        run_tasks(tasks, address="auto", progress=False)
    with pytest.raises(ConfigurationError, match="--engine ray"):
        SweepOptions(address="auto")
    with pytest.raises(ConfigurationError, match="non-empty"):
        Task("", square)


@pytest.fixture(scope="module")
def traces() -> mechgym.TraceDataset:
    return mechgym.rollout(ENV, n_episodes=8, n_rounds=12, seed=0)


def make_fit_tasks(traces: mechgym.TraceDataset) -> list[FitTask]:
    config = FitConfig(epochs=2, batch_size=4, device="cpu", progress=False)
    resamples = [
        FitTask(f"boot{k}", ENV, traces, dataclasses.replace(config, seed=k), (k, k, 1, 2, 3, 4)) for k in range(2)
    ]
    return [*resamples, FitTask("recipe", ENV, TraceRecipe(ENV, 6, 12, seed=1), config)]


def test_fit_tasks_run_on_their_episodes_and_match_a_direct_fit(traces: mechgym.TraceDataset) -> None:
    import diml_inverse

    tasks = make_fit_tasks(traces)
    outcomes = run_sweep(tasks, progress=False)
    assert all(o.ok for o in outcomes)
    direct = diml_inverse.fit(ENV, traces.episodes([1, 1, 1, 2, 3, 4]), config=tasks[1].config)
    assert [r["train_nll"] for r in outcomes[1].result.history] == [r["train_nll"] for r in direct.history]
    assert outcomes[2].result.n_train_episodes + outcomes[2].result.n_valid_episodes == 6
    (bad,) = run_sweep([dataclasses.replace(tasks[0], name="bad", episodes=(99,))], progress=False)
    assert bad.result is None and "episode indices must be in [0, 8)" in str(bad.error)


@pytest.mark.slow  # two spawned processes import torch: seconds on an idle machine, a minute on a loaded one
def test_a_process_pool_gives_the_same_results(traces: mechgym.TraceDataset) -> None:
    """One pool of two spawned processes (each imports torch: seconds), fits and shared values together."""
    tasks = [
        *fit_tasks(make_fit_tasks(traces)[:2]),
        *(Task(f"sum{k}", shared_sum, (Shared([1, 2, 3]), k)) for k in range(3)),
    ]
    sequential = run_tasks(tasks[:2], progress=False)
    pooled = run_tasks(tasks, workers=2, progress=False)
    assert [o.result for o in pooled[2:]] == [6, 7, 8]
    for a, b in zip(sequential, pooled[:2], strict=True):
        assert [r["train_nll"] for r in a.result.history] == [r["train_nll"] for r in b.result.history]
        for p, q in zip(a.result.mechanism.parameters(), b.result.mechanism.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.slow  # two spawned processes import the sweep package: seconds on an idle machine
def test_pool_workers_end_when_the_sweeps_process_is_killed(tmp_path: Path) -> None:
    """A killed sweep (SIGKILL: its pool never shuts down) leaves no worker computing a task nobody will receive."""
    pids_file = tmp_path / "pids"
    script = f"from tests.diml_inverse.sweep.functions import run_pool_then_die; run_pool_then_die({str(pids_file)!r})"
    root = Path(__file__).resolve().parents[3]
    sweep = subprocess.run([sys.executable, "-c", script], cwd=root, timeout=300, check=False)
    assert sweep.returncode == -signal.SIGKILL
    workers = [int(pid) for pid in pids_file.read_text().split()]
    assert len(set(workers)) == 2  # both were running a 600 s task when the sweep died
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_experiments_resume_from_their_finished_tasks(tmp_path: Path) -> None:
    from diml_inverse.experiments.__main__ import main

    command = ["run", "e1", "--smoke", "--seeds", "0", "--out", str(tmp_path), "-q"]
    assert main(command) == 0
    stored = OutcomeStore(tmp_path / "e1" / "tasks").files()
    assert len(stored) == 1
    written = {path: path.stat().st_mtime_ns for path in stored}
    final = tmp_path / "e1" / "seed0" / "E1" / "final.csv"
    expected = final.read_text()
    final.unlink()
    assert main([*command, "--resume"]) == 0
    assert final.read_text() == expected  # rewritten from the stored outcome
    assert {path: path.stat().st_mtime_ns for path in stored} == written  # the task did not run again
