"""Reading and writing :class:`TraceDataset` files: Parquet (the interchange format) and ``.npz``.

Parquet layout (one row per episode and round, see ``docs/traces.md``)::

    episode  int32                          0 .. E-1
    round    int32                          0 .. T-1
    actions  fixed_size_list<int8>[N]       (int16 / int32 when A-1 does not fit)
    rewards  fixed_size_list<float32>[N]    (only when the dataset has rewards)

The :class:`TraceMetadata` is stored as JSON under the key ``b"mechgym"`` of the schema metadata, and the
SHA-256 of the content (see below) under ``b"mechgym.sha256"``. Every data page carries a CRC-32 that the
reader verifies. The ``.npz`` format stores the same SHA-256 in the zip archive comment
(``mechgym.sha256=<hex>``), and the reader verifies the CRC-32 of every member.

The content hash is a :class:`~mechgym.files.ContentHasher` over ``actions`` (as int32, ``[E, T, N]`` in
episode, round order), ``rewards`` (float32, if present) and the metadata JSON text as stored. A file whose
content does not match its hash is refused; a file without a hash (written before content hashes were
added) is loaded with a logged warning.

Every write goes through :func:`mechgym.files.atomic_write`, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mechgym.errors import MechGymError, TraceDatasetError, TraceFileError
from mechgym.files import ContentHasher, atomic_write, is_sha256_hex, parse_json
from mechgym.traces.dataset import SCHEMA_VERSION, TraceDataset, TraceMetadata
from mechgym.validation import is_integer

logger = logging.getLogger(__name__)

#: Key of the JSON metadata in the Parquet schema metadata.
METADATA_KEY = b"mechgym"

#: Key of the content hash (64 hex digits) in the Parquet schema metadata.
HASH_KEY = b"mechgym.sha256"

#: Prefix of the content hash in the zip comment of ``.npz`` files.
NPZ_HASH_PREFIX = b"mechgym.sha256="

PathLike = str | os.PathLike[str]

_SUFFIXES = (".parquet", ".npz")
_PARQUET_COLUMNS = ("episode", "round", "actions", "rewards")
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")
_NPZ_MEMBERS = ("actions", "metadata", "rewards")


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
    except (TypeError, ValueError, RecursionError) as error:
        raise TraceDatasetError(
            f"the trace metadata must be JSON-serialisable (numbers, strings, lists, dicts; finite floats) "
            f"to be saved: {error}. Check env_kwargs, learner and extra."
        ) from None


def _metadata_from_json(text: str | bytes, path: Path) -> TraceMetadata:
    try:
        data = parse_json(text)
    except ValueError as error:
        raise TraceFileError(
            f"{path}: the mechgym metadata is unusable: {error} (the file is damaged or was edited by hand)"
        ) from None
    if not isinstance(data, dict):
        raise TraceFileError(f"{path}: the mechgym metadata must be a JSON object; got {type(data).__name__}")
    version = data.get("schema_version")
    if not is_integer(version, numpy=False) or version < 1:
        raise TraceFileError(f"{path}: the mechgym metadata has no valid schema_version (got {version!r})")
    if version > SCHEMA_VERSION:
        raise TraceFileError(
            f"{path} uses trace schema version {version} (written by mechgym "
            f"{data.get('package_version', '?')!s:.40}), but this mechgym reads versions up to {SCHEMA_VERSION}; "
            "upgrade mechgym to read it"
        )
    try:
        return TraceMetadata.from_dict(data)
    except TraceDatasetError as error:
        raise TraceFileError(f"{path}: {error}") from None
    except TypeError as error:  # a field of the wrong kind that the dataclass rejects
        raise TraceFileError(f"{path}: malformed mechgym metadata: {error}") from None


def _content_hash(actions: np.ndarray, rewards: np.ndarray | None, metadata_json: str | bytes) -> str:
    """The SHA-256 a trace file stores: actions as int32, rewards as float32, the metadata JSON as stored."""
    hasher = ContentHasher()
    hasher.update_array("actions", actions, np.int32)
    if rewards is not None:
        hasher.update_array("rewards", rewards, np.float32)
    hasher.update_text("metadata", metadata_json)
    return hasher.hexdigest()


def _verify_content(
    path: Path, stored: bytes | None, actions: np.ndarray, rewards: np.ndarray | None, metadata_json: str | bytes
) -> None:
    """Raise unless the content hashes to ``stored``; warn if the file has no hash (written before checksums)."""
    if stored is None:
        logger.warning(
            "%s has no content checksum (written by an older mechgym): its content cannot be verified. "
            "Save it again to add one.",
            path,
        )
        return
    text = stored.decode("ascii", errors="replace")
    if not is_sha256_hex(text):
        raise TraceFileError(
            f"{path}: the stored content checksum is malformed ({text[:80]!r}); the file is truncated or corrupted"
        )
    actual = _content_hash(actions, rewards, metadata_json)
    if actual != text:
        raise TraceFileError(
            f"{path}: the content does not match its SHA-256 checksum (stored {text[:12]}..., computed "
            f"{actual[:12]}...); the file is truncated or corrupted. Restore it from a backup or record it again"
        )


def _build_dataset(
    path: Path, actions: np.ndarray, rewards: np.ndarray | None, metadata: TraceMetadata, env_id: str | None
) -> TraceDataset:
    """Validate with :class:`TraceDataset` and check the environment id; errors name the file."""
    try:
        dataset = TraceDataset(actions=actions, rewards=rewards, metadata=metadata)
    except TraceDatasetError as error:
        raise TraceFileError(f"{path}: {error}") from None
    if env_id is not None and metadata.env_id != env_id:
        recorded = metadata.env_id if metadata.env_id is not None else "an unregistered environment (env_id=None)"
        raise TraceDatasetError(
            f"{path}: traces were recorded on {recorded} but {env_id} was asked for; "
            "load the file without env_id or pick the matching environment"
        )
    return dataset


def _one_line(error: BaseException, limit: int = 300) -> str:
    """A library's error message on one line, cut to ``limit`` characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_readable_file(path: Path) -> None:
    try:
        if not path.exists():
            raise TraceFileError(f"no trace file at {path}; check the path (record one with `mechgym record`)")
        if not path.is_file():
            raise TraceFileError(f"{path} is not a file; give the path of a .parquet or .npz trace file")
        if path.stat().st_size == 0:
            raise TraceFileError(f"{path} is empty (0 bytes); it was probably never written completely")
        with path.open("rb"):  # e.g. permission denied: say so rather than "corrupted"
            pass
    except OSError as error:  # e.g. a path through a file, or a name too long
        raise TraceFileError(f"cannot read {path}: {error.strerror or error}") from None


