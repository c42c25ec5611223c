"""The mechgym registry, on top of PettingZoo's: ``register``, ``make``, ``spec`` and the registry queries.

This module is machinery only. A game goes into PettingZoo's parallel registry and (as a single-agent view)
into Gymnasium's registry under the same id; :func:`make` checks keyword arguments against the entry point's
signature (with "did you mean" suggestions) and records the ones that rebuild the game in ``env.env_kwargs``.
The built-in games are data in :mod:`mechgym.envs`, registered once by ``import mechgym``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import gymnasium
import numpy as np
import pettingzoo
from pettingzoo.env_registry.exceptions import PettingZooRegistryError

from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError, UnknownEnvironmentError, suggest
from mechgym.learners.base import Learner

EntryPoint = Callable[..., MechanismGameEnv] | str

#: Ids registered through :func:`register`, in registration order (PettingZoo's registry holds other games too).
_MECHGYM_IDS: dict[str, None] = {}

#: Keyword arguments that do not change the game and stay out of ``env.env_kwargs``.
_DISPLAY_KWARGS = frozenset({"render_mode"})


# -- the registry ------------------------------------------------------------------------------------
def _load_entry_point(entry_point: EntryPoint | None) -> Callable[..., Any]:
    if callable(entry_point):
        return entry_point
    if not isinstance(entry_point, str):
        raise ConfigurationError(f"a registered game needs an entry point; got {entry_point!r}")
    module_name, _, attribute = entry_point.partition(":")
    try:
        creator = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(f"cannot load the entry point {entry_point!r}: {error}") from None
    if not callable(creator):
        raise ConfigurationError(f"the entry point {entry_point!r} is not callable; got {type(creator).__name__}")
    return creator


def _parameters(creator: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """Keyword parameters of an entry point (``None`` when it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(creator).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p for name, p in parameters.items() if p.kind in keyword_kinds}


def check_kwargs(owner: str, kwargs: Iterable[str], accepted: Iterable[str] | None) -> None:
    """Refuse a keyword argument that ``owner`` does not accept, suggesting close names.

    Args:
        owner: What takes the arguments, for the message (e.g. ``"'mechgym/Congestion-v0'"``).
        kwargs: The names given.
        accepted: The names accepted; ``None`` accepts any (an entry point with ``**kwargs``).

    Raises:
        ConfigurationError: naming the unknown argument, the close ones ("Did you mean ...?") and the accepted ones.
    """
    if accepted is None:
        return
    known = list(accepted)
    for name in kwargs:
        if name not in known:
            raise ConfigurationError(
                f"{suggest(name, known, 'keyword argument')} (these are the keyword arguments of {owner})"
            )


