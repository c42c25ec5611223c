"""The exception family of mechgym and diml_inverse.

Every error a user can cause is a :class:`MechGymError` (a ``ValueError``), with a message that says
what was expected, what arrived and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MechGymError(ValueError):
    """Base class of every error raised on bad input."""


class UnknownEnvironmentError(MechGymError, KeyError):
    """An environment id that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidActionError(MechGymError):
    """Actions of the wrong shape, dtype or range."""


class TraceDatasetError(MechGymError):
    """A trace dataset that is malformed, empty, corrupted or does not match its environment."""


class NonFinitePolicyError(MechGymError):
    """A learner's choice probabilities became NaN or infinite during a simulation."""


class TraceFileError(TraceDatasetError):
    """A trace file that is missing, unreadable, corrupted, or not a valid mechgym trace file.

    The message starts with the file's path.
    """


class ConfigurationError(MechGymError):
    """Arguments that contradict each other or the environment (sizes, names, options)."""


def suggest(name: str, candidates: Iterable[str], what: str) -> str:
    """Return ``"unknown {what} 'name'"`` with a "did you mean" hint and the known names."""
    known = sorted(candidates)

    def tail(text: str) -> str:  # the name without its namespace ("ns/Name-v0" -> "name-v0")
        return text.rsplit("/", 1)[-1].lower()

    # the same name in any case or namespace, or a name it starts, before the merely similar ones
    same = [c for c in known if c.lower() == name.lower() or tail(c) == tail(name)]
    prefix = [c for c in known if tail(c).startswith(tail(name)) and len(tail(name)) >= 3]
    close = list(dict.fromkeys([*same, *prefix, *difflib.get_close_matches(name, known, n=3, cutoff=0.5)]))[:3]
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Known: {', '.join(known) or '(none)'}."