# -- Parquet -----------------------------------------------------------------------------------
def to_arrow(dataset: TraceDataset) -> pa.Table:
    """The dataset as an Arrow table in the on-disk layout (one row per episode and round).

    Args:
        dataset: The traces.

    Returns:
        A ``pyarrow.Table`` with columns ``episode``, ``round``, ``actions`` (and ``rewards``), the metadata JSON
        under ``b"mechgym"`` and the content hash under ``b"mechgym.sha256"`` in its schema metadata.

    Raises:
        TraceDatasetError: if the metadata is not JSON-serialisable.
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
    metadata_json = _metadata_to_json(dataset.metadata)
    digest = _content_hash(dataset.actions, dataset.rewards, metadata_json)
    return table.replace_schema_metadata({METADATA_KEY: metadata_json.encode(), HASH_KEY: digest.encode()})


TraceFormat = Literal["auto", "parquet", "npz"]


def save_traces(dataset: TraceDataset, path: PathLike, format: TraceFormat = "auto") -> Path:
    """Write ``dataset`` atomically in the format that :func:`load_traces` reads back from ``path``.

    Args:
        dataset: The traces.
        path: Destination; an existing file is replaced only once the new one is complete.
        format: ``"auto"`` writes npz for a ``.npz`` suffix and Parquet for any other (as :func:`load_traces`
            reads them); ``"parquet"`` or ``"npz"`` force one (a forced format must match what
            :func:`load_traces` would read from that suffix).

    Returns:
        The path written.

    Raises:
        TraceDatasetError: if the metadata is not JSON-serialisable, or ``format`` is unknown or contradicts the
            suffix.
        OSError: if the file cannot be written (e.g. the directory does not exist).
    """
    read_as = "npz" if Path(path).suffix.lower() == ".npz" else "parquet"
    if format not in ("auto", "parquet", "npz"):
        raise TraceDatasetError(f"format must be 'auto', 'parquet' or 'npz'; got {format!r}")
    if format != "auto" and format != read_as:
        raise TraceDatasetError(
            f"cannot write {format} to {os.fspath(path)!r}: load_traces reads a file named so as {read_as}; "
            f"name it with the {'.npz' if format == 'npz' else '.parquet'} suffix"
        )
    return save_npz(dataset, path) if read_as == "npz" else save_parquet(dataset, path)


def save_parquet(dataset: TraceDataset, path: PathLike) -> Path:
    """Write ``dataset`` to a Parquet file (zstd, page checksums, content hash), atomically, whatever its suffix.

    Raises:
        TraceDatasetError: if the metadata is not JSON-serialisable.
        OSError: if the file cannot be written (e.g. the directory does not exist).
    """
    if not isinstance(dataset, TraceDataset):
        raise TraceDatasetError(f"save_traces needs a TraceDataset; got {type(dataset).__name__}")
    table = to_arrow(dataset)

    def write(file: IO[bytes]) -> None:
        pq.write_table(table, file, compression="zstd", write_page_checksum=True)

    return atomic_write(path, write)


def _read_parquet(path: Path) -> pa.Table:
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as file:
            return file.read()
    except Exception as error:  # any failure of the Parquet reader on these bytes means a damaged file
        what = "a data page fails its CRC checksum" if "checksum" in str(error).lower() else "unreadable"
        raise TraceFileError(
            f"{path} is not a readable Parquet file (truncated or corrupted?): {what}: {type(error).__name__}: "
            f"{_one_line(error)}"
        ) from error


def _column(table: pa.Table, name: str, path: Path) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise TraceFileError(f"{path}: column {name!r} is missing; found columns {table.column_names}")
    column = table.column(name)
    if column.null_count:
        raise TraceFileError(f"{path}: column {name!r} has {column.null_count} missing values")
    return column


def _list_values(column: pa.ChunkedArray, name: str, path: Path) -> tuple[np.ndarray, int]:
    """Values of a ``fixed_size_list<...>[N]`` column as a flat numpy array (row-major) and ``N``."""
    if not pa.types.is_fixed_size_list(column.type) or column.type.list_size < 1:
        raise TraceFileError(
            f"{path}: column {name!r} must be a fixed_size_list (one entry per agent); got {column.type}"
        )
    array = column.combine_chunks()
    values = array.flatten()
    if values.null_count:
        raise TraceFileError(f"{path}: column {name!r} has {values.null_count} missing entries")
    return values.to_numpy(zero_copy_only=False), int(column.type.list_size)


def _integer_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    column = _column(table, name, path)
    if not pa.types.is_integer(column.type):
        raise TraceFileError(f"{path}: column {name!r} must be integers; got {column.type}")
    return column.to_numpy().astype(np.int64, copy=False)


def _episode_layout(episode: np.ndarray, round_: np.ndarray, path: Path) -> tuple[np.ndarray, int, int]:
    """Row order that sorts by (episode, round) and the sizes ``(E, T)``; raises on gaps and duplicates."""
    n_rows = len(episode)
    if episode.min() < 0 or round_.min() < 0 or episode.max() >= n_rows or round_.max() >= n_rows:
        raise TraceFileError(
            f"{path}: episode and round numbers must count 0..E-1 and 0..T-1; got episodes "
            f"{episode.min()}..{episode.max()} and rounds {round_.min()}..{round_.max()} in {n_rows} rows"
        )
    counts = np.bincount(episode)
    if (counts == 0).any():
        missing = int(np.flatnonzero(counts == 0)[0])
        raise TraceFileError(
            f"{path}: episode {missing} is missing (episodes must be numbered 0..{len(counts) - 1} without gaps)"
        )
    n_episodes, n_rounds = len(counts), int(counts.max())
    if (counts != n_rounds).any():
        short = int(np.flatnonzero(counts != n_rounds)[0])
        raise TraceFileError(
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
        raise TraceFileError(
            f"{path}: ragged episodes: episode {bad} {' and '.join(problems)}; every episode needs each round "
            f"0..{n_rounds - 1} exactly once"
        )
    return order, n_episodes, n_rounds


def _parquet_arrays(table: pa.Table, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``actions`` and ``rewards`` (or ``None``) ``[E, T, N]`` in (episode, round) order."""
    unexpected = [c for c in table.column_names if c not in _PARQUET_COLUMNS and not _PANDAS_INDEX.fullmatch(c)]
    if unexpected:
        raise TraceFileError(
            f"{path}: unexpected column(s) {unexpected}; a trace file has columns {list(_PARQUET_COLUMNS)} (rewards "
            "optional). Was a column renamed, or the file corrupted?"
        )
    if table.num_rows == 0:
        raise TraceFileError(f"{path} holds no rows: the dataset is empty")
    episode = _integer_column(table, "episode", path)
    round_ = _integer_column(table, "round", path)
    actions, n_agents = _list_values(_column(table, "actions", path), "actions", path)
    if not np.issubdtype(actions.dtype, np.integer):
        raise TraceFileError(f"{path}: actions must be integers; got {table.schema.field('actions').type}")
    rewards = None
    if "rewards" in table.column_names:
        rewards, reward_size = _list_values(_column(table, "rewards", path), "rewards", path)
        if rewards.dtype != np.float32:
            raise TraceFileError(f"{path}: rewards must be float32; got {table.schema.field('rewards').type}")
        if reward_size != n_agents:
            raise TraceFileError(
                f"{path}: column 'rewards' has {reward_size} entries per row but 'actions' has {n_agents}; both "
                "need one entry per agent"
            )
    order, n_episodes, n_rounds = _episode_layout(episode, round_, path)
    shape = (n_episodes, n_rounds, n_agents)
    actions = actions.reshape(-1, n_agents)[order].reshape(shape)
    if rewards is not None:
        rewards = rewards.reshape(-1, n_agents)[order].reshape(shape)
    return actions, rewards


