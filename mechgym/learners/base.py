"""The learner interface: a learning rule as pure tensor functions of a per-agent state.

A learner is a frozen dataclass of hyperparameters. Its state is a tensor ``[..., A]`` per agent, so the
same rule runs for one agent (``[A]``), a population (``[N, A]``) or many episodes at once (``[E, N, A]``).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from mechgym.errors import ConfigurationError, suggest

#: The paper's counterfactual learner shift of the cfkl metric (§6.3): ``(alpha x 0.6, beta x 1.4, epsilon x 1.5)``,
#: epsilon capped at 0.5. :meth:`Learner.shifted` applies it.
DEFAULT_SHIFT: tuple[float, float, float] = (0.6, 1.4, 1.5)


class Learner(ABC):
    """A learning rule: ``initial_state -> policy -> update`` with full or bandit feedback.

    Subclasses are frozen dataclasses whose fields are the rule's hyperparameters.
    """

    name: ClassVar[str]
    feedback: ClassVar[Literal["full", "bandit"]] = "full"

    def initial_state(
        self,
        batch_shape: tuple[int, ...],
        n_actions: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """The state before round 1: ``[*batch_shape, A]``, every entry the rule's ``q0`` (0 if it has none)."""
        return torch.full((*batch_shape, n_actions), float(getattr(self, "q0", 0.0)), device=device, dtype=dtype)

    @abstractmethod
    def log_policy(self, state: Tensor) -> Tensor:
        """Log choice probabilities ``[..., A]`` given the state ``[..., A]``."""

    @abstractmethod
    def update(self, state: Tensor, counterfactual_payoffs: Tensor, actions: Tensor) -> Tensor:
        """The next state from the counterfactual payoffs ``[..., A]`` and own played actions ``[...]``."""

    def shifted(
        self,
        alpha_factor: float = DEFAULT_SHIFT[0],
        beta_factor: float = DEFAULT_SHIFT[1],
        epsilon_factor: float = DEFAULT_SHIFT[2],
    ) -> Learner:
        """The counterfactual-shift learner of the cfkl metric: learning speed scaled by ``alpha_factor``, the
        inverse temperature by ``beta_factor`` and exploration by ``epsilon_factor`` (capped at 0.5), each in the
        rule's own parameters (defaults: :data:`DEFAULT_SHIFT`, the paper's factors). Every rule says what that
        means for its parameters in :meth:`apply_shift`."""
        return self.apply_shift(alpha_factor, beta_factor, epsilon_factor)

    @abstractmethod
    def apply_shift(self, alpha_factor: float, beta_factor: float, epsilon_factor: float) -> Learner:
        """:meth:`shifted` for this rule: a copy with its own parameters scaled by the three factors."""

    def policy(self, state: Tensor) -> Tensor:
        """Choice probabilities ``[..., A]``."""
        return self.log_policy(state).exp()

    def params(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-serialisable dict (stored in trace metadata)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, the inverse of :func:`learner_from_dict`."""
        return {"name": self.name, "params": self.params()}

    def replace(self, **changes: Any) -> Learner:
        """A copy with some hyperparameters changed (e.g. ``learner.replace(beta=1.8)``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def check_hyperparameters(learner: Learner, checks: tuple[tuple[bool, str], ...]) -> None:
    """Raise :class:`ConfigurationError` with the first failed check's message; then store every field as float.

    For the ``__post_init__`` of frozen dataclass learners whose fields are all numbers.
    """
    for ok, message in checks:
        if not ok:
            raise ConfigurationError(message)
    for field in dataclasses.fields(learner):  # type: ignore[arg-type]
        object.__setattr__(learner, field.name, float(getattr(learner, field.name)))


def is_positive(value: float) -> bool:
    """``0 < value < inf``."""
    return value > 0.0 and math.isfinite(value)


#: Learner classes by name; :func:`register_learner` adds more.
LEARNERS: dict[str, type[Learner]] = {}


def register_learner(cls: type[Learner]) -> type[Learner]:
    """Make a learner class loadable by name from trace metadata (usable as a class decorator)."""
    LEARNERS[cls.name] = cls
    return cls


def learner_from_dict(data: dict[str, Any]) -> Learner:
    """Rebuild a learner from :meth:`Learner.to_dict` output."""
    name = data.get("name")
    if not isinstance(name, str) or name not in LEARNERS:
        raise ConfigurationError(suggest(str(name), LEARNERS, "learner"))
    try:
        return LEARNERS[name](**data.get("params", {}))
    except TypeError as error:
        raise ConfigurationError(f"bad parameters for learner {name!r}: {error}") from None
