"""Checks of scalar arguments at the public boundaries: integers that are integers, seeds the generator tells apart.

``int(2.5)`` silently builds 2 agents and ``"3"`` stays a string; a seed of ``2**64`` draws exactly the numbers
of seed ``0``. These checks refuse such values with a message naming the argument.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, TypeGuard

import numpy as np

from mechgym.errors import ConfigurationError

#: Seeds are hashed as 64-bit integers: exactly the seeds in ``[0, SEED_LIMIT)`` give distinct draws.
SEED_LIMIT = 2**64

#: Episode, round and agent indices are hashed as 32-bit counters: each must stay below this.
COUNTER_LIMIT = 2**32


def is_integer(value: Any, *, numpy: bool = True) -> TypeGuard[int]:
    """Whether ``value`` is an integer: a Python ``int`` (or, with ``numpy``, a NumPy integer), never a bool.

    The one integer test of both packages: floats (even ``2.0``), strings and bools are not integers. Options
    that are stored as JSON pass ``numpy=False`` (a NumPy integer is not JSON-serialisable). A NumPy integer
    compares and converts like an ``int``, hence the type guard.
    """
    if isinstance(value, bool | np.bool_):
        return False
    return isinstance(value, numbers.Integral if numpy else int)


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a Python int if it is an integer (Python or NumPy, not a bool) in ``[low, high)``.

    Raises:
        ConfigurationError: naming ``name``, for floats (even ``2.0``), strings, bools and out-of-range values.
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be an integer; got the bool {value!r}")
    if not is_integer(value):
        raise ConfigurationError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    number = operator.index(value)
    if low is not None and number < low:
        raise ConfigurationError(f"{name} must be an integer >= {low}; got {number}")
    if high is not None and number >= high:
        raise ConfigurationError(f"{name} must be an integer < {high}; got {number}")
    return number


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite real number > 0 (Python or NumPy, not a bool).

    Raises:
        ConfigurationError: naming ``name``, for bools, non-numbers, NaN, infinities and numbers <= 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigurationError(f"{name} must be a finite number > 0; got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer in ``[0, 2**64)`` (every such seed gives its own random numbers; no other does)."""
    if not is_integer(value):
        raise ConfigurationError(f"{name} must be an integer in [0, 2**64); got {value!r} ({type(value).__name__})")
    seed = operator.index(value)
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigurationError(
            f"{name} must be an integer in [0, 2**64) (the generator hashes 64 bits, so larger seeds would repeat "
            f"smaller ones); got {seed}"
        )
    return seed


def check_counter_range(first: int, count: int, name: str) -> None:
    """Refuse indices ``first .. first + count - 1`` that do not fit the generator's 32-bit counters."""
    if first + count > COUNTER_LIMIT:
        raise ConfigurationError(
            f"{name} {first} .. {first + count - 1} do not fit the generator's 32-bit counters (at most "
            f"{COUNTER_LIMIT - 1}); larger indices would repeat the draws of smaller ones"
        )
