"""The thread policy: one thread for small work and on a loaded machine, explicit counts kept, settings restored."""

from __future__ import annotations

import pytest
import torch

import mechgym
from mechgym import threads
from mechgym.errors import ConfigurationError
from mechgym.threads import SMALL_WORK_ELEMENTS, THREADS_ENV, resolve_threads, threads_setting, torch_threads


@pytest.fixture(autouse=True)
def _no_threads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)


def test_small_work_runs_on_one_thread() -> None:
    assert resolve_threads("auto", SMALL_WORK_ELEMENTS - 1) == 1
    assert resolve_threads(None, 10) == 1


def test_large_work_uses_the_idle_cores_up_to_torchs_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "idle_cores", lambda: 2.0)
    assert resolve_threads("auto", SMALL_WORK_ELEMENTS) == 2
    monkeypatch.setattr(threads, "idle_cores", lambda: 0.3)  # a loaded machine
    assert resolve_threads("auto", SMALL_WORK_ELEMENTS) == 1
    monkeypatch.setattr(threads, "idle_cores", lambda: 16.0)
    assert resolve_threads("auto", SMALL_WORK_ELEMENTS) == 2  # never more than torch's setting


def test_idle_cores_counts_this_process_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert threads.idle_cores() == 2.0
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (5.0, 1.0, 1.0))
    assert threads.idle_cores() == -2.0


def test_explicit_counts_and_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_threads(3, 10) == 3
    monkeypatch.setenv(THREADS_ENV, "2")
    assert resolve_threads(None, 10) == 2
    assert resolve_threads("auto", 10) == 1  # an explicit argument beats the environment
    with threads_setting(4):
        assert resolve_threads(None, 10) == 4
    assert resolve_threads(None, 10) == 2  # restored


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two", "0"])
def test_bad_settings_are_refused_with_the_fix(bad: object, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="positive integer or 'auto'"):
        resolve_threads(bad, 10)  # type: ignore[arg-type]
    monkeypatch.setenv(THREADS_ENV, str(bad))
    with pytest.raises(ConfigurationError, match=THREADS_ENV):
        resolve_threads(None, 10)


def test_torch_threads_restores_torchs_setting() -> None:
    before = torch.get_num_threads()
    with torch_threads(1, 10) as chosen:
        assert chosen == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1, 10):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_rollout_is_the_same_at_any_thread_count() -> None:
    one = mechgym.rollout("mechgym/Congestion-v0", n_episodes=4, n_rounds=8, seed=3, threads=1)
    two = mechgym.rollout("mechgym/Congestion-v0", n_episodes=4, n_rounds=8, seed=3, threads=2)
    assert (one.actions == two.actions).all()
    with pytest.raises(ConfigurationError, match="threads"):
        mechgym.rollout("mechgym/Congestion-v0", n_episodes=1, n_rounds=2, threads=0)
