"""The zoo's games as data (:data:`ZOO_GAMES`) and :func:`register_zoo`, the one function that registers them.

Each game is a :class:`~mechgym.envs.GameFactory` over a zoo family, registered with :func:`mechgym.register` as any
third-party game would be: ``mechgym.make("zoo/ElFarol-v0", mechanism_seed=s)`` builds the truth of run seed ``s``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from diml_inverse.experiments.configs import E1_E3_LEARNER, E4_LEARNER
from diml_inverse.experiments.zoo import games
from mechgym.envs import GameFactory
from mechgym.learners import LogitQ
from mechgym.mechanisms import Mechanism
from mechgym.registration import register, registered_ids

__all__ = ["ZOO_GAMES", "ZOO_NAMESPACE", "GameKind", "ZooGame", "register_zoo", "zoo_game"]

ZOO_NAMESPACE = "zoo"
GameKind = Literal["small", "anonymous"]


@dataclass(frozen=True)
class ZooGame:
    """One game of the zoo: a family at one size and incentive scale, with its data budget and learner."""

    name: str
    """Name in tables and ``--games`` (the id is ``zoo/<name>-v0``)."""
    mechanism: type[Mechanism]
    """The family (a class of :mod:`diml_inverse.experiments.zoo.games`)."""
    kind: GameKind
    """``"small"`` (non-anonymous, E1–E3's data: 60 x 60, logit-Q 0.25/3/0.06) or ``"anonymous"`` (E4's: 24 x 40,
    logit-Q 0.2/6/0.02)."""
    n_agents: int
    """Agents ``N``."""
    n_actions: int
    """Actions ``A``."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Family options pinned by the registration (e.g. ``{"scale": 0.2}``)."""

    @property
    def env_id(self) -> str:
        """``zoo/<name>-v0``."""
        return f"{ZOO_NAMESPACE}/{self.name}-v0"

    @property
    def learner(self) -> LogitQ:
        """The learner that records the traces (and the game's default learner)."""
        return E1_E3_LEARNER if self.kind == "small" else E4_LEARNER

    @property
    def n_episodes(self) -> int:
        """Episodes recorded per seed (train + test)."""
        return 60 if self.kind == "small" else 24

    @property
    def n_rounds(self) -> int:
        """Rounds per episode."""
        return 60 if self.kind == "small" else 40

    @property
    def scale(self) -> float:
        """The payoff scale (the family's default unless pinned)."""
        return float(self.options.get("scale", 1.0))

    def factory(self) -> GameFactory:
        """The game's :class:`GameFactory`."""
        return GameFactory(
            self.mechanism,
            n_agents=self.n_agents,
            n_actions=self.n_actions,
            n_rounds=self.n_rounds,
            default_learner=self.learner,
            options=dict(self.options),
        )


#: The games, in table order: seven small heterogeneous families, three anonymous ones, and incentive variants.
ZOO_GAMES: tuple[ZooGame, ...] = (
    ZooGame("RandomNormalForm", games.RandomNormalFormMechanism, "small", 3, 5),
    ZooGame("RandomNormalFormWeak", games.RandomNormalFormMechanism, "small", 3, 5, {"scale": 0.2}),
    ZooGame("RandomNormalFormStrong", games.RandomNormalFormMechanism, "small", 3, 5, {"scale": 3.0}),
    ZooGame("Polymatrix", games.PolymatrixMechanism, "small", 4, 4),
    ZooGame("Coordination", games.CoordinationMechanism, "small", 3, 4),
    ZooGame("AntiCoordination", games.AntiCoordinationMechanism, "small", 4, 3),
    ZooGame("ShapleyCostSharing", games.ShapleyCostSharingMechanism, "small", 4, 4),
    ZooGame("PluralityVoting", games.PluralityVotingMechanism, "small", 4, 3),
    ZooGame("ThresholdParticipation", games.ThresholdParticipationMechanism, "small", 4, 3),
    ZooGame("ElFarol", games.ElFarolMechanism, "anonymous", 50, 3),
    ZooGame("ThresholdPublicGood", games.ThresholdPublicGoodMechanism, "anonymous", 30, 4),
    ZooGame("BPRCongestion", games.PolynomialCongestionMechanism, "anonymous", 60, 5),
    ZooGame("BPRCongestionStrong", games.PolynomialCongestionMechanism, "anonymous", 60, 5, {"scale": 3.0}),
)


def zoo_game(name: str) -> ZooGame:
    """The zoo game called ``name``.

    Raises:
        ConfigurationError: an unknown name (with a did-you-mean).
    """
    from mechgym.errors import ConfigurationError, suggest

    for game in ZOO_GAMES:
        if game.name == name:
            return game
    raise ConfigurationError(suggest(name, [g.name for g in ZOO_GAMES], "zoo game"))


def register_zoo() -> list[str]:
    """Register every zoo game with :func:`mechgym.register` (idempotent: ids already registered are left alone).

    Returns:
        The zoo's ids, in table order.
    """
    known = set(registered_ids())
    for game in ZOO_GAMES:
        if game.env_id not in known:
            factory = game.factory()
            register(game.env_id, factory, factory.spec_kwargs())
    return [game.env_id for game in ZOO_GAMES]
