"""Games of the game-theory ecosystem as mechgym games: Gambit's ``.nfg`` files and OpenSpiel's normal-form games.

>>> env_id = mechgym.from_nfg("game.nfg")           # 'nfg/<Title>-v0', a TabularMechanism game
>>> env_id = mechgym.from_openspiel("matrix_pd")    # 'openspiel/matrix_pd-v0' (the .[openspiel] extra)
>>> mechgym.to_nfg(mechgym.make(env_id), "pd.nfg")   # any small mechgym game as an .nfg file

Both register the game (:func:`register_game`) and return its id, which ``mechgym.make``, ``mechgym.rollout`` and
``diml_inverse.fit`` take like any other. ``pyspiel`` is imported only by the OpenSpiel functions.
"""

from mechgym.interop.game import DEFAULT_N_ROUNDS, NormalFormEntryPoint, NormalFormGame, game_id, register_game
from mechgym.interop.nfg import (
    NFG_NAMESPACE,
    NfgFormatError,
    format_nfg,
    from_nfg,
    parse_nfg,
    read_nfg,
    to_nfg,
    write_nfg,
)
from mechgym.interop.openspiel import OPENSPIEL_NAMESPACE, from_openspiel, import_pyspiel, openspiel_game

__all__ = [
    "DEFAULT_N_ROUNDS",
    "NFG_NAMESPACE",
    "OPENSPIEL_NAMESPACE",
    "NfgFormatError",
    "NormalFormEntryPoint",
    "NormalFormGame",
    "format_nfg",
    "from_nfg",
    "from_openspiel",
    "game_id",
    "import_pyspiel",
    "openspiel_game",
    "parse_nfg",
    "read_nfg",
    "register_game",
    "to_nfg",
    "write_nfg",
]
