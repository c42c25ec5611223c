"""Helpers the benchmark scripts share: timing and the machine they ran on (imported by them, not a benchmark)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

CPU = torch.device("cpu")


def describe_machine(device: torch.device) -> str:
    """The GPU's name, or the CPU model and torch's thread count, with the torch version."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (``n/a`` off Linux): timings under load are noisy."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(step: Callable[[], object], device: torch.device = CPU) -> float:
    """Wall seconds of one call of ``step``, with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def median_seconds(step: Callable[[], object], repeats: int, device: torch.device = CPU) -> float:
    """Median of :func:`seconds` over ``repeats`` calls."""
    return statistics.median(seconds(step, device) for _ in range(repeats))
