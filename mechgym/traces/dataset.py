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

from mechgym.errors import MechGymError, TraceDatasetError
from mechgym.files import MAX_JSON_DEPTH, json_depth
from mechgym.validation import SEED_LIMIT, is_integer

#: Version of the on-disk schema; bumped on incompatible changes.
SCHEMA_VERSION = 1


#: Seeds are integers in ``[0, MAX_SEED)``: exactly the seeds the counter-based generator tells apart.
MAX_SEED = SEED_LIMIT

#: The largest number of actions per agent (actions are stored as int32).
MAX_ACTIONS = 2**31 - 1


def _package_version() -> str:
    from mechgym import __version__

    return __version__


def _describe(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, with its type."""
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _integer(name: str, value: Any, low: int, high: int | None, hint: str) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[low, high)``; else a TraceDatasetError.

    ``high`` is ``None`` or a power of two.
    """
    if is_integer(value):
        number = int(value)
        if number >= low and (high is None or number < high):
            return number
    if high is not None:
        bound = f"an integer in [{low}, 2**{high.bit_length() - 1})"
    else:
        bound = "a positive integer" + (f" >= {low}" if low > 1 else "") if low >= 1 else f"an integer >= {low}"
    raise TraceDatasetError(f"trace metadata field {name} must be {bound}; got {_describe(value)}. {hint}")


def _check_learner(learner: Any) -> None:
    """A learner dict is ``{"name": <registered name>, "params": {...}}`` that rebuilds the learner."""
    from mechgym.learners import LEARNERS, learner_from_dict

    if learner is None:
        return
    hint = 'Use Learner.to_dict(), e.g. {"name": "logit_q", "params": {...}}, or None if unknown'
    if not isinstance(learner, dict):
        raise TraceDatasetError(
            f"trace metadata field learner must be a dict or None; got {_describe(learner)}. {hint}"
        )
    if set(learner) - {"name", "params"} or not isinstance(learner.get("name"), str):
        raise TraceDatasetError(
            f"trace metadata field learner must have a 'name' string and optionally a 'params' dict; got keys "
            f"{sorted(map(str, learner))} and name {_describe(learner.get('name'))}. {hint}"
        )
    if not isinstance(learner.get("params", {}), dict):
        raise TraceDatasetError(
            f"trace metadata field learner['params'] must be a dict; got {_describe(learner['params'])}. {hint}"
        )
    if learner["name"] not in LEARNERS:
        raise TraceDatasetError(
            f"trace metadata field learner names an unknown learner {learner['name']!r}; known: "
            f"{', '.join(sorted(LEARNERS))}. Register a custom learner with mechgym.learners.register_learner "
            "before loading"
        )
    try:
        learner_from_dict(learner)
    except (MechGymError, TypeError, ValueError, ArithmeticError) as error:
        raise TraceDatasetError(f"trace metadata field learner does not describe a valid learner: {error}") from None


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

    Raises:
        TraceDatasetError: on a field of the wrong type or out of range: ``n_agents`` an integer >= 2,
            ``n_actions`` an integer in ``[2, 2**31)``, ``seed`` ``None`` or an integer in ``[0, 2**64)``, ``env_id``
            a str or ``None``, ``env_kwargs`` and ``extra`` dicts with string keys, ``learner`` ``None`` or the
            ``to_dict()`` of a registered learner, and no field nested more than 31 levels deep.
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

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "n_agents", _integer("n_agents", self.n_agents, 2, None, "A game has at least 2 agents."))
        hint = "A game has at least 2 actions per agent."
        set_(self, "n_actions", _integer("n_actions", self.n_actions, 2, MAX_ACTIONS + 1, hint))
        if self.seed is not None:
            set_(self, "seed", _integer("seed", self.seed, 0, MAX_SEED, "Pass the integer seed, or None if unknown."))
        version_hint = f"This mechgym writes version {SCHEMA_VERSION}."
        set_(self, "schema_version", _integer("schema_version", self.schema_version, 1, None, version_hint))
        if self.env_id is not None and not isinstance(self.env_id, str):
            raise TraceDatasetError(
                f"trace metadata field env_id must be a registered environment id (a str) or None; got "
                f"{_describe(self.env_id)}. Use e.g. env_id='mechgym/Congestion-v0'"
            )
        if not isinstance(self.package_version, str):
            raise TraceDatasetError(
                f"trace metadata field package_version must be a str; got {_describe(self.package_version)}"
            )
        for name in ("env_kwargs", "extra"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
                raise TraceDatasetError(
                    f"trace metadata field {name} must be a dict with string keys; got {_describe(value)}"
                )
        for name in ("env_kwargs", "learner", "extra"):
            if json_depth(getattr(self, name), MAX_JSON_DEPTH - 1) > MAX_JSON_DEPTH - 1:
                raise TraceDatasetError(
                    f"trace metadata field {name} is nested more than {MAX_JSON_DEPTH - 1} levels deep (or refers "
                    "to itself); store flat settings"
                )
        _check_learner(self.learner)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def for_rollout(
        cls,
        game: Any,
        learner: Any,
        seed: int,
        *,
        n_rounds: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> TraceMetadata:
        """The provenance of traces simulated on ``game`` (a :class:`~mechgym.MechanismGameEnv`) by ``learner``.

        The one place that says what a recording stores: the game's size, id and kwargs (with ``n_rounds`` added
        when the episodes had another length than the game's), the learner's ``to_dict()`` and the seed.
        """
        env_kwargs = dict(game.env_kwargs)
        if n_rounds is not None and n_rounds != game.n_rounds:
            env_kwargs["n_rounds"] = n_rounds
        return cls(
            n_agents=game.n_agents,
            n_actions=game.n_actions,
            env_id=game.env_id,
            env_kwargs=env_kwargs,
            learner=learner.to_dict(),
            seed=seed,
            extra=dict(extra or {}),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceMetadata:
        """Inverse of :meth:`to_dict`.

        Raises:
            TraceDatasetError: on unknown or missing keys and on any field of the wrong type or out of range.
        """
        if not isinstance(data, dict):
            raise TraceDatasetError(f"trace metadata must be a dict; got {_describe(data)}")
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

    def differences(self, other: TraceDataset, max_items: int = 5) -> list[str]:
        """Where this dataset and ``other`` differ: the empty list exactly when ``self == other``.

        Args:
            other: The dataset to compare with.
            max_items: How many differing cells (or metadata keys) to show per array (or field).

        Returns:
            One line per finding: ``actions`` / ``rewards`` (shape, or how many cells differ, then up to
            ``max_items`` indented lines ``episode e, round t, agent i: <self value> != <other value>``), and one
            line per differing metadata field (for dicts, per differing key).

        Example:
            >>> first.differences(second)
            ['actions differ in 2 of 60 cells:', '  episode 0, round 3, agent 1: 4 != 2', ...]
        """
        if not isinstance(other, TraceDataset):
            return [f"the other object is a {type(other).__name__}, not a TraceDataset"]
        lines = _array_differences("actions", self.actions, other.actions, max_items)
        if self.rewards is None or other.rewards is None:
            if (self.rewards is None) != (other.rewards is None):
                has, lacks = ("the left", "the right") if self.rewards is not None else ("the right", "the left")
                lines.append(f"rewards: {has} dataset has rewards, {lacks} has none")
        else:
            lines += _array_differences("rewards", self.rewards, other.rewards, max_items)
        for meta_field in dataclasses.fields(TraceMetadata):
            name = meta_field.name
            lines += _value_differences(
                f"metadata.{name}", getattr(self.metadata, name), getattr(other.metadata, name), max_items
            )
        return lines


def _format_value(value: Any) -> str:
    """Shortest text that tells two values apart (float32 values at float32 precision)."""
    if isinstance(value, np.floating):
        return str(value)
    return repr(value.item() if isinstance(value, np.generic) else value)


def _array_differences(name: str, left: np.ndarray, right: np.ndarray, max_items: int) -> list[str]:
    """Lines for :meth:`TraceDataset.differences` on one ``[E, T, N]`` array."""
    if left.shape != right.shape:
        return [f"{name} shapes differ: {left.shape} != {right.shape} (episodes, rounds, agents)"]
    cells = np.argwhere(left != right)
    if not len(cells):
        return []
    lines = [f"{name} differ in {len(cells)} of {left.size} cells:"]
    for cell in cells[:max_items]:
        index = tuple(int(i) for i in cell)
        lines.append(
            f"  episode {index[0]}, round {index[1]}, agent {index[2]}: "
            f"{_format_value(left[index])} != {_format_value(right[index])}"
        )
    if len(cells) > max_items:
        lines.append(f"  ... and {len(cells) - max_items} more")
    return lines


def _equal(left: Any, right: Any) -> bool:
    """``left == right`` that never raises (numpy arrays inside metadata compare element-wise)."""
    try:
        return bool(left == right)
    except (TypeError, ValueError):
        try:
            return bool(np.array_equal(np.asarray(left), np.asarray(right)))
        except (TypeError, ValueError):  # pragma: no cover - exotic values
            return False


def _value_differences(name: str, left: Any, right: Any, max_items: int) -> list[str]:
    """Lines for :meth:`TraceDataset.differences` on one metadata field (dicts key by key)."""
    if _equal(left, right):
        return []
    if not (isinstance(left, dict) and isinstance(right, dict)):
        return [f"{name}: {left!r} != {right!r}"]
    missing = object()
    keys = [key for key in {**left, **right} if not _equal(left.get(key, missing), right.get(key, missing))]
    lines = []
    for key in keys[:max_items]:
        shown = [repr(side[key]) if key in side else "(missing)" for side in (left, right)]
        lines.append(f"{name}[{key!r}]: {shown[0]} != {shown[1]}")
    if len(keys) > max_items:
        lines.append(f"{name}: ... and {len(keys) - max_items} more keys")
    return lines or [f"{name}: {left!r} != {right!r}"]
