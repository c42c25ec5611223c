"""A finite game in normal form (:class:`NormalFormGame`), its mechanism, and its registration as a mechgym game.

The readers of other tools' games (:mod:`mechgym.interop.nfg`, :mod:`mechgym.interop.openspiel`) build a
:class:`NormalFormGame`; :func:`register_game` turns it into a registered id whose environment plays a frozen
:class:`~mechgym.mechanisms.TabularMechanism` holding the game's payoffs.

Orders: ``payoffs[s_1, ..., s_N, i]`` is player ``i``'s payoff when player ``j`` plays strategy ``s_j`` (0-based);
the mechanism's table ``[A**N, N]`` lists the joint actions with agent 0 most significant (the order of
:func:`~mechgym.mechanisms.all_joint_actions`), which is ``payoffs.reshape(-1, N)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mechgym.env import MechanismGameEnv, RenderMode
from mechgym.envs.factory import resolve_learner
from mechgym.errors import ConfigurationError
from mechgym.learners.base import Learner
from mechgym.learners.logit_q import LogitQ
from mechgym.mechanisms import Mechanism, TabularMechanism
from mechgym.mechanisms.tabular import MAX_TABULAR_JOINT_ACTIONS
from mechgym.memory import check_memory
from mechgym.registration import register, registered_ids, spec
from mechgym.validation import check_int

__all__ = ["DEFAULT_N_ROUNDS", "NormalFormEntryPoint", "NormalFormGame", "game_id", "register_game"]

#: Rounds per episode of an imported game unless ``n_rounds`` says otherwise (the built-in small games' horizon).
DEFAULT_N_ROUNDS = 60
#: The label of the ``k``-th strategy added by :meth:`NormalFormGame.padded` (1-based).
PADDING_LABEL = "(padding {k})"


def _labels(given: Any, count: int, what: str) -> tuple[str, ...]:
    labels = tuple(str(k + 1) for k in range(count)) if given is None or len(given) == 0 else tuple(given)
    if len(labels) != count or not all(isinstance(label, str) for label in labels):
        raise ConfigurationError(f"{what} must be {count} strings; got {given!r}")
    return labels


@dataclass(frozen=True, eq=False)
class NormalFormGame:
    """A finite game in normal form: players, their strategies and every player's payoff at every profile.

    Attributes:
        payoffs: ``float64 [S_1, ..., S_N, N]`` (read-only): ``payoffs[s_1, ..., s_N, i]`` is player ``i``'s payoff
            when each player ``j`` plays its strategy ``s_j``.
        players: The ``N`` player labels (default ``"1"`` ... ``"N"``).
        strategies: Per player, its ``S_i`` strategy labels (default ``"1"`` ... ``"S_i"``).
        title: The game's title.
        comment: A free-text comment (Gambit files carry one).

    Raises:
        ConfigurationError: payoffs that are not finite numbers of shape ``[S_1, ..., S_N, N]``, or labels that
            do not match that shape.
    """

    payoffs: np.ndarray
    players: tuple[str, ...] = ()
    strategies: tuple[tuple[str, ...], ...] = ()
    title: str = ""
    comment: str = ""
    shape: tuple[int, ...] = field(init=False)
    """``(S_1, ..., S_N)``, the strategy counts."""

    def __post_init__(self) -> None:
        try:
            payoffs = np.array(self.payoffs, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"payoffs must be an array of numbers; got {error}") from None
        if payoffs.ndim < 2 or payoffs.shape[-1] != payoffs.ndim - 1 or payoffs.size == 0:
            raise ConfigurationError(
                "payoffs must have shape [S_1, ..., S_N, N] (one entry per player at every profile, S_i >= 1); "
                f"got shape {payoffs.shape}"
            )
        if not np.isfinite(payoffs).all():
            raise ConfigurationError("payoffs must be finite numbers; got NaN or infinity")
        payoffs.setflags(write=False)
        shape = tuple(int(s) for s in payoffs.shape[:-1])
        players = _labels(self.players, len(shape), "players")
        if len(self.strategies) not in (0, len(shape)):
            raise ConfigurationError(
                f"strategies needs one tuple of labels per player ({len(shape)}); got {self.strategies!r}"
            )
        strategies = tuple(
            _labels(self.strategies[i] if self.strategies else None, s, f"the strategies of player {players[i]!r}")
            for i, s in enumerate(shape)
        )
        for name, text in (("title", self.title), ("comment", self.comment)):
            if not isinstance(text, str):
                raise ConfigurationError(f"{name} must be a string; got {text!r}")
        checked: dict[str, Any] = {"payoffs": payoffs, "players": players, "strategies": strategies, "shape": shape}
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def n_players(self) -> int:
        """``N``."""
        return len(self.shape)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NormalFormGame):
            return NotImplemented
        same_labels = (self.players, self.strategies, self.title, self.comment) == (
            other.players,
            other.strategies,
            other.title,
            other.comment,
        )
        return same_labels and bool(np.array_equal(self.payoffs, other.payoffs))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking content compared by value

    def __repr__(self) -> str:
        sizes = " x ".join(map(str, self.shape))
        return f"NormalFormGame({self.title!r}, players={list(self.players)}, strategies {sizes})"

    def padded(self) -> NormalFormGame:
        """The game with every player given as many strategies as the largest count, the added ones dominated.

        mechgym games give every agent the same number of actions. Player ``i``'s added strategies (labelled
        ``"(padding k)"``) pay ``i`` the payoff ``min_i - 2 g_i``, and a real strategy of ``i`` pays ``min_i - g_i``
        against a profile where another player pads, with ``min_i`` player ``i``'s lowest payoff in the game and
        ``g_i`` its payoff range (at least 1). Whatever the others play, an added strategy pays ``i`` at least
        ``g_i`` less than each real one: it is strictly dominated and no equilibrium uses it. Learners still try
        it while they explore, so the padded game is played a little differently from the original.

        Returns:
            ``self`` if every player already has the same count; otherwise the padded game.
        """
        n_actions = max(self.shape)
        if all(s == n_actions for s in self.shape):
            return self
        n = self.n_players
        _check_table_size(n_actions, n, self.title)
        low = self.payoffs.reshape(-1, n).min(axis=0)
        gap = np.maximum(self.payoffs.reshape(-1, n).max(axis=0) - low, 1.0)
        grid = np.indices((n_actions,) * n)  # [N, A, ..., A]
        is_padding = np.stack([grid[j] >= self.shape[j] for j in range(n)], axis=-1)  # [A, ..., A, N]
        payoffs = np.where(is_padding, low - 2 * gap, low - gap)  # own padding, or someone else's
        payoffs[tuple(slice(0, s) for s in self.shape)] = self.payoffs
        strategies = tuple(
            (*labels, *(PADDING_LABEL.format(k=k + 1) for k in range(n_actions - len(labels))))
            for labels in self.strategies
        )
        return NormalFormGame(payoffs, self.players, strategies, self.title, self.comment)

    def to_mechanism(self) -> TabularMechanism:
        """The game as a frozen :class:`~mechgym.mechanisms.TabularMechanism` (float32 payoffs).

        Raises:
            ConfigurationError: fewer than 2 players, players with different strategy counts (use
                :meth:`padded`), a single strategy each, or a table past the tabular limit.
            MemoryBudgetError: a table that does not fit in memory.
        """
        n = self.n_players
        if n < 2:
            raise ConfigurationError(f"a mechgym game needs at least 2 players; {self.title!r} has {n}")
        if len(set(self.shape)) != 1:
            raise ConfigurationError(
                f"the players of {self.title!r} have different numbers of strategies {list(self.shape)}, and every "
                "mechgym agent has the same number of actions; pass pad=True (or use game.padded()) to add "
                "strictly dominated strategies up to the largest count"
            )
        if self.shape[0] < 2:
            raise ConfigurationError(f"every player of {self.title!r} has one strategy: there is nothing to learn")
        _check_table_size(self.shape[0], n, self.title)
        mechanism = TabularMechanism(n_agents=n, n_actions=self.shape[0], init="zeros")
        with torch.no_grad():
            mechanism.table.copy_(torch.tensor(self.payoffs.reshape(-1, n)))
        return mechanism.freeze()  # type: ignore[return-value]  # freeze returns self

    @classmethod
    def from_mechanism(
        cls, mechanism: Mechanism, *, title: str = "", players: tuple[str, ...] = (), comment: str = ""
    ) -> NormalFormGame:
        """The normal form of any mechanism: its payoff table, each value the shortest decimal of its dtype.

        Args:
            mechanism: A mechgym mechanism small enough for a payoff table.
            title: The game's title.
            players: Player labels (default ``"1"`` ... ``"N"``).
            comment: A comment.

        Raises:
            ConfigurationError: a mechanism with too many joint actions for a table.
        """
        if not isinstance(mechanism, Mechanism):
            raise ConfigurationError(f"expected a mechgym Mechanism; got {type(mechanism).__name__}")
        n, a = mechanism.n_agents, mechanism.n_actions
        _check_table_size(a, n, title or type(mechanism).__name__)
        with torch.no_grad():
            table = mechanism.payoff_table().detach().cpu().numpy()
        # The shortest decimal that reads back as the same float32 (0.1, not 0.10000000149011612).
        payoffs = table.astype(str).astype(np.float64) if table.dtype == np.float32 else table.astype(np.float64)
        return cls(payoffs.reshape((a,) * n + (n,)), players, (), title, comment)


def _check_table_size(n_actions: int, n_players: int, title: str) -> None:
    n_joint = n_actions**n_players
    if n_joint > MAX_TABULAR_JOINT_ACTIONS:
        raise ConfigurationError(
            f"{title or 'the game'} has {n_actions}**{n_players} = {n_joint:,} joint actions, more than a mechgym "
            f"tabular game holds ({MAX_TABULAR_JOINT_ACTIONS:,})"
        )
    check_memory(16.0 * n_joint * n_players, f"the payoff table of {title or 'the game'}", option=None)


@dataclass(frozen=True, eq=False)  # hashed by identity: PettingZoo caches entry points
class NormalFormEntryPoint:
    """The registered entry point of an imported game: builds its environment over the game's mechanism.

    Attributes:
        game: The game (with equal strategy counts).
    """

    game: NormalFormGame

    def __call__(
        self,
        *,
        n_rounds: int = DEFAULT_N_ROUNDS,
        default_learner: Learner | dict[str, Any] | None = None,
        counterfactual_info: bool = True,
        render_mode: RenderMode | None = None,
    ) -> MechanismGameEnv:
        """Build the game with ``n_rounds`` rounds per episode (the other arguments as in every mechgym game)."""
        return MechanismGameEnv(
            self.game.to_mechanism(),
            n_rounds,
            default_learner=resolve_learner(default_learner, LogitQ()),
            counterfactual_info=counterfactual_info,
            render_mode=render_mode,
        )


def game_id(namespace: str, name: str) -> str:
    """``namespace/<Name>-v0`` with ``name`` reduced to letters, digits and ``_`` (``"Prisoner's dilemma"`` ->
    ``"PrisonersDilemma"``; ``"matrix_pd"`` stays).
    """
    words = re.findall(r"[A-Za-z0-9_]+", name.replace("'", ""))
    slug = words[0] if len(words) == 1 else "".join(word[:1].upper() + word[1:] for word in words)
    return f"{namespace}/{slug or 'Game'}-v0"


def register_game(
    game: NormalFormGame, env_id: str, *, n_rounds: int = DEFAULT_N_ROUNDS, pad: bool = False, replace: bool = False
) -> str:
    """Register ``game`` under ``env_id``; ``mechgym.make(env_id)`` then builds its environment.

    Registering the same game under the same id again does nothing; another game under a taken id is refused
    unless ``replace``.

    Args:
        game: The game.
        env_id: ``"namespace/Name-vN"``.
        n_rounds: The default rounds per episode of the registered game.
        pad: Give players with fewer strategies strictly dominated ones (:meth:`NormalFormGame.padded`) instead
            of refusing unequal counts.
        replace: Replace whatever ``env_id`` holds (PettingZoo and Gymnasium warn when an id is registered again).

    Returns:
        ``env_id`` as registered.

    Raises:
        ConfigurationError: unequal strategy counts without ``pad``, a game mechgym cannot play (see
            :meth:`NormalFormGame.to_mechanism`), a malformed id, or an id that holds another game.
    """
    check_int(n_rounds, "n_rounds", low=1)
    for name, flag in (("pad", pad), ("replace", replace)):
        if not isinstance(flag, bool):
            raise ConfigurationError(f"{name} must be True or False; got {flag!r}")
    playable = game.padded() if pad else game
    playable.to_mechanism()  # refuse what cannot be played now, not at the first make()
    entry = NormalFormEntryPoint(playable)
    if env_id in registered_ids() and not replace:
        existing = spec(env_id)
        if not (isinstance(existing.entry_point, NormalFormEntryPoint) and existing.entry_point.game == playable):
            raise ConfigurationError(
                f"{env_id!r} is registered already for another game; pass another env_id= to register this one, "
                "or replace=True to replace it"
            )
        if existing.kwargs.get("n_rounds") == n_rounds:
            return env_id
    register(env_id, entry, {"n_rounds": n_rounds})
    return str(spec(env_id).id)
