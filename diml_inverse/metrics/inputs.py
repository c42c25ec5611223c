"""What every metric shares: evaluation seeds, the traces it reads and the check that two mechanisms play one game."""

from __future__ import annotations

import zlib

import numpy as np
from torch import Tensor

from mechgym.errors import ConfigurationError, InvalidActionError, TraceDatasetError
from mechgym.mechanisms import Mechanism, validate_joint_actions
from mechgym.traces.dataset import TraceDataset
from mechgym.validation import is_integer

__all__ = ["Traces", "check_same_game", "derive_seed", "detached_float", "trace_actions"]

#: Held-out traces: a dataset or a LongTensor ``[E, T, N]`` of joint actions.
Traces = TraceDataset | Tensor


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one use of an evaluation seed, independent across purposes.

    Hashes ``(seed, crc32(purpose))`` with NumPy's ``SeedSequence``, so ``derive_seed(0, "cfkl/truth")``
    shares no stream with a rollout or a fit that was given the raw seed 0.

    Raises:
        ConfigurationError: ``seed`` is not a non-negative integer.
    """
    if not is_integer(seed) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer; got {seed!r}")
    words = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())]).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)


def check_same_game(truth: Mechanism, estimate: Mechanism) -> None:
    """Raise :class:`ConfigurationError` unless ``estimate`` has the truth's ``N`` and ``A``."""
    if (truth.n_agents, truth.n_actions) != (estimate.n_agents, estimate.n_actions):
        raise ConfigurationError(
            f"the estimate plays a different game from the truth: estimate {type(estimate).__name__} has "
            f"n_agents={estimate.n_agents}, n_actions={estimate.n_actions} but truth {type(truth).__name__} has "
            f"n_agents={truth.n_agents}, n_actions={truth.n_actions}; build the model for the truth's game"
        )


def trace_actions(traces: Traces, n_agents: int, n_actions: int) -> Tensor:
    """The actions of a dataset or an action tensor as a validated LongTensor ``[E, T, N]``.

    Raises:
        TraceDatasetError: a dataset of another game.
        InvalidActionError: a tensor of the wrong shape, dtype or range.
    """
    if isinstance(traces, TraceDataset):
        if (traces.n_agents, traces.n_actions) != (n_agents, n_actions):
            raise TraceDatasetError(
                f"the traces have n_agents={traces.n_agents}, n_actions={traces.n_actions} but the mechanism has "
                f"n_agents={n_agents}, n_actions={n_actions}; evaluate on traces of the same game"
            )
        return traces.actions_tensor()
    if not isinstance(traces, Tensor) or traces.dim() != 3:
        shape = tuple(traces.shape) if isinstance(traces, Tensor) else type(traces).__name__
        raise InvalidActionError(
            f"traces must be a TraceDataset or an integer tensor [E, T, N] = [episodes, rounds, {n_agents}]; got "
            f"{shape}. Add an episode axis with actions[None] for a single episode."
        )
    validate_joint_actions(traces, n_agents, n_actions, where="the evaluation traces")
    return traces.long()


def detached_float(value: Tensor) -> float:
    """A one-element tensor as a Python float, read in float64 on the CPU."""
    return float(value.detach().double().cpu())
