"""Counter-based random numbers: the uniform behind a draw is a hash of (seed, episode, round, agent).

Every simulation in mechgym draws its actions from :func:`uniforms`, so a vectorised rollout, a per-agent
policy stepping a PettingZoo environment, a CPU and a GPU all see the same numbers for the same seed,
whatever the batch layout or the order of evaluation. The hash works in 32-bit integer arithmetic held
in int64 tensors (products stay below 2**63, so nothing overflows on any device).
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_STREAM_KEYS = (0x68E31DA4, 0x1B56C4E9, 0x2F0C53B7, 0x5BD1E995)


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash with good avalanche (Wellons' lowbias32 shape, constants below 2**31)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x4C8E9CF5) & _MASK32
    return x ^ (x >> 16)


def _as_counter(value: int | Tensor, device: torch.device | str | None) -> Tensor:
    return torch.as_tensor(value, dtype=torch.int64, device=device) & _MASK32


def uniforms(
    seed: int,
    episode: int | Tensor,
    round_index: int | Tensor,
    agent: int | Tensor,
    stream: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform float32 numbers in [0, 1) for the broadcast of the integer counters given.

    Args:
        seed: Non-negative seed (the low 64 bits are used).
        episode: Episode index (int or integer tensor).
        round_index: Round index.
        agent: Agent index.
        stream: Separates independent uses within one (episode, round, agent), e.g. exploration noise.
        device: Where to compute.

    Returns:
        A float32 tensor with the broadcast shape of the counters, with 24 random bits each.
    """
    seed = int(seed)
    key = _mix32(_as_counter(seed & _MASK32, device) ^ _mix32(_as_counter((seed >> 32) + _STREAM_KEYS[0], device)))
    key = _mix32(key ^ _as_counter(stream, device))
    for counter, salt in zip((episode, round_index, agent), _STREAM_KEYS[1:], strict=True):
        key = _mix32(key ^ _mix32((_as_counter(counter, device) + salt) & _MASK32))
    return (key >> 8).to(torch.float32) * (1.0 / (1 << 24))


def _mix32_int(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x4C8E9CF5) & _MASK32
    return x ^ (x >> 16)


def uniform(seed: int, episode: int, round_index: int, agent: int, stream: int = 0) -> float:
    """One number of :func:`uniforms` computed with Python integers (fast for a single agent's draw).

    Equal to ``float(uniforms(seed, episode, round_index, agent, stream))``.
    """
    seed = int(seed)
    key = _mix32_int((seed & _MASK32) ^ _mix32_int(((seed >> 32) + _STREAM_KEYS[0]) & _MASK32))
    key = _mix32_int(key ^ (int(stream) & _MASK32))
    for counter, salt in zip((episode, round_index, agent), _STREAM_KEYS[1:], strict=True):
        key = _mix32_int(key ^ _mix32_int(((int(counter) & _MASK32) + salt) & _MASK32))
    return (key >> 8) * (1.0 / (1 << 24))


def sample_categorical(probabilities: Tensor, uniform: Tensor) -> Tensor:
    """Inverse-CDF draw: the action ``a`` with ``cdf[a-1] <= u < cdf[a]`` for each row of ``[..., A]``."""
    cdf = probabilities.cumsum(-1)[..., :-1]
    return (cdf <= uniform[..., None]).sum(-1)
