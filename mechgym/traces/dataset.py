"""``TraceDataset``: the recorded joint actions (and optionally payoffs) of learning agents."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechgym.errors import TraceDatasetError

#: Version of the on-disk schema; bumped on incompatible changes.
SCHEMA_VERSION = 1


def _package_version() -> str:
    from mechgym import __version__

    return __version__


@dataclass(frozen=True)
class TraceMetadata:
    """Where a dataset came from.

    Attributes:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        env_id: Registered environment id (``None`` for an unregistered environment).
        env_kwargs: Keyword arguments that rebuild the environment with ``mechgym.make(env_id, **env_kwargs)``.
        learner: The generating learner as ``{"name": ..., "params": {...}}`` (``None`` if unknown).
        seed: Seed of the rollout (``None`` if unknown).
        package_version: mechgym version that wrote the data.
        schema_version: On-disk schema version.
        extra: Free-form JSON-serialisable information (e.g. training hyperparameters of SB3 agents).
    """

    n_agents: int
    n_actions: int
    env_id: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    learner: dict[str, Any] | None = None
    seed: int | None = None
    package_version: str = field(default_factory=_package_version)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceMetadata:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`TraceDatasetError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TraceDatasetError(
                f"unknown trace metadata fields {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        missing = {"n_agents", "n_actions"} - set(data)
        if missing:
            raise TraceDatasetError(f"trace metadata lacks {sorted(missing)}")
        return cls(**data)


@dataclass(frozen=True)
class TraceDataset:
    """Joint actions of ``E`` episodes of ``T`` rounds played by ``N`` agents.

    Attributes:
        actions: Integer array ``[E, T, N]`` with values in ``[0, A)``.
        rewards: Optional float32 array ``[E, T, N]`` of realised payoffs (finite).
        metadata: Provenance: environment, learner, seed, versions.

    Raises:
        TraceDatasetError: on an empty dataset, wrong shapes or dtypes, actions out of range, non-finite
            rewards, or sizes that disagree with the metadata.
    """

    actions: np.ndarray
    metadata: TraceMetadata
    rewards: np.ndarray | None = None

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions)
        meta = self.metadata
        if not isinstance(meta, TraceMetadata):
            raise TraceDatasetError(f"metadata must be a TraceMetadata; got {type(meta).__name__}")
        if actions.ndim != 3:
            raise TraceDatasetError(f"actions must have shape [episodes, rounds, agents]; got shape {actions.shape}")
        if actions.size == 0:
            raise TraceDatasetError(
                f"the dataset is empty (actions of shape {actions.shape}); record some episodes first"
            )
        if not np.issubdtype(actions.dtype, np.integer):
            raise TraceDatasetError(f"actions must be integers; got dtype {actions.dtype}")
        if actions.shape[2] != meta.n_agents:
            raise TraceDatasetError(
                f"actions have {actions.shape[2]} agents but the metadata says n_agents={meta.n_agents}"
            )
        low, high = int(actions.min()), int(actions.max())
        if low < 0 or high >= meta.n_actions:
            bad = np.argwhere((actions < 0) | (actions >= meta.n_actions))[0]
            raise TraceDatasetError(
                f"actions must be integers in [0, {meta.n_actions}); got {int(actions[tuple(bad)])} at "
                f"episode {bad[0]}, round {bad[1]}, agent {bad[2]}"
            )
        dtype = np.int16 if meta.n_actions <= np.iinfo(np.int16).max else np.int32
        object.__setattr__(self, "actions", np.ascontiguousarray(actions, dtype=dtype))
        if self.rewards is not None:
            rewards = np.asarray(self.rewards)
            if rewards.shape != actions.shape:
                raise TraceDatasetError(f"rewards must have the actions' shape {actions.shape}; got {rewards.shape}")
            if not np.issubdtype(rewards.dtype, np.number) or np.issubdtype(rewards.dtype, np.complexfloating):
                raise TraceDatasetError(f"rewards must be real numbers; got dtype {rewards.dtype}")
            with np.errstate(over="ignore"):  # values beyond float32 become inf and are reported below
                rewards32 = np.ascontiguousarray(rewards, dtype=np.float32)
            if not np.isfinite(rewards32).all():
                bad = np.argwhere(~np.isfinite(rewards32))[0]
                hint = " (too large for float32)" if np.isfinite(rewards[tuple(bad)]) else ""
                raise TraceDatasetError(
                    f"rewards must be finite{hint}; got {rewards[tuple(bad)]} at episode {bad[0]}, round {bad[1]}, "
                    f"agent {bad[2]}"
                )
            object.__setattr__(self, "rewards", rewards32)

    # -- sizes -----------------------------------------------------------------------------
    @property
    def n_episodes(self) -> int:
        """``E``."""
        return int(self.actions.shape[0])

    @property
    def n_rounds(self) -> int:
        """``T``."""
        return int(self.actions.shape[1])

    @property
    def n_agents(self) -> int:
        """``N``."""
        return int(self.actions.shape[2])

    @property
    def n_actions(self) -> int:
        """``A``."""
        return int(self.metadata.n_actions)

    def __len__(self) -> int:
        return self.n_episodes

    def __repr__(self) -> str:
        source = self.metadata.env_id or "unregistered env"
        learner = (self.metadata.learner or {}).get("name", "unknown learner")
        return (
            f"TraceDataset({source}, episodes={self.n_episodes}, rounds={self.n_rounds}, agents={self.n_agents}, "
            f"actions={self.n_actions}, learner={learner}, seed={self.metadata.seed}, "
            f"rewards={'yes' if self.rewards is not None else 'no'})"
        )

    # -- views -----------------------------------------------------------------------------
    def episodes(self, index: slice | np.ndarray | list[int]) -> TraceDataset:
        """A dataset of the selected episodes (same metadata)."""
        actions = self.actions[index]
        rewards = None if self.rewards is None else self.rewards[index]
        return TraceDataset(actions=actions, rewards=rewards, metadata=self.metadata)

    def split(self, train_fraction: float = 0.8) -> tuple[TraceDataset, TraceDataset]:
        """Split by episode order: the first ``floor(train_fraction * E)`` episodes train, the rest test.

        Raises:
            TraceDatasetError: if either part would be empty.
        """
        if not 0.0 < train_fraction < 1.0:
            raise TraceDatasetError(f"train_fraction must be in (0, 1); got {train_fraction}")
        n_train = math.floor(train_fraction * self.n_episodes + 1e-9)
        if n_train < 1 or n_train >= self.n_episodes:
            raise TraceDatasetError(
                f"train_fraction={train_fraction} of {self.n_episodes} episodes leaves an empty part; "
                "record more episodes or change the fraction"
            )
        return self.episodes(slice(0, n_train)), self.episodes(slice(n_train, None))

    # -- files -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the dataset atomically: Parquet for a ``.parquet`` path, compressed npz for ``.npz``.

        Returns:
            The path written.

        Raises:
            TraceDatasetError: on another suffix or metadata that is not JSON-serialisable.
        """
        from mechgym.traces.io import save

        return save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, env_id: str | None = None) -> TraceDataset:
        """Read and validate a trace file (see :func:`mechgym.load_traces`)."""
        from mechgym.traces.io import load_traces

        return load_traces(path, env_id=env_id)

    def actions_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Actions as a LongTensor ``[E, T, N]``."""
        return torch.as_tensor(self.actions, device=device).long()

    def learner(self) -> Any:
        """The generating :class:`~mechgym.learners.Learner` from the metadata (``None`` if not recorded)."""
        from mechgym.learners import learner_from_dict

        return None if self.metadata.learner is None else learner_from_dict(self.metadata.learner)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceDataset):
            return NotImplemented
        same_rewards = (self.rewards is None and other.rewards is None) or (
            self.rewards is not None and other.rewards is not None and np.array_equal(self.rewards, other.rewards)
        )
        return self.metadata == other.metadata and np.array_equal(self.actions, other.actions) and same_rewards

    __hash__ = None  # type: ignore[assignment]
