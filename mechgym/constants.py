"""Constant tensors made once per key: the index tables of payoff-table gathers, the likelihood filter's matrices.

A training step of a small game is a few milliseconds of small operations, and a dozen of them used to rebuild
tensors that depend only on sizes, a learner's constants, a dtype and a device. :func:`constant_tensors` caches
such a builder on exactly those arguments (they must be hashable and must be everything the result depends on).

The cached tensors are shared and read-only by contract: callers never modify them in place. They are built
outside autograd and inference mode, so they can be saved for any later backward pass. Inside a
``torch.func`` transform (``grad``, ``vmap``, ``hessian``: every tensor made there is wrapped for that
transform and must not outlive it) and while ``torch.compile`` traces, the builder runs uncached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["constant_tensors"]

R = TypeVar("R")


def constant_tensors(maxsize: int) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Decorate a builder of constant tensors: its results are kept per arguments (at most ``maxsize`` keys).

    Args:
        maxsize: How many argument tuples to keep (least recently used first out).
    """

    def decorate(build: Callable[..., R]) -> Callable[..., R]:
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args: Any) -> R:
            with torch.inference_mode(False), torch.no_grad():
                return build(*args)

        @functools.wraps(build)
        def call(*args: Any) -> R:
            transformed = torch._C._functorch.peek_interpreter_stack() is not None
            if transformed or torch.compiler.is_compiling():
                return build(*args)
            return cached(*args)

        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call

    return decorate
