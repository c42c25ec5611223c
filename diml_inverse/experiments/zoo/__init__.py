"""The public recovery zoo: ten mechanism families that are not the paper's games, registered as third-party games.

>>> from diml_inverse.experiments.zoo import register_zoo, run_zoo, zoo_config, build_zoo_report
>>> ids = register_zoo()  # zoo/RandomNormalForm-v0, ... (idempotent)
>>> run_zoo(zoo_config(smoke=True), seeds=[0], out="/tmp/zoo"); build_zoo_report("/tmp/zoo")  # doctest: +SKIP

From the command line: ``python -m diml_inverse.experiments zoo --out runs/zoo``.
"""

from diml_inverse.experiments.zoo.catalog import ZOO_GAMES, ZOO_NAMESPACE, ZooGame, register_zoo, zoo_game
from diml_inverse.experiments.zoo.runner import (
    RESULT_COLUMNS,
    TABLE_COLUMNS,
    ZooConfig,
    build_zoo_report,
    run_zoo,
    run_zoo_game,
    zoo_config,
)

__all__ = [
    "RESULT_COLUMNS",
    "TABLE_COLUMNS",
    "ZOO_GAMES",
    "ZOO_NAMESPACE",
    "ZooConfig",
    "ZooGame",
    "build_zoo_report",
    "register_zoo",
    "run_zoo",
    "run_zoo_game",
    "zoo_config",
    "zoo_game",
]
