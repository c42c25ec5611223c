"""Device selection shared by mechgym and diml_inverse, and a process-wide CPU memory setting."""

from __future__ import annotations

import ctypes
import itertools
import sys
from typing import Literal

import torch

from mechgym.errors import ConfigurationError

DeviceLike = Literal["auto", "cpu", "cuda"] | str | torch.device


def resolve_device(device: DeviceLike | None) -> torch.device:
    """``"auto"`` (or ``None``) picks CUDA when available, else the CPU; anything else is checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigurationError(f"unknown device {device!r}: {error}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigurationError(
            f"device {device!r} is not supported: mechgym runs on 'cpu' and 'cuda' (or 'cuda:N'); use 'auto' to pick "
            "CUDA when available"
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigurationError(
            f"device {device!r} was asked for but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return resolved


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a module (e.g. a mechanism) lives: the device of its first parameter or buffer; the CPU if it has none."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):  # the first one only
        return tensor.device
    return torch.device("cpu")


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the system (Linux only).

    E4's minibatches allocate activation tensors of 100 MB and more; by default glibc serves each from a
    fresh ``mmap`` and unmaps it on free, so every minibatch page-faults its memory in again (a third of
    E4's CPU time was system time). With ``M_MMAP_MAX = 0`` and a high ``M_TRIM_THRESHOLD`` the heap keeps
    those pages: measured 1.6x faster per E4 epoch (docs/benchmarks.md). The setting is process-wide: call
    it once at start-up (the experiments' command line and the large-game benchmark do).

    Returns:
        Whether it was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc
        return False
