"""Up-front memory estimates: refuse a size that cannot fit before allocating it, with the estimate in the message.

A rollout of ``10**7`` agents or a fit with ``hidden=200000`` would otherwise try to allocate tens of gigabytes
and die deep inside torch (or be killed by the operating system). Callers estimate what they will hold at
once and call :func:`check_memory`; passing ``check_memory=False`` to the public function skips the check.
"""

from __future__ import annotations

import os

import torch

from mechgym.errors import MechGymError

#: Share of the available memory that one estimate may take before it is refused.
MEMORY_FRACTION = 0.9


class MemoryBudgetError(MechGymError, MemoryError):
    """A size whose estimated memory exceeds what the device has."""


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory available for new allocations on ``device``, or ``None`` when it cannot be told.

    On the CPU: ``MemAvailable`` of ``/proc/meminfo`` (Linux), else the physical memory. On CUDA: the free
    memory of that device.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n_bytes: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_memory(
    n_bytes: float, what: str, *, device: torch.device | str = "cpu", option: str | None = "check_memory"
) -> None:
    """Raise :class:`MemoryBudgetError` if ``n_bytes`` exceed :data:`MEMORY_FRACTION` of ``device``'s free memory.

    Args:
        n_bytes: The estimate (a float so that astronomically large sizes do not overflow).
        what: What needs the memory, for the message (e.g. ``"rollout of 16 episodes x 10000000 agents"``).
        device: Where it will be allocated.
        option: The keyword that skips this check, named in the message (``None`` when nothing can skip it).

    Raises:
        MemoryBudgetError: The estimate does not fit.
    """
    available = available_memory_bytes(device)
    if available is None or n_bytes <= MEMORY_FRACTION * available:
        return
    skip = f" (or pass {option}=False to try anyway)" if option else ""
    raise MemoryBudgetError(
        f"{what} needs about {format_bytes(n_bytes)} of memory at once but {torch.device(device)} has "
        f"{format_bytes(available)} available; use smaller sizes{skip}"
    )
