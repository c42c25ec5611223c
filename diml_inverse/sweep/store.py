"""Finished tasks on disk: one checksummed file per task, written atomically as it completes, read by ``resume``.

A file holds the task's name, a fingerprint of what it ran (its function and arguments, shared values by
content) and its pickled result. ``resume`` uses a file only when the name and the fingerprint match the task
being run, so changing a task's options reruns it instead of returning a stale result. The files are pickles:
resume only from directories your own sweeps wrote.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from pathlib import Path
from typing import IO, Any

from diml_inverse.sweep.tasks import Shared, SharedSlot, Task, TaskOutcome
from mechgym.files import atomic_write

__all__ = ["OUTCOME_SUFFIX", "OutcomeStore"]

logger = logging.getLogger(__name__)

OUTCOME_SUFFIX = ".outcome"
_MAGIC = b"diml-sweep-outcome 1 sha256="
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OutcomeStore:
    """The finished tasks of a sweep under ``directory`` (created on the first write).

    Args:
        directory: One directory per sweep (the task names key its files).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._shared_digests: dict[int, str] = {}

    def path(self, name: str) -> Path:
        """The file of task ``name``: a readable form of the name and a hash of it (distinct names, distinct files)."""
        readable = _UNSAFE.sub("_", name).strip("._")[:80] or "task"
        return self.directory / f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:12]}{OUTCOME_SUFFIX}"

    def fingerprint(self, task: Task) -> str:
        """SHA-256 of the task's function and arguments (shared values by the hash of their content, computed once)."""

        def stand_in(value: Any) -> Any:
            if isinstance(value, Shared):
                if id(value) not in self._shared_digests:
                    data = pickle.dumps(value.value, protocol=pickle.HIGHEST_PROTOCOL)
                    self._shared_digests[id(value)] = hashlib.sha256(data).hexdigest()
                return ("shared", self._shared_digests[id(value)])
            if isinstance(value, SharedSlot):  # pragma: no cover - the engine fingerprints before slotting
                raise TypeError("fingerprint the task before its shared values are replaced by slots")
            return value

        function = f"{task.function.__module__}.{task.function.__qualname__}"
        arguments = (
            function,
            tuple(map(stand_in, task.args)),
            sorted((k, stand_in(v)) for k, v in task.kwargs.items()),
        )
        return hashlib.sha256(pickle.dumps(arguments, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()

    def write(self, task: Task, outcome: TaskOutcome) -> Path:
        """Write a finished task's outcome atomically (replacing an earlier file of the same task)."""
        record = {"name": task.name, "fingerprint": self.fingerprint(task), "result": outcome.result}
        record["seconds"] = outcome.seconds
        payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        header = _MAGIC + _digest(payload).encode() + b"\n"

        def write(file: IO[bytes]) -> None:
            file.write(header)
            file.write(payload)

        self.directory.mkdir(parents=True, exist_ok=True)
        return atomic_write(self.path(task.name), write)

    def read(self, task: Task) -> TaskOutcome | None:
        """The stored outcome of ``task``, or ``None`` when there is none, it is damaged, or it is another task's."""
        path = self.path(task.name)
        if not path.is_file():
            return None
        data = path.read_bytes()
        header, _, payload = data.partition(b"\n")
        if not header.startswith(_MAGIC) or header[len(_MAGIC) :].decode(errors="replace") != _digest(payload):
            logger.warning("%s is damaged (checksum mismatch); task %r runs again", path, task.name)
            return None
        try:
            record = pickle.loads(payload)
        except Exception as error:  # e.g. a result class that has changed since
            logger.warning("%s cannot be read (%s); task %r runs again", path, error, task.name)
            return None
        expected = {"name": task.name, "fingerprint": self.fingerprint(task)}
        if not isinstance(record, dict) or any(record.get(key) != value for key, value in expected.items()):
            logger.warning("%s was written by a different task than %r; it runs again", path, task.name)
            return None
        return TaskOutcome(task.name, record["result"], None, float(record["seconds"]), resumed=True)

    def files(self) -> list[Path]:
        """The outcome files in the directory."""
        return sorted(self.directory.glob(f"*{OUTCOME_SUFFIX}")) if self.directory.is_dir() else []


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
