"""Safe file primitives shared by trace files and fit files: atomic writes, content hashes, bounded JSON.

* :func:`atomic_write` writes a file so that a reader sees the old file or the complete new one, never half of
  one, and removes the temporary files that killed writers left behind.
* :class:`ContentHasher` is a SHA-256 over a canonical encoding of named arrays and texts; files store it and
  readers recompute it to refuse corrupted content.
* :func:`parse_json` and :func:`json_depth` read JSON from a file without crashing on hostile input (deep
  nesting, ``NaN``, numbers too large for a float).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Temporary files older than this many seconds are stale whoever wrote them (e.g. a writer on another host).
STALE_TEMPORARY_SECONDS = 24 * 60 * 60

#: The deepest nesting of lists and objects that :func:`parse_json` accepts (the metadata object counts 1).
MAX_JSON_DEPTH = 32

#: ``.{name}~{host}~{pid}~{token}.tmp``: the names of our temporary files (``name`` is cut to keep it short).
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.*)~(?P<host>[A-Za-z0-9_.-]{1,64})~(?P<pid>[0-9]{1,10})~[0-9a-f]{12}\.tmp")
_NAME_PREFIX_CHARACTERS = 120


# -- atomic writes -----------------------------------------------------------------------------
def _host_tag() -> str:
    """This host's name, reduced to the characters allowed in a temporary file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "localhost"


def temporary_name(target: str) -> str:
    """A fresh name for the temporary file of a write to ``target``: it embeds the host name and this PID.

    Args:
        target: The file name (not the path) the temporary file will be renamed to.

    Returns:
        ``.{target}~{host}~{pid}~{12 random hex digits}.tmp`` with ``target`` cut to 120 characters.
    """
    return f".{target[:_NAME_PREFIX_CHARACTERS]}~{_host_tag()}~{os.getpid()}~{secrets.token_hex(6)}.tmp"


def _process_exists(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a process of another user counts)."""
    if os.name == "nt":  # os.kill would terminate the process there: assume it lives (old files still go)
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to someone else
        return True
    except OSError:  # pragma: no cover - e.g. a platform without signals: assume it lives
        return True
    return True


def is_stale_temporary(name: str, modified: float, *, now: float | None = None) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_write` whose writer is gone.

    A file of ours is stale if it was written on this host by a process that no longer exists, or if it was
    last modified more than :data:`STALE_TEMPORARY_SECONDS` ago. Any other file, and any file of a writer that
    may still run, is not.

    Args:
        name: A file name.
        modified: Its modification time (seconds since the epoch).
        now: The current time (default: ``time.time()``).

    Returns:
        ``True`` if the file may be removed.
    """
    match = _TEMPORARY_NAME.fullmatch(name)
    if match is None:
        return False
    now = time.time() if now is None else now
    if now - modified > STALE_TEMPORARY_SECONDS:
        return True
    return match["host"] == _host_tag() and not _process_exists(int(match["pid"]))


def remove_stale_temporaries(directory: PathLike) -> list[Path]:
    """Remove the temporary files that dead writers of :func:`atomic_write` left in ``directory``.

    Only names of our own pattern are considered, and only stale ones (see :func:`is_stale_temporary`) are
    removed, so a write in progress in another process is never disturbed. Errors (a file that another cleaner
    removed first, a read-only directory) are ignored.

    Args:
        directory: The directory to clean.

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.endswith(".tmp") or not entry.name.startswith("."):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if is_stale_temporary(entry.name, entry.stat(follow_symlinks=False).st_mtime, now=now):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone already, or not ours to remove
            continue
    if removed:
        logger.info("removed %d stale temporary file(s) of killed writers in %s", len(removed), directory)
    return removed


def fsync_directory(directory: PathLike) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
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


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it and rename it over ``path``.

    A reader of ``path`` sees either the previous file or the complete new one. On any failure (including
    ``KeyboardInterrupt``) the temporary file is removed and an existing file at ``path`` is left untouched; a
    writer killed outright (``kill -9``, power loss) leaves its temporary file, which the next write to the same
    directory removes (see :func:`remove_stale_temporaries`). The new file gets the usual mode of a new file
    (``0o666`` minus the umask, e.g. ``0o644``); the file and the directory are fsynced.

    Args:
        path: Destination; its directory must exist.
        write: Writes the content to the binary file it is given (opened for reading and writing); it need not
            flush or close it. What it returns is ignored.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: if the directory does not exist or cannot be written.
    """
    target = Path(path)
    directory = target.parent
    remove_stale_temporaries(directory)
    while True:
        temporary = directory / temporary_name(target.name)
        try:
            descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
    try:
        with os.fdopen(descriptor, "w+b") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return target


