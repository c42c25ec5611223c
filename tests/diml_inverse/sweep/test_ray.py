"""diml_inverse.sweep on Ray (one shared 2-CPU instance per test session): retries, the object store, resume, CLI."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

import mechgym
from diml_inverse import FitConfig
from diml_inverse.experiments.__main__ import main
from diml_inverse.sweep import FitTask, Task, fit_episodes, run_sweep, run_tasks
from tests.diml_inverse.sweep.functions import die, die_once_then, fail_on, square

ENV = "mechgym/NeuralMechanism-v0"
CONFIG = FitConfig(epochs=2, batch_size=4, device="cpu", progress=False)

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def traces() -> mechgym.TraceDataset:
    return mechgym.rollout(ENV, n_episodes=8, n_rounds=12, seed=0)


def same_fit(a: Any, b: Any) -> None:
    assert [row["train_nll"] for row in a.history] == [row["train_nll"] for row in b.history]
    for p, q in zip(a.mechanism.parameters(), b.mechanism.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_killed_worker_is_retried_and_the_sweep_completes_with_identical_results(
    tmp_path: Path, traces: mechgym.TraceDataset
) -> None:
    markers = [tmp_path / f"died{k}" for k in range(2)]
    fits = [
        Task(
            f"fit{k}", die_once_then, (str(markers[k]), fit_episodes, ENV, traces, dataclasses.replace(CONFIG, seed=k))
        )
        for k in range(2)
    ]
    outcomes = run_tasks([*fits, Task("square", square, (3,))], engine="ray", max_retries=2, progress=False)
    assert all(marker.exists() for marker in markers)  # each fit's first attempt killed its worker
    assert [o.ok for o in outcomes] == [True, True, True], [o.error for o in outcomes]
    assert outcomes[2].result["square"] == 9 and outcomes[2].result["threads"] == 1
    local = run_tasks(fits, progress=False)  # the markers exist: nothing dies now
    for a, b in zip(outcomes[:2], local, strict=True):
        same_fit(a.result, b.result)


def test_a_worker_that_keeps_dying_is_reported_after_its_retries() -> None:
    task = Task("doomed", die, (1,))
    (outcome,) = run_tasks([task], engine="ray", max_retries=0, progress=False)
    assert outcome.result is None and "doomed" in str(outcome.error) and "Ray" in str(outcome.error)


def test_fit_tasks_put_each_dataset_once_and_match_the_local_engine(
    traces: mechgym.TraceDataset, ray_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = mechgym.rollout(ENV, n_episodes=6, n_rounds=12, seed=1)
    tasks = [
        FitTask(f"boot{k}", ENV, traces, dataclasses.replace(CONFIG, seed=k), (k, 2, 3, 4, 5, k)) for k in range(3)
    ]
    tasks.append(FitTask("other", ENV, other, CONFIG))
    puts: list[object] = []
    real_put = ray_session.put
    monkeypatch.setattr(ray_session, "put", lambda value, **kw: puts.append(value) or real_put(value, **kw))
    on_ray = run_sweep(tasks, engine="ray", workers=2, progress=False)
    assert puts == [traces, other]  # one object-store copy per dataset, not per task
    local = run_sweep(tasks, progress=False)
    for a, b in zip(on_ray, local, strict=True):
        assert a.ok and b.ok
        same_fit(a.result, b.result)


def test_failures_and_resume_on_ray(tmp_path: Path) -> None:
    tasks = [Task(f"t{x}", fail_on, (x, 1)) for x in range(3)]
    first = run_tasks(tasks, engine="ray", progress=False, out_dir=tmp_path)
    assert [o.result for o in first] == [0, None, 2] and "task 1 refuses to run" in str(first[1].error)
    second = run_tasks(tasks, engine="ray", progress=False, out_dir=tmp_path, resume=True)
    assert [o.resumed for o in second] == [True, False, True]


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def test_experiments_write_the_same_final_table_on_ray(tmp_path: Path) -> None:
    """`run e1 --smoke --seeds 0 1 --engine ray` writes local's final table (timing columns aside)."""
    for engine in ("local", "ray"):
        assert (
            main(
                ["run", "e1", "--smoke", "--seeds", "0", "1", "--out", str(tmp_path / engine), "-q", "--engine", engine]
            )
            == 0
        )
    local, ray = (read(tmp_path / engine / "e1" / "final.csv") for engine in ("local", "ray"))
    assert len(local) == 12 and local == ray
    timing = {"fit_seconds", "eval_seconds", "cfkl_seconds"}
    curves = [
        [{k: v for k, v in row.items() if k not in timing} for row in read(tmp_path / engine / "e1" / "curves.csv")]
        for engine in ("local", "ray")
    ]
    assert curves[0] == curves[1]
