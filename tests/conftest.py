"""Shared fixtures and hooks (this file applies to every test under tests/)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tests.toy_game import register_toy_game


def pytest_configure(config: pytest.Config) -> None:
    """Register the toy third-party game before collection, so every parametrisation over ids includes it."""
    register_toy_game()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module on one torch thread (restored afterwards); use with ``pytest.mark.usefixtures``.

    The sizes in these tests gain nothing from more threads, and on a shared CPU OpenMP's spinning threads can
    make a 2-thread run of small operations many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """One Ray instance of 2 CPUs for the whole test session (Ray has no local mode; start-up takes seconds).

    Skips the test when the ``.[ray]`` extra is not installed. The workers see the repository root on their
    ``PYTHONPATH``, so they can import task functions defined under ``tests/``.
    """
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install '.[ray]' (or '.[dev]')")
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root if not previous else f"{root}{os.pathsep}{previous}"
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    finally:
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous
    yield ray
    ray.shutdown()


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """Explain a failed ``==`` between two TraceDatasets with :meth:`TraceDataset.differences` (their reprs match)."""
    from mechgym.traces import TraceDataset

    if op == "==" and isinstance(left, TraceDataset) and isinstance(right, TraceDataset):
        return [f"{left!r} == {right!r}", "differences (left != right):", *left.differences(right, max_items=5)]
    return None
