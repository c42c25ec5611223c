"""The built-in games, as registration data: one record per id over the one :class:`GameFactory`.

``import mechgym`` calls :func:`register_builtins` once, which registers every record of :data:`BUILTIN_ENVS`
with :func:`mechgym.register` (PettingZoo's parallel registry and, as single-agent views, Gymnasium's).
The environments table of ``docs/environments.md`` is :func:`markdown_table` (``mechgym list --markdown``).

>>> from mechgym.envs import BUILTIN_ENVS
>>> [record.env_id for record in BUILTIN_ENVS][:2]
['mechgym/NeuralMechanism-v0', 'mechgym/Congestion-v0']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mechgym.envs.factory import GameFactory, LearnerLike, resolve_learner
from mechgym.learners.logit_q import LogitQ
from mechgym.mechanisms.anonymous import AnonymousCountMechanism
from mechgym.mechanisms.congestion import CongestionMechanism
from mechgym.mechanisms.neural import NeuralJointMechanism
from mechgym.mechanisms.public_goods import PublicGoodsMechanism
from mechgym.registration import register, registered_ids

__all__ = [
    "BUILTIN_ENVS",
    "EnvRecord",
    "GameFactory",
    "LearnerLike",
    "make_anonymous_game_env",
    "make_congestion_env",
    "make_neural_env",
    "make_public_goods_env",
    "markdown_table",
    "register_builtins",
    "resolve_learner",
]


@dataclass(frozen=True)
class EnvRecord:
    """A built-in game.

    Attributes:
        env_id: The registered id, ``"mechgym/Name-vN"``.
        factory: Its entry point (the mechanism class, the default sizes and learner, the pinned options).
        description: One line for the environments table.
    """

    env_id: str
    factory: GameFactory
    description: str


#: ``mechgym/NeuralMechanism-v0`` (paper E1); the sizes are the published code's (the paper's text says 4 x 5).
make_neural_env = GameFactory(NeuralJointMechanism, n_agents=3, n_actions=6, n_rounds=60)
#: ``mechgym/Congestion-v0`` (paper E2); the id pins the toll sign, whatever the class default.
make_congestion_env = GameFactory(
    CongestionMechanism, n_agents=4, n_actions=5, n_rounds=60, options={"pricing": "toll"}
)
#: ``mechgym/PublicGoods-v0`` (paper E3).
make_public_goods_env = GameFactory(PublicGoodsMechanism, n_agents=3, n_actions=7, n_rounds=60)
#: ``mechgym/AnonymousGame-v0`` (paper E4, its smallest scale).
make_anonymous_game_env = GameFactory(
    AnonymousCountMechanism,
    n_agents=40,
    n_actions=10,
    n_rounds=30,
    default_learner=LogitQ(alpha=0.2, beta=6.0, epsilon=0.02),
)

#: The built-in games, in the order of the docs.
BUILTIN_ENVS: tuple[EnvRecord, ...] = (
    EnvRecord(
        "mechgym/NeuralMechanism-v0",
        make_neural_env,
        "an unstructured neural mechanism: a frozen random MLP over the whole joint action (paper E1)",
    ),
    EnvRecord(
        "mechgym/Congestion-v0",
        make_congestion_env,
        "congestion: resources with load-dependent costs and a per-resource toll (paper E2)",
    ),
    EnvRecord(
        "mechgym/PublicGoods-v0",
        make_public_goods_env,
        "public goods: contributions with diminishing returns and a neural subsidy (paper E3)",
    ),
    EnvRecord(
        "mechgym/AnonymousGame-v0",
        make_anonymous_game_env,
        "a large anonymous game: a frozen random MLP of one's action and the others' action shares (paper E4)",
    ),
)


def register_builtins() -> None:
    """Register every game of :data:`BUILTIN_ENVS` that is not registered yet (``import mechgym`` calls it)."""
    known = set(registered_ids())
    for record in BUILTIN_ENVS:
        if record.env_id not in known:
            register(record.env_id, record.factory, record.factory.spec_kwargs())


def _literal(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def markdown_table(records: Sequence[EnvRecord] = BUILTIN_ENVS) -> str:
    """The environments table of ``docs/environments.md``: one row per record, every default from the data.

    Args:
        records: The games to list.

    Returns:
        A Markdown table (id, description, mechanism family and class, ``N x A``, rounds, observation, default
        learner, family options with their defaults), ending in a newline.
    """
    rows = [
        ("id", "game", "mechanism", "N × A", "T", "observation", "default learner", "family options"),
        ("---",) * 8,
    ]
    for record in records:
        factory = record.factory
        mechanism = factory.mechanism
        if mechanism.anonymous:
            observation = f"`({factory.n_actions},)` shares of agents per action"
        else:
            observation = f"`({factory.n_agents * factory.n_actions},)` one-hot joint action"
        options = ", ".join(f"`{name}={_literal(value)}`" for name, value in factory.family_options().items())
        rows.append(
            (
                f"`{record.env_id}`",
                record.description,
                f"`{_literal(mechanism.family)}` (`{mechanism.__name__}`)",
                f"{factory.n_agents} × {factory.n_actions}",
                str(factory.n_rounds),
                observation,
                f"`{factory.default_learner!r}`",
                options or "none",
            )
        )
    return "".join(f"| {' | '.join(row)} |\n" for row in rows)