def load_parquet(path: PathLike, *, env_id: str | None = None) -> TraceDataset:
    """Read and validate a Parquet trace file written by :func:`save_traces`.

    Rows may come in any order; each (episode, round) pair must appear exactly once. Page checksums and the
    content hash are verified when the file has them.

    Args:
        path: The file.
        env_id: If given, the id of the environment the traces must come from.

    Returns:
        The :class:`TraceDataset`.

    Raises:
        TraceFileError: if the file is missing, empty, truncated or corrupted (a page or the content fails its
            checksum), not a mechgym trace file, from a newer schema version, has missing or unexpected columns,
            is ragged, holds NaN rewards or out-of-range actions, or has invalid metadata.
        TraceDatasetError: if the traces were recorded on an environment other than ``env_id``.
    """
    path = Path(path)
    _check_readable_file(path)
    table = _read_parquet(path)
    schema_metadata = table.schema.metadata or {}
    if METADATA_KEY not in schema_metadata:
        raise TraceFileError(
            f"{path} is a Parquet file but not a mechgym trace file (no {METADATA_KEY!r} key in its schema "
            "metadata); write traces with mechgym.save_traces or TraceDataset.save"
        )
    metadata_json = schema_metadata[METADATA_KEY]
    actions, rewards = _parquet_arrays(table, path)
    _verify_content(path, schema_metadata.get(HASH_KEY), actions, rewards, metadata_json)
    metadata = _metadata_from_json(metadata_json, path)
    if actions.shape[2] != metadata.n_agents:
        raise TraceFileError(
            f"{path}: column 'actions' must be fixed_size_list[{metadata.n_agents}] (one entry per agent, n_agents="
            f"{metadata.n_agents}); got {table.schema.field('actions').type}"
        )
    return _build_dataset(path, actions, rewards, metadata, env_id)


