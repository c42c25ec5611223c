"""Device selection shared by mechgym and diml_inverse."""

from __future__ import annotations

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
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
    return resolved