def _json_copy(kwargs: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A JSON round trip of ``kwargs`` (the form trace metadata stores), or a clear error.

    NumPy scalars become the Python numbers they hold (``np.int64(3)`` is the integer 3).
    """
    kwargs = {name: value.item() if isinstance(value, np.generic) else value for name, value in kwargs.items()}
    for name, value in kwargs.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{what} {name}={value!r} is not JSON-serialisable; keyword arguments of mechgym games are "
                "stored in trace metadata, so pass numbers, strings, booleans, None, lists or dicts"
            ) from None
    copied: dict[str, Any] = json.loads(json.dumps(dict(kwargs)))
    return copied


def _json_defaults(parameters: dict[str, inspect.Parameter] | None) -> dict[str, Any]:
    """The JSON-serialisable defaults of an entry point's signature."""
    defaults: dict[str, Any] = {}
    for name, parameter in (parameters or {}).items():
        if parameter.default is inspect.Parameter.empty or name in _DISPLAY_KWARGS:
            continue
        try:
            json.dumps(parameter.default, allow_nan=False)
        except (TypeError, ValueError):
            continue
        defaults[name] = parameter.default
    return defaults


def _normalise_id(env_id: str) -> str:
    try:
        return pettingzoo.EnvSpec(id=env_id).id
    except PettingZooRegistryError as error:
        raise ConfigurationError(f"{error} (for example 'mynamespace/MyGame-v0')") from None


def register(
    env_id: str,
    entry_point: EntryPoint,
    kwargs: Mapping[str, Any] | None = None,
    *,
    single_agent: bool = True,
) -> None:
    """Register a mechanism game so that :func:`make` (and ``gymnasium.make``) can build it by id.

    The game goes into PettingZoo's parallel registry; with ``single_agent=True`` its
    :class:`~mechgym.single_agent.SingleAgentView` also goes into Gymnasium's registry under the same id.
    Registering an id again replaces it (with a warning from PettingZoo and Gymnasium).

    Args:
        env_id: ``"namespace/Name-vN"``.
        entry_point: A function returning a :class:`MechanismGameEnv`, or ``"module:function"``.
        kwargs: Default keyword arguments of the entry point (JSON-serialisable).
        single_agent: Also register the single-agent Gymnasium view.

    Raises:
        ConfigurationError: on a malformed id, an entry point that is neither callable nor
            ``"module:function"``, or kwargs that are not JSON-serialisable or not accepted by the entry point.

    Example:
        >>> def make_my_game(n_rounds: int = 20, render_mode=None) -> MechanismGameEnv:
        ...     return MechanismGameEnv(MyMechanism().freeze(), n_rounds, render_mode=render_mode)
        >>> mechgym.register("mylab/MyGame-v0", make_my_game)
        >>> env = mechgym.make("mylab/MyGame-v0", n_rounds=10)
    """
    normalised = _normalise_id(env_id)
    if not callable(entry_point) and not (isinstance(entry_point, str) and entry_point.count(":") == 1):
        raise ConfigurationError(
            f"entry_point of {normalised!r} must be a function returning a MechanismGameEnv or a "
            f"'module:function' string; got {entry_point!r}"
        )
    defaults = _json_copy(kwargs or {}, f"default keyword argument of {normalised!r}:")
    if callable(entry_point):
        check_kwargs(repr(normalised), defaults, _parameters(entry_point))
    pettingzoo.register("parallel", normalised, entry_point=entry_point, kwargs=defaults)
    _MECHGYM_IDS[normalised] = None
    if single_agent:
        gymnasium.register(
            id=normalised, entry_point="mechgym.single_agent:make_single_agent_env", kwargs={"env_id": normalised}
        )


def registered_ids() -> list[str]:
    """Every id registered through :func:`register` (built-in and third-party), sorted."""
    return sorted(_MECHGYM_IDS)


def spec(env_id: str) -> pettingzoo.EnvSpec:
    """The PettingZoo ``EnvSpec`` of a mechgym id (an id without ``-vN`` resolves to the latest version).

    Raises:
        UnknownEnvironmentError: if no mechgym game has that id; the message suggests close ids.
    """
    if not isinstance(env_id, str):
        raise UnknownEnvironmentError(
            f"an environment id is a string like 'mechgym/Congestion-v0'; got {env_id!r} ({type(env_id).__name__})"
        )
    try:
        found = pettingzoo.spec("parallel", env_id)
    except PettingZooRegistryError:
        found = None
    if found is not None and found.id in _MECHGYM_IDS:
        return found
    message = suggest(env_id, _MECHGYM_IDS, "mechgym environment id")
    if found is not None:
        message += f" ({found.id!r} is a PettingZoo environment: build it with pettingzoo.make('parallel', ...))"
    elif not difflib.get_close_matches(env_id, list(_MECHGYM_IDS), n=1, cutoff=0.5):
        message += " Third-party games are registered with mechgym.register(...) when their package is imported."
    raise UnknownEnvironmentError(message)


def make(env_id: str, **kwargs: Any) -> MechanismGameEnv:
    """Build a registered mechanism game.

    Args:
        env_id: A registered id, e.g. ``"mechgym/Congestion-v0"`` (see :func:`registered_ids`).
        **kwargs: Overrides of the entry point's keyword arguments (``n_agents``, ``n_actions``,
            ``n_rounds``, ``mechanism_seed``, family-specific ones, ``default_learner``, ``render_mode``...).

    Returns:
        The environment, with ``env.env_id`` set to the registered id and ``env.env_kwargs`` to every
        keyword argument that rebuilds it (signature defaults, then the spec's, then ``kwargs``; a
        ``Learner`` is stored as its ``to_dict()``; ``render_mode`` is left out as it does not change the game).

    Raises:
        UnknownEnvironmentError: for an unknown id (with "did you mean" suggestions).
        ConfigurationError: for keyword arguments the game does not accept (naming those it does), values
            that are not JSON-serialisable, or an entry point that does not return a MechanismGameEnv.

    Example:
        >>> env = mechgym.make("mechgym/Congestion-v0", n_rounds=20, pricing="subsidy")
        >>> env.env_kwargs["pricing"]
        'subsidy'
    """
    env_spec = spec(env_id)
    creator = _load_entry_point(env_spec.entry_point)
    parameters = _parameters(creator)
    check_kwargs(repr(env_spec.id), kwargs, parameters)
    if isinstance(kwargs.get("default_learner"), Learner):
        kwargs["default_learner"] = kwargs["default_learner"].to_dict()
    game_kwargs = {name: value for name, value in kwargs.items() if name not in _DISPLAY_KWARGS}
    game_kwargs = _json_copy(game_kwargs, "keyword argument")
    env = pettingzoo.make("parallel", env_spec, **kwargs)
    if not isinstance(env, MechanismGameEnv):
        raise ConfigurationError(
            f"the entry point of {env_spec.id!r} returned a {type(env).__name__}; mechgym.make needs a MechanismGameEnv"
        )
    env.env_id = env_spec.id
    env.env_kwargs = {**_json_defaults(parameters), **env_spec.kwargs, **game_kwargs}
    return env


def pprint_registry(*, disable_print: bool = False, table: bool = False) -> str | None:
    """Print every mechgym id with its mechanism family and default sizes (what ``mechgym list`` shows).

    An id whose entry point cannot be built with its defaults is listed with the reason (after the others in
    the table).

    Args:
        disable_print: Return the text instead of printing it.
        table: One aligned row per id under the header ``id family N A rounds``, sorted by id; otherwise one
            line per id with the default learner too, in registration order.
    """
    rows: list[tuple[str, ...]] = []
    lines: list[str] = []
    broken: list[str] = []
    for env_id in sorted(registered_ids()) if table else registered_ids():
        try:
            env = make(env_id)
        except Exception as error:  # a third-party entry point may fail to build; still list its id
            (broken if table else lines).append(
                f"{env_id}  (cannot be built with its defaults: {' '.join(str(error).split())})"
            )
            continue
        family = env.mechanism.family or type(env.mechanism).__name__
        rows.append((env_id, family, str(env.n_agents), str(env.n_actions), str(env.n_rounds)))
        learner = env.default_learner.to_dict()
        params = ", ".join(
            f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in learner["params"].items()
        )
        lines.append(
            f"{env_id:<28} {family:<14} {env.n_agents:>3} agents x {env.n_actions:>2} actions, "
            f"{env.n_rounds:>3} rounds, learner {learner['name']}({params})"
        )
        env.close()
    if table:
        cells = [("id", "family", "N", "A", "rounds"), *rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells
        ]
        lines += broken
    text = "\n".join(lines)
    if disable_print:
        return text
    print(text)
    return None