# -- npz ---------------------------------------------------------------------------------------
def save_npz(dataset: TraceDataset, path: PathLike) -> Path:
    """Write ``dataset`` to a compressed ``.npz`` file with its content hash, atomically.

    The archive holds ``actions`` (smallest integer dtype, ``[E, T, N]``), ``rewards`` (float32
    ``[E, T, N]``, only if present) and ``metadata`` (a 0-d unicode array with the metadata JSON); it
    loads with ``numpy.load(path)`` without pickle. The content hash is the archive comment.

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
    metadata_json = _metadata_to_json(dataset.metadata)
    arrays: dict[str, np.ndarray] = {
        "actions": dataset.actions.astype(_smallest_int_dtype(dataset.n_actions)),
        "metadata": np.array(metadata_json),
    }
    if dataset.rewards is not None:
        arrays["rewards"] = dataset.rewards
    comment = NPZ_HASH_PREFIX + _content_hash(dataset.actions, dataset.rewards, metadata_json).encode()

    def write(file: IO[bytes]) -> None:
        np.savez_compressed(file, **arrays)  # type: ignore[arg-type]
        file.seek(0)
        with zipfile.ZipFile(file, "a") as archive:
            archive.comment = comment

    return atomic_write(path, write)


def _read_npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One ``.npy`` member, its size checked against its header before any allocation and its CRC-32 verified."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise TraceFileError(f"{path}: member {info.filename!r} has unsupported .npy version {version}")
        if dtype.hasobject:
            raise TraceFileError(f"{path}: member {info.filename!r} holds Python objects; trace files hold numbers")
        n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if n_bytes != info.file_size - member.tell():
            raise TraceFileError(
                f"{path}: member {info.filename!r} declares shape {shape} of {dtype} ({n_bytes} bytes) but holds "
                f"{info.file_size - member.tell()} bytes; the file is truncated or corrupted"
            )
        data = bytearray(member.read(n_bytes))
        if len(data) != n_bytes or member.read(1):  # reading to the end verifies the CRC-32
            raise TraceFileError(
                f"{path}: member {info.filename!r} has the wrong length; the file is truncated or corrupted"
            )
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], bytes]:
    """The arrays of a mechgym ``.npz`` file by name, and its archive comment."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if "metadata" not in infos or "actions" not in infos or set(infos) - set(_NPZ_MEMBERS):
                raise TraceFileError(
                    f"{path} is not a mechgym trace file: it holds {sorted(infos)}, expected 'actions' and "
                    "'metadata' (and optionally 'rewards'); write traces with mechgym.save_npz"
                )
            arrays = {name: _read_npz_member(archive, info, path) for name, info in infos.items()}
            return arrays, archive.comment
    except MechGymError:
        raise
    except (
        zipfile.BadZipFile,  # bad CRC-32, bad headers
        zlib.error,
        OSError,
        ValueError,  # a bad .npy header
        EOFError,
        KeyError,
        SyntaxError,
        NotImplementedError,  # a zip version or compression method a flipped bit made up
        RuntimeError,  # a member a flipped bit marked as encrypted
        OverflowError,
    ) as error:
        raise TraceFileError(
            f"{path} is not a readable .npz file (truncated or corrupted?): {type(error).__name__}: {_one_line(error)}"
        ) from error


