"""What the benchmark scripts print about the machine they ran on (imported by them, not a benchmark)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


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
