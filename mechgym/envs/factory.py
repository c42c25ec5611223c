"""The one entry point of the built-in games: a mechanism class with its registered sizes, as a game factory."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError
from mechgym.learners.base import Learner, learner_from_dict
from mechgym.learners.logit_q import LogitQ
from mechgym.mechanisms.base import Mechanism
from mechgym.registration import check_kwargs
from mechgym.validation import check_int

LearnerLike = Learner | Mapping[str, Any] | None

#: Constructor parameters the factory sets itself (``seed`` comes from ``mechanism_seed``).
_MECHANISM_OWN = ("self", "n_agents", "n_actions", "seed")

#: The keyword arguments every game takes besides its sizes and the family options: (annotation, default).
_GAME_OPTIONS: dict[str, tuple[str, Any]] = {
    "default_learner": ("Learner | Mapping[str, Any] | None", None),
    "counterfactual_info": ("bool", True),
    "render_mode": ("RenderMode | None", None),
}

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def resolve_learner(learner: LearnerLike, default: Learner) -> Learner:
    """A learner from a :class:`Learner`, its :meth:`Learner.to_dict` form, or ``None`` (``default``).

    Raises:
        ConfigurationError: for anything else, or a dict that names no registered learner.
    """
    if learner is None:
        return default
    if isinstance(learner, Learner):
        return learner
    if isinstance(learner, Mapping):
        return learner_from_dict(dict(learner))
    raise ConfigurationError(
        f"a learner must be a mechgym Learner, a dict like {LogitQ().to_dict()} or None; got {type(learner).__name__}"
    )


@dataclass(frozen=True, eq=False)  # hashed by identity: PettingZoo caches entry points
class GameFactory:
    """Builds a :class:`MechanismGameEnv` over a ``mechanism`` class: the entry point of every built-in game.

    Calling it with keyword arguments builds ``mechanism(n_agents=..., n_actions=..., seed=mechanism_seed,
    **family_options)``, freezes it and wraps it in a :class:`MechanismGameEnv` with ``n_rounds`` rounds. Its
    keyword arguments, in the order of :attr:`__signature__` (which :func:`mechgym.make` reads to check and
    record them), are ``n_agents``, ``n_actions``, ``n_rounds``, ``mechanism_seed`` (``0`` unless given; when
    the constructor takes a ``seed``), the constructor's other parameters (the family options, with the
    constructor's defaults unless ``options`` pins them), ``default_learner``, ``counterfactual_info`` and
    ``render_mode``.

    Attributes:
        mechanism: A :class:`~mechgym.mechanisms.Mechanism` subclass whose constructor takes ``n_agents`` and
            ``n_actions`` and names every other parameter (no ``**kwargs``).
        n_agents: Default agents ``N``.
        n_actions: Default actions ``A``.
        n_rounds: Default rounds ``T`` per episode.
        default_learner: The game's learner when ``default_learner=None`` is passed.
        options: Family options the game pins, overriding the constructor's defaults (and recorded in the
            registered spec's kwargs), e.g. ``{"pricing": "toll"}``.

    Raises:
        ConfigurationError: a mechanism class the factory cannot drive, bad default counts, or unknown options.

    Example:
        >>> make_minority_env = GameFactory(MinorityGame, n_agents=5, n_actions=2, n_rounds=40)
        >>> mechgym.register("mylab/Minority-v0", make_minority_env, make_minority_env.spec_kwargs())
    """

    mechanism: type[Mechanism]
    n_agents: int
    n_actions: int
    n_rounds: int
    default_learner: Learner = field(default_factory=LogitQ)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))  # read-only, like the rest
        if not (isinstance(self.mechanism, type) and issubclass(self.mechanism, Mechanism)):
            raise ConfigurationError(f"GameFactory needs a Mechanism subclass; got {self.mechanism!r}")
        for name in ("n_agents", "n_actions", "n_rounds"):
            check_int(getattr(self, name), name, low=1)
        if not isinstance(self.default_learner, Learner):
            raise ConfigurationError(f"default_learner must be a mechgym Learner; got {self.default_learner!r}")
        constructor = self._constructor()
        missing = [name for name in ("n_agents", "n_actions") if name not in constructor]
        if missing or any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in constructor.values()):
            name = self.mechanism.__name__
            raise ConfigurationError(
                f"GameFactory needs a constructor {name}(n_agents, n_actions, ...) that names every parameter "
                f"(no *args or **kwargs); got {name}{inspect.signature(self.mechanism)}"
            )
        clashes = sorted(set(constructor) & {"n_rounds", "mechanism_seed", *_GAME_OPTIONS})
        if clashes:
            raise ConfigurationError(
                f"{self.mechanism.__name__}'s parameters {clashes} clash with the game's keyword arguments"
            )
        check_kwargs(f"{self.mechanism.__name__}'s options", self.options, self._family_parameters())

    def _constructor(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.mechanism).parameters)

    def _family_parameters(self) -> dict[str, inspect.Parameter]:
        return {name: p for name, p in self._constructor().items() if name not in _MECHANISM_OWN}

    @functools.cached_property
    def __signature__(self) -> inspect.Signature:
        """The factory's keyword arguments with their defaults (what :func:`mechgym.make` checks and records)."""
        sizes = [
            inspect.Parameter("n_agents", _KEYWORD, default=self.n_agents, annotation="int"),
            inspect.Parameter("n_actions", _KEYWORD, default=self.n_actions, annotation="int"),
            inspect.Parameter("n_rounds", _KEYWORD, default=self.n_rounds, annotation="int"),
        ]
        if "seed" in self._constructor():
            sizes.append(inspect.Parameter("mechanism_seed", _KEYWORD, default=0, annotation="int"))
        family = [
            inspect.Parameter(name, _KEYWORD, default=self.options.get(name, p.default), annotation=p.annotation)
            for name, p in self._family_parameters().items()
        ]
        game = [
            inspect.Parameter(name, _KEYWORD, default=default, annotation=annotation)
            for name, (annotation, default) in _GAME_OPTIONS.items()
        ]
        return inspect.Signature([*sizes, *family, *game], return_annotation="MechanismGameEnv")

    def spec_kwargs(self) -> dict[str, Any]:
        """The kwargs to register the game with: its sizes, ``mechanism_seed`` and the pinned options."""
        parameters = self.__signature__.parameters
        return {
            **{
                name: parameters[name].default
                for name in ("n_agents", "n_actions", "n_rounds", "mechanism_seed")
                if name in parameters
            },
            **self.options,
        }

    def family_options(self) -> dict[str, Any]:
        """The family options and their defaults (the constructor's, or the pinned ones)."""
        parameters = self.__signature__.parameters
        return {name: parameters[name].default for name in self._family_parameters()}

    def __call__(self, **kwargs: Any) -> MechanismGameEnv:
        """Build the game; see the class docstring for the keyword arguments.

        Raises:
            ConfigurationError: an unknown keyword argument (with suggestions), a missing required family
                option, or a value the mechanism or the environment refuses.
        """
        parameters = self.__signature__.parameters
        check_kwargs(f"GameFactory({self.mechanism.__name__})", kwargs, parameters)
        values = {name: p.default for name, p in parameters.items()} | kwargs
        missing = [name for name, value in values.items() if value is inspect.Parameter.empty]
        if missing:
            raise ConfigurationError(f"GameFactory({self.mechanism.__name__}) needs the keyword arguments {missing}")
        seed = {"seed": values["mechanism_seed"]} if "mechanism_seed" in values else {}
        mechanism = self.mechanism(
            n_agents=values["n_agents"],
            n_actions=values["n_actions"],
            **seed,
            **{name: values[name] for name in self._family_parameters()},
        )
        return MechanismGameEnv(
            mechanism.freeze(),
            values["n_rounds"],
            default_learner=resolve_learner(values["default_learner"], self.default_learner),
            counterfactual_info=values["counterfactual_info"],
            render_mode=values["render_mode"],
        )
