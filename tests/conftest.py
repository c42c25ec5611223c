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


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """Explain a failed ``==`` between two TraceDatasets with :meth:`TraceDataset.differences` (their reprs match)."""
    from mechgym.traces import TraceDataset

    if op == "==" and isinstance(left, TraceDataset) and isinstance(right, TraceDataset):
        return [f"{left!r} == {right!r}", "differences (left != right):", *left.differences(right, max_items=5)]
    return None
