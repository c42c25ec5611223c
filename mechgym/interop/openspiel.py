"""OpenSpiel's normal-form games (matrix and tensor games) as mechgym games (the ``.[openspiel]`` extra).

``import mechgym`` never imports ``pyspiel``: :func:`from_openspiel` and :func:`openspiel_game` import it when
called and, without it, raise an ``ImportError`` naming ``pip install '.[openspiel]'``.

>>> env_id = mechgym.from_openspiel("matrix_pd")  # 'openspiel/matrix_pd-v0'
>>> traces = mechgym.rollout(env_id, n_episodes=8, seed=0)
"""

from __future__ import annotations

import itertools
import math
import re
from types import ModuleType
from typing import Any

import numpy as np

from mechgym.errors import ConfigurationError, suggest
from mechgym.interop.game import DEFAULT_N_ROUNDS, NormalFormGame, game_id, register_game
from mechgym.mechanisms.tabular import MAX_TABULAR_JOINT_ACTIONS

__all__ = ["OPENSPIEL_NAMESPACE", "from_openspiel", "import_pyspiel", "openspiel_game"]

#: The namespace of the ids :func:`from_openspiel` derives from a game's name.
OPENSPIEL_NAMESPACE = "openspiel"


def import_pyspiel() -> ModuleType:
    """``pyspiel``, OpenSpiel's Python module.

    Raises:
        ImportError: OpenSpiel is not installed; the message names the extra that installs it.
    """
    try:
        import pyspiel
    except ImportError as error:
        raise ImportError(
            "OpenSpiel games need the open_spiel package: pip install '.[openspiel]' (or pip install open_spiel)"
        ) from error
    return pyspiel


def _load(pyspiel: ModuleType, game: Any) -> Any:
    if not isinstance(game, str):
        if not isinstance(game, pyspiel.Game):
            raise ConfigurationError(
                f"from_openspiel takes a game name such as 'matrix_pd' or a pyspiel game; got {type(game).__name__}"
            )
        return game
    try:
        return pyspiel.load_game(game)
    except pyspiel.SpielError as error:
        base = game.split("(", 1)[0]
        if base not in pyspiel.registered_names():
            raise ConfigurationError(suggest(base, pyspiel.registered_names(), "OpenSpiel game")) from None
        raise ConfigurationError(f"OpenSpiel cannot load {game!r}: {str(error).splitlines()[0]}") from None


def openspiel_game(game: Any) -> NormalFormGame:
    """The payoffs and action names of an OpenSpiel normal-form game.

    Args:
        game: A name for ``pyspiel.load_game`` (``"matrix_pd"``, ``"matrix_rps"``, ``"nfg_game(filename=...)"``)
            or a loaded ``pyspiel.NormalFormGame`` (a ``MatrixGame`` or a ``TensorGame``, e.g. from
            ``pyspiel.create_matrix_game`` or ``pyspiel.extensive_to_tensor_game``).

    Returns:
        The game: title the game's long name, players ``"Player 0"`` ..., strategies OpenSpiel's action names.

    Raises:
        ImportError: OpenSpiel is not installed.
        ConfigurationError: an unknown name (with suggestions), a game that is not in normal form (extensive-form
            games must be converted first), or one with more than 2**20 strategy profiles.
    """
    pyspiel = import_pyspiel()
    loaded = _load(pyspiel, game)
    name = str(loaded)
    if not isinstance(loaded, pyspiel.NormalFormGame):
        dynamics = str(loaded.get_type().dynamics).rsplit(".", 1)[-1].lower()
        raise ConfigurationError(
            f"{name} is a {dynamics} OpenSpiel game, not a normal-form (matrix or tensor) game; convert it with "
            "pyspiel.extensive_to_tensor_game(game) (its pure strategies become actions) and pass the result"
        )
    state = loaded.new_initial_state()
    n_players = loaded.num_players()
    actions = [list(state.legal_actions(player)) for player in range(n_players)]
    shape = tuple(len(own) for own in actions)
    n_profiles = math.prod(shape)
    if n_profiles > MAX_TABULAR_JOINT_ACTIONS:
        raise ConfigurationError(
            f"{name} has {' x '.join(map(str, shape))} = {n_profiles:,} strategy profiles, more than a mechgym "
            f"tabular game holds ({MAX_TABULAR_JOINT_ACTIONS:,})"
        )
    if isinstance(loaded, pyspiel.MatrixGame):
        payoffs = np.stack([np.asarray(loaded.row_utilities()), np.asarray(loaded.col_utilities())], axis=-1)
    else:
        payoffs = np.array([loaded.get_utilities(list(profile)) for profile in itertools.product(*actions)])
        payoffs = payoffs.reshape((*shape, n_players))
    strategies = tuple(tuple(state.action_to_string(p, a) for a in own) for p, own in enumerate(actions))
    players = tuple(f"Player {p}" for p in range(n_players))
    return NormalFormGame(payoffs, players, strategies, loaded.get_type().long_name, f"OpenSpiel {name}")


def from_openspiel(
    game: Any,
    *,
    env_id: str | None = None,
    n_rounds: int = DEFAULT_N_ROUNDS,
    pad: bool = False,
    replace: bool = False,
) -> str:
    """Register an OpenSpiel normal-form game as a mechgym game and return its id.

    The environment (``mechgym.make(env_id)``) plays a frozen :class:`~mechgym.mechanisms.TabularMechanism`
    holding the game's payoffs (as float32); OpenSpiel's player ``p`` is agent ``p``, its action ``a`` action ``a``.

    Args:
        game: A name for ``pyspiel.load_game`` or a loaded normal-form game (see :func:`openspiel_game`).
        env_id: The id; by default ``openspiel/<name>-v0`` from the name passed, or the loaded game's, and its
            parameters (``"matrix_pd"`` -> ``openspiel/matrix_pd-v0``, ``"nfg_game(filename=/data/pd.nfg)"`` ->
            ``openspiel/nfg_game_filename_pd_nfg-v0``).
        n_rounds: Rounds per episode of the registered game.
        pad: Give players with fewer actions strictly dominated ones (see
            :meth:`~mechgym.interop.NormalFormGame.padded`); by default unequal counts are refused.
        replace: Replace what ``env_id`` holds; by default an id that holds another game is refused.

    Returns:
        The registered id.

    Raises:
        ImportError: OpenSpiel is not installed (``pip install '.[openspiel]'``).
        ConfigurationError: see :func:`openspiel_game` and :func:`~mechgym.interop.register_game`.
    """
    normal_form = openspiel_game(game)
    if env_id is None:
        name = game if isinstance(game, str) else normal_form.comment.removeprefix("OpenSpiel ")
        base, _, parameters = name.partition("(")
        parameters = re.sub(r"[^,=()]*/", "", parameters)  # a file's name, not its directories
        words = [base, *re.findall(r"[A-Za-z0-9]+", parameters)]
        env_id = game_id(OPENSPIEL_NAMESPACE, "_".join(word for word in words if word))
    return register_game(normal_form, env_id, n_rounds=n_rounds, pad=pad, replace=replace)