# -- content hashes ----------------------------------------------------------------------------
_CHUNK_ELEMENTS = 1 << 20


class ContentHasher:
    """SHA-256 over a canonical encoding of named arrays and texts.

    Every item is encoded as its kind, name, dtype and shape followed by its bytes (arrays: C order,
    little-endian; texts: UTF-8), each length-prefixed, so that two different sequences of items never encode
    alike. The digest depends on the values only, not on the memory layout or the byte order of the machine.

    Example:
        >>> hasher = ContentHasher()
        >>> hasher.update_array("actions", actions, np.int32)
        >>> hasher.update_text("metadata", text)
        >>> hasher.hexdigest()
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def _field(self, data: bytes) -> None:
        self._sha.update(len(data).to_bytes(8, "little"))
        self._sha.update(data)

    def update_array(self, name: str, array: np.ndarray, dtype: npt.DTypeLike | None = None) -> None:
        """Add an array under ``name``, converted to ``dtype`` (default: its own) chunk by chunk.

        Args:
            name: Its name.
            array: The values (any layout).
            dtype: The canonical dtype to encode; converting e.g. ``int8`` data to ``int32`` encodes the same
                values as ``int32`` data.
        """
        canonical = np.dtype(array.dtype if dtype is None else dtype).newbyteorder("<")
        flat = array.reshape(-1)
        self._array_header(name, canonical.str, array.shape)
        self._sha.update((flat.size * canonical.itemsize).to_bytes(8, "little"))
        for start in range(0, flat.size, _CHUNK_ELEMENTS):
            chunk = np.ascontiguousarray(flat[start : start + _CHUNK_ELEMENTS], dtype=canonical)
            self._sha.update(chunk.data)

    def update_bytes(self, name: str, dtype: str, shape: tuple[int, ...], data: bytes) -> None:
        """Add raw bytes under ``name`` with a dtype label and a shape (for types numpy lacks, e.g. bfloat16)."""
        self._array_header(name, dtype, shape)
        self._field(data)

    def _array_header(self, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        self._field(b"array")
        self._field(name.encode())
        self._field(dtype.encode())
        self._field(np.asarray(shape, dtype="<i8").tobytes())

    def update_text(self, name: str, text: str | bytes) -> None:
        """Add a text (UTF-8 encoded if given as ``str``) under ``name``."""
        self._field(b"text")
        self._field(name.encode())
        self._field(text.encode() if isinstance(text, str) else text)

    def hexdigest(self) -> str:
        """The SHA-256 as 64 lowercase hex digits."""
        return self._sha.hexdigest()


def is_sha256_hex(value: object) -> bool:
    """Whether ``value`` is a string of 64 lowercase hex digits."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


# -- JSON from files ---------------------------------------------------------------------------
def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of dicts, lists and tuples in ``value`` (a scalar is 0, ``{}`` is 1), at most ``limit + 1``.

    The walk stops as soon as the depth passes ``limit``, so self-referencing structures terminate.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen: dict[int, int] = {}
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list | tuple):
            continue
        if depth > limit:
            return limit + 1
        if seen.get(id(item), 0) >= depth:
            continue
        seen[id(item)] = depth
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def parse_json(text: str | bytes, *, allow_nan: bool = False, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON read from a file, refusing what would crash or mislead later code.

    Args:
        text: The JSON text (bytes must be UTF-8).
        allow_nan: Accept ``NaN``, ``Infinity`` and numbers too large for a float (as ``inf``).
        max_depth: The deepest nesting of lists and objects accepted.

    Returns:
        The parsed value.

    Raises:
        ValueError: (a plain one, for the caller to wrap in its file error) on text that is not UTF-8 or not
            JSON, on non-finite numbers unless ``allow_nan``, and on nesting deeper than ``max_depth``.
    """
    extra: dict[str, Any] = {} if allow_nan else {"parse_constant": _reject_constant, "parse_float": _finite_float}
    try:
        value = json.loads(text, **extra)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text ({error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error})") from None
    if json_depth(value, max_depth) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value
