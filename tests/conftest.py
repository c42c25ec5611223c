"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


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