def load_npz(path: PathLike, *, env_id: str | None = None) -> TraceDataset:
    """Read and validate a ``.npz`` trace file written by :func:`save_npz`.

    The CRC-32 of every member and the content hash (when the file has one) are verified.

    Args:
        path: The file.
        env_id: If given, the id of the environment the traces must come from.

    Returns:
        The :class:`TraceDataset`.

    Raises:
        TraceFileError, TraceDatasetError: as :func:`load_traces`.
    """
    path = Path(path)
    _check_readable_file(path)
    arrays, comment = _read_npz(path)
    stored = None
    if comment:
        if not comment.startswith(NPZ_HASH_PREFIX):
            raise TraceFileError(
                f"{path}: unexpected zip comment {comment[:40]!r}; mechgym writes {NPZ_HASH_PREFIX.decode()}<sha256>. "
                "The file is corrupted or was modified by another tool"
            )
        stored = comment.removeprefix(NPZ_HASH_PREFIX)
    metadata_array, actions, rewards = arrays["metadata"], arrays["actions"], arrays.get("rewards")
    if metadata_array.ndim != 0 or metadata_array.dtype.kind != "U":
        raise TraceFileError(f"{path}: 'metadata' must be a 0-d string array holding JSON")
    if actions.ndim != 3 or not np.issubdtype(actions.dtype, np.integer):
        raise TraceFileError(
            f"{path}: 'actions' must be an integer array [E, T, N]; got {actions.dtype} of shape {actions.shape}"
        )
    if rewards is not None and rewards.dtype != np.float32:
        raise TraceFileError(f"{path}: rewards must be float32; got {rewards.dtype}")
    try:
        metadata_json = str(metadata_array)
        metadata_json.encode()
    except (UnicodeError, ValueError) as error:  # e.g. a lone surrogate or a code point beyond U+10FFFF
        raise TraceFileError(
            f"{path}: the mechgym metadata is not valid text ({error}); the file is truncated or corrupted"
        ) from None
    _verify_content(path, stored, actions, rewards, metadata_json)
    metadata = _metadata_from_json(metadata_json, path)
    return _build_dataset(path, actions, rewards, metadata, env_id)


# -- dispatch on the suffix --------------------------------------------------------------------
def save(dataset: TraceDataset, path: PathLike) -> Path:
    """Write ``dataset`` as Parquet (``.parquet``) or npz (``.npz``) depending on the suffix of ``path``.

    Raises:
        TraceDatasetError: on another suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return save_parquet(dataset, path)
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
        TraceFileError: (a :class:`TraceDatasetError`) if the file is missing, unreadable, empty, truncated or
            corrupted (a page, member or the content fails its checksum), not a mechgym trace file, from a newer
            schema version, has missing or unexpected columns, is ragged, holds NaN rewards or out-of-range
            actions, or has metadata of the wrong types or ranges. Files without a content hash (written before
            checksums) load with a logged warning.
        TraceDatasetError: if the traces were recorded on an environment other than ``env_id``.

    Example:
        >>> traces = mechgym.load_traces("traces.parquet", env_id="mechgym/Congestion-v0")
    """
    if Path(path).suffix.lower() == ".npz":
        return load_npz(path, env_id=env_id)
    return load_parquet(path, env_id=env_id)
