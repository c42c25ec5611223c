"""Reading and writing :class:`TraceDataset` files: Parquet (the interchange format) and ``.npz``.

Parquet layout (one row per episode and round, see ``docs/traces.md``)::

    episode  int32                          0 .. E-1
    round    int32                          0 .. T-1
    actions  fixed_size_list<int8>[N]       (int16 / int32 when A-1 does not fit)
    rewards  fixed_size_list<float32>[N]    (only when the dataset has rewards)

The :class:`TraceMetadata` is stored as JSON under the key ``b"mechgym"`` of the schema metadata.
Every write goes to a temporary file in the destination directory, is flushed to disk and then renamed
over the destination, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mechgym.errors import TraceDatasetError
from mechgym.traces.dataset import SCHEMA_VERSION, TraceDataset, TraceMetadata

#: Key of the JSON metadata in the Parquet schema metadata.
METADATA_KEY = b"mechgym"

PathLike = str | os.PathLike[str]

_SUFFIXES = (".parquet", ".npz")


# -- helpers shared by both formats ------------------------------------------------------------
def _smallest_int_dtype(n_actions: int) -> np.dtype[Any]:
    """The smallest signed integer dtype that holds ``n_actions - 1``."""
    for dtype in (np.int8, np.int16, np.int32):
        if n_actions - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise TraceDatasetError(f"n_actions={n_actions} is too large to store (at most {np.iinfo(np.int32).max + 1})")


def _json_default(value: Any) -> Any:
    """Make numpy scalars and arrays in the metadata JSON-serialisable."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _metadata_to_json(metadata: TraceMetadata) -> str:
    data = {**metadata.to_dict(), "schema_version": SCHEMA_VERSION}
    try:
        return json.dumps(data, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise TraceDatasetError(
            f"the trace metadata must be JSON-serialisable (numbers, strings, lists, dicts; finite floats) "
            f"to be saved: {error}. Check env_kwargs, learner and extra."
        ) from None


def _metadata_from_json(text: str | bytes, path: Path) -> TraceMetadata:
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TraceDatasetError(
            f"{path}: the mechgym metadata is not valid JSON ({error}); the file is corrupted"
        ) from None
    if not isinstance(data, dict):
        raise TraceDatasetError(f"{path}: the mechgym metadata must be a JSON object; got {type(data).__name__}")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TraceDatasetError(f"{path}: the mechgym metadata has no valid schema_version (got {version!r})")
    if version > SCHEMA_VERSION:
        raise TraceDatasetError(
            f"{path} uses trace schema version {version} (written by mechgym {data.get('package_version', '?')}), "
            f"but this mechgym reads versions up to {SCHEMA_VERSION}; upgrade mechgym to read it"
        )
    for name in ("n_agents", "n_actions"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TraceDatasetError(f"{path}: metadata field {name} must be a positive integer; got {value!r}")
    try:
        return TraceMetadata.from_dict(data)
    except TraceDatasetError as error:
        raise TraceDatasetError(f"{path}: {error}") from None
    except TypeError as error:  # a field of the wrong kind that the dataclass rejects
        raise TraceDatasetError(f"{path}: malformed mechgym metadata: {error}") from None


def _build_dataset(
    path: Path, actions: np.ndarray, rewards: np.ndarray | None, metadata: TraceMetadata, env_id: str | None
) -> TraceDataset:
    """Validate with :class:`TraceDataset` and check the environment id; errors name the file."""
    if env_id is not None and metadata.env_id != env_id:
        recorded = metadata.env_id if metadata.env_id is not None else "an unregistered environment (env_id=None)"
        raise TraceDatasetError(
            f"{path}: traces were recorded on {recorded} but {env_id} was asked for; "
            "load the file without env_id or pick the matching environment"
        )
    try:
        return TraceDataset(actions=actions, rewards=rewards, metadata=metadata)
    except TraceDatasetError as error:
        raise TraceDatasetError(f"{path}: {error}") from None


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise TraceDatasetError(f"no trace file at {path}; check the path (record one with `mechgym record`)")
    if not path.is_file():
        raise TraceDatasetError(f"{path} is not a file; give the path of a .parquet or .npz trace file")
    if path.stat().st_size == 0:
        raise TraceDatasetError(f"{path} is empty (0 bytes); it was probably never written completely")


def _atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it and rename it over ``path``.

    On any failure (including ``KeyboardInterrupt``) the temporary file is removed and an existing file at
    ``path`` is left untouched.
    """
    target = Path(path)
    directory = target.parent
    while True:
        temporary = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return target


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX only; a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover - some filesystems refuse
        pass
    finally:
        os.close(descriptor)


# -- Parquet -----------------------------------------------------------------------------------
def to_arrow(dataset: TraceDataset) -> pa.Table:
    """The dataset as an Arrow table in the on-disk layout (one row per episode and round).

    Args:
        dataset: The traces.

    Returns:
        A ``pyarrow.Table`` with columns ``episode``, ``round``, ``actions`` (and ``rewards``) and the
        metadata JSON under ``b"mechgym"`` in its schema metadata.
    """
    e, t, n = dataset.actions.shape
    episode = pa.array(np.repeat(np.arange(e, dtype=np.int32), t))
    round_ = pa.array(np.tile(np.arange(t, dtype=np.int32), e))
    flat_actions = dataset.actions.reshape(-1).astype(_smallest_int_dtype(dataset.n_actions))
    columns = {
        "episode": episode,
        "round": round_,
        "actions": pa.FixedSizeListArray.from_arrays(pa.array(flat_actions), n),
    }
    if dataset.rewards is not None:
        flat_rewards = pa.array(dataset.rewards.reshape(-1).astype(np.float32, copy=False))
        columns["rewards"] = pa.FixedSizeListArray.from_arrays(flat_rewards, n)
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: _metadata_to_json(dataset.metadata).encode()})


def save_traces(dataset: TraceDataset, path: PathLike) -> Path:
    """Write ``dataset`` to a Parquet file (zstd), atomically.

    Args:
        dataset: The traces.
        path: Destination; an existing file is replaced only once the new one is complete. Any suffix
            is accepted (``.parquet`` is conventional).

    Returns:
        The path written.

    Raises:
        TraceDatasetError: if the metadata is not JSON-serialisable.
        OSError: if the file cannot be written (e.g. the directory does not exist).
    """
    if not isinstance(dataset, TraceDataset):
        raise TraceDatasetError(f"save_traces needs a TraceDataset; got {type(dataset).__name__}")
    table = to_arrow(dataset)
    return _atomic_write(path, lambda file: pq.write_table(table, file, compression="zstd"))


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise TraceDatasetError(
            f"{path} is not a readable Parquet file (truncated or corrupted?): {type(error).__name__}: {error}"
        ) from error


def _column(table: pa.Table, name: str, path: Path) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise TraceDatasetError(f"{path}: column {name!r} is missing; found columns {table.column_names}")
    column = table.column(name)
    if column.null_count:
        raise TraceDatasetError(f"{path}: column {name!r} has {column.null_count} missing values")
    return column


def _list_values(column: pa.ChunkedArray, n_agents: int, name: str, path: Path) -> np.ndarray:
    """Values of a ``fixed_size_list<...>[N]`` column as a flat numpy array (row-major)."""
    if not pa.types.is_fixed_size_list(column.type) or column.type.list_size != n_agents:
        raise TraceDatasetError(
            f"{path}: column {name!r} must be fixed_size_list[{n_agents}] (one entry per agent, n_agents="
            f"{n_agents}); got {column.type}"
        )
    array = column.combine_chunks()
    values = array.flatten()
    if values.null_count:
        raise TraceDatasetError(f"{path}: column {name!r} has {values.null_count} missing entries")
    return values.to_numpy(zero_copy_only=False)


def _episode_layout(episode: np.ndarray, round_: np.ndarray, path: Path) -> tuple[np.ndarray, int, int]:
    """Row order that sorts by (episode, round) and the sizes ``(E, T)``; raises on gaps and duplicates."""
    n_rows = len(episode)
    if episode.min() < 0 or round_.min() < 0 or episode.max() >= n_rows or round_.max() >= n_rows:
        raise TraceDatasetError(
            f"{path}: episode and round numbers must count 0..E-1 and 0..T-1; got episodes "
            f"{episode.min()}..{episode.max()} and rounds {round_.min()}..{round_.max()} in {n_rows} rows"
        )
    counts = np.bincount(episode)
    if (counts == 0).any():
        missing = int(np.flatnonzero(counts == 0)[0])
        raise TraceDatasetError(
            f"{path}: episode {missing} is missing (episodes must be numbered 0..{len(counts) - 1} without gaps)"
        )
    n_episodes, n_rounds = len(counts), int(counts.max())
    if (counts != n_rounds).any():
        short = int(np.flatnonzero(counts != n_rounds)[0])
        raise TraceDatasetError(
            f"{path}: ragged episodes: episode {short} has {counts[short]} rounds but others have {n_rounds}; "
            "every episode needs the same rounds 0..T-1 (was the file filtered or written incompletely?)"
        )
    order = np.lexsort((round_, episode))
    rounds = round_[order].reshape(n_episodes, n_rounds)
    wrong = (rounds != np.arange(n_rounds)).any(axis=1)
    if wrong.any():
        bad = int(np.flatnonzero(wrong)[0])
        values, counts = np.unique(rounds[bad], return_counts=True)
        problems = []
        if (counts > 1).any():
            problems.append(f"repeats round(s) {values[counts > 1].tolist()}")
        absent = np.setdiff1d(np.arange(n_rounds), values)
        if absent.size:
            problems.append(f"lacks round(s) {absent.tolist()}")
        raise TraceDatasetError(
            f"{path}: ragged episodes: episode {bad} {' and '.join(problems)}; every episode needs each round "
            f"0..{n_rounds - 1} exactly once"
        )
    return order, n_episodes, n_rounds


def load_parquet(path: PathLike, *, env_id: str | None = None) -> TraceDataset:
    """Read and validate a Parquet trace file written by :func:`save_traces`.

    Rows may come in any order; each (episode, round) pair must appear exactly once.

    Args:
        path: The file.
        env_id: If given, the id of the environment the traces must come from.

    Returns:
        The :class:`TraceDataset`.

    Raises:
        TraceDatasetError: if the file is missing, empty, truncated or corrupted, not a mechgym trace file,
            from a newer schema version, ragged, holds NaN rewards or out-of-range actions, or was recorded
            on an environment other than ``env_id``.
    """
    path = Path(path)
    _check_readable_file(path)
    table = _read_parquet(path)
    schema_metadata = table.schema.metadata or {}
    if METADATA_KEY not in schema_metadata:
        raise TraceDatasetError(
            f"{path} is a Parquet file but not a mechgym trace file (no {METADATA_KEY!r} key in its schema "
            "metadata); write traces with mechgym.save_traces or TraceDataset.save"
        )
    metadata = _metadata_from_json(schema_metadata[METADATA_KEY], path)
    if table.num_rows == 0:
        raise TraceDatasetError(f"{path} holds no rows: the dataset is empty")
    n_agents = metadata.n_agents
    episode = _integer_column(table, "episode", path)
    round_ = _integer_column(table, "round", path)
    actions = _list_values(_column(table, "actions", path), n_agents, "actions", path)
    if not np.issubdtype(actions.dtype, np.integer):
        raise TraceDatasetError(f"{path}: actions must be integers; got {table.schema.field('actions').type}")
    rewards = None
    if "rewards" in table.column_names:
        rewards = _list_values(_column(table, "rewards", path), n_agents, "rewards", path)
        if rewards.dtype != np.float32:
            raise TraceDatasetError(f"{path}: rewards must be float32; got {table.schema.field('rewards').type}")
    order, n_episodes, n_rounds = _episode_layout(episode, round_, path)
    shape = (n_episodes, n_rounds, n_agents)
    actions = actions.reshape(-1, n_agents)[order].reshape(shape)
    if rewards is not None:
        rewards = rewards.reshape(-1, n_agents)[order].reshape(shape)
    return _build_dataset(path, actions, rewards, metadata, env_id)


def _integer_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    column = _column(table, name, path)
    if not pa.types.is_integer(column.type):
        raise TraceDatasetError(f"{path}: column {name!r} must be integers; got {column.type}")
    return column.to_numpy().astype(np.int64, copy=False)


# -- npz ---------------------------------------------------------------------------------------
def save_npz(dataset: TraceDataset, path: PathLike) -> Path:
    """Write ``dataset`` to a compressed ``.npz`` file, atomically.

    The archive holds ``actions`` (smallest integer dtype, ``[E, T, N]``), ``rewards`` (float32
    ``[E, T, N]``, only if present) and ``metadata`` (a 0-d unicode array with the metadata JSON); it
    loads with ``numpy.load(path)`` without pickle.

    Args:
        dataset: The traces.
        path: Destination (numpy appends nothing: the name is used as given).

    Returns:
        The path written.

    Raises:
        TraceDatasetError: if the metadata is not JSON-serialisable.
        OSError: if the file cannot be written.
    """
    if not isinstance(dataset, TraceDataset):
        raise TraceDatasetError(f"save_npz needs a TraceDataset; got {type(dataset).__name__}")
    arrays: dict[str, np.ndarray] = {
        "actions": dataset.actions.astype(_smallest_int_dtype(dataset.n_actions)),
        "metadata": np.array(_metadata_to_json(dataset.metadata)),
    }
    if dataset.rewards is not None:
        arrays["rewards"] = dataset.rewards
    return _atomic_write(path, lambda file: np.savez_compressed(file, **arrays))  # type: ignore[arg-type]


def load_npz(path: PathLike, *, env_id: str | None = None) -> TraceDataset:
    """Read and validate a ``.npz`` trace file written by :func:`save_npz`.

    Args:
        path: The file.
        env_id: If given, the id of the environment the traces must come from.

    Returns:
        The :class:`TraceDataset`.

    Raises:
        TraceDatasetError: as :func:`load_traces`.
    """
    path = Path(path)
    _check_readable_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if "metadata" not in names or "actions" not in names:
                raise TraceDatasetError(
                    f"{path} is not a mechgym trace file: it holds {sorted(names)}, expected 'actions' and "
                    "'metadata' (and optionally 'rewards'); write traces with mechgym.save_npz"
                )
            metadata_array = archive["metadata"]
            actions = archive["actions"]
            rewards = archive["rewards"] if "rewards" in names else None
    except TraceDatasetError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as error:
        raise TraceDatasetError(
            f"{path} is not a readable .npz file (truncated or corrupted?): {type(error).__name__}: {error}"
        ) from error
    if metadata_array.ndim != 0 or metadata_array.dtype.kind != "U":
        raise TraceDatasetError(f"{path}: 'metadata' must be a 0-d string array holding JSON")
    metadata = _metadata_from_json(str(metadata_array), path)
    if rewards is not None and rewards.dtype != np.float32:
        raise TraceDatasetError(f"{path}: rewards must be float32; got {rewards.dtype}")
    return _build_dataset(path, actions, rewards, metadata, env_id)


# -- dispatch on the suffix --------------------------------------------------------------------
def save(dataset: TraceDataset, path: PathLike) -> Path:
    """Write ``dataset`` as Parquet (``.parquet``) or npz (``.npz``) depending on the suffix of ``path``.

    Raises:
        TraceDatasetError: on another suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return save_traces(dataset, path)
    if suffix == ".npz":
        return save_npz(dataset, path)
    raise TraceDatasetError(
        f"cannot tell the format of {os.fspath(path)!r} from its suffix {suffix!r}; use one of {', '.join(_SUFFIXES)} "
        "(or call save_traces / save_npz directly)"
    )


def load_traces(path: PathLike, *, env_id: str | None = None) -> TraceDataset:
    """Read and validate a trace file: ``.npz`` files with :func:`load_npz`, anything else as Parquet.

    Args:
        path: A file written by :func:`save_traces`, :func:`save_npz` or :meth:`TraceDataset.save`.
        env_id: If given, raise unless the traces were recorded on this environment id.

    Returns:
        The :class:`TraceDataset`, bit-identical to the one saved.

    Raises:
        TraceDatasetError: if the file is missing, empty, truncated or corrupted, not a mechgym trace file,
            from a newer schema version, ragged, holds NaN rewards or out-of-range actions, or was recorded
            on an environment other than ``env_id``.

    Example:
        >>> traces = mechgym.load_traces("traces.parquet", env_id="mechgym/Congestion-v0")
    """
    if Path(path).suffix.lower() == ".npz":
        return load_npz(path, env_id=env_id)
    return load_parquet(path, env_id=env_id)
