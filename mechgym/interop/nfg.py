"""Gambit's ``.nfg`` strategic-game files: read (:func:`read_nfg`, :func:`from_nfg`) and write (:func:`to_nfg`).

Both variants of the format are read: the *payoff* version (strategy counts ``{ 3 2 }``, then every profile's
payoffs) and the *outcome* version (strategy labels ``{ { "U" "D" } { "L" "R" } }``, a list of outcomes
``{ "label" 1, 0 }``, then one outcome number per profile, ``0`` for the null outcome that pays everyone 0).
Profiles are listed with player 1's strategy varying fastest. Whitespace is not significant, commas between
payoffs are optional, and numbers are integers, decimals (``-.5``, ``1e-3``) or rationals (``1/3``), read as the
nearest float64. Text is in double quotes, ``\\"`` and ``\\\\`` escaping a quote and a backslash.

>>> env_id = mechgym.from_nfg("game.nfg")  # 'nfg/<Title>-v0'
>>> env = mechgym.make(env_id)
>>> mechgym.to_nfg(env, "copy.nfg")
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO, Literal

import numpy as np

from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError, MechGymError
from mechgym.files import PathLike, atomic_write
from mechgym.interop.game import DEFAULT_N_ROUNDS, NormalFormEntryPoint, NormalFormGame, game_id, register_game
from mechgym.mechanisms import Mechanism
from mechgym.memory import check_memory
from mechgym.registration import spec

__all__ = ["NFG_NAMESPACE", "NfgFormatError", "format_nfg", "from_nfg", "parse_nfg", "read_nfg", "to_nfg", "write_nfg"]

#: The namespace of the ids :func:`from_nfg` derives from a game's title.
NFG_NAMESPACE = "nfg"
NfgVariant = Literal["outcome", "payoff"]

_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:/\d+)?)(?![\w.])
      | (?P<word>[A-Za-z_][\w.]*)
      | (?P<brace>[{}])
      | (?P<comma>,)
      | (?P<unclosed>")
      | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)


class NfgFormatError(MechGymError):
    """A ``.nfg`` file that is malformed or of a variant mechgym does not read; the message gives line and column."""


class _Token:
    __slots__ = ("column", "kind", "line", "text")

    def __init__(self, kind: str, text: str, line: int, column: int) -> None:
        self.kind, self.text, self.line, self.column = kind, text, line, column

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the file"
        shown = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return f"{shown!r}"


class _Reader:
    """Tokens of an ``.nfg`` text with their positions, and the checks of the grammar."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self._tokens = self._scan(text)
        self.current = next(self._tokens)

    def _scan(self, text: str) -> Iterator[_Token]:
        line, line_start = 1, 0
        for match in _TOKEN.finditer(text):
            kind, value = str(match.lastgroup), match.group()
            column = match.start() - line_start + 1
            if kind == "unclosed":
                raise NfgFormatError(f"{self.source}:{line}:{column}: a text in double quotes is never closed")
            if kind == "other":
                raise NfgFormatError(
                    f"{self.source}:{line}:{column}: unexpected character {value!r} (expected a number, a text "
                    'in double quotes, "{", "}" or ",")'
                )
            if kind != "space":
                yield _Token(kind, value, line, column)
            if "\n" in value:
                line += value.count("\n")
                line_start = match.start() + value.rindex("\n") + 1
        yield _Token("end", "", line, len(text) - line_start + 1)

    def fail(self, expected: str, token: _Token | None = None) -> NfgFormatError:
        token = token or self.current
        return NfgFormatError(f"{self.source}:{token.line}:{token.column}: expected {expected}; got {token.describe()}")

    def advance(self) -> _Token:
        token, self.current = self.current, next(self._tokens)
        return token

    def take(self, kind: str, expected: str, text: str | None = None) -> _Token:
        if self.current.kind != kind or (text is not None and self.current.text != text):
            raise self.fail(expected)
        return self.advance()

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.current.kind == kind and (text is None or self.current.text == text)

    def string(self, expected: str) -> str:
        raw = self.take("string", expected).text[1:-1]
        return re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL)

    def number(self, expected: str) -> float:
        if self.at("comma"):
            self.advance()  # commas between numbers are optional separators
        token = self.take("number", expected)
        try:
            return float(Fraction(token.text))
        except ZeroDivisionError:
            raise self.fail("a number (this rational divides by zero)", token) from None
        except OverflowError:
            raise self.fail("a number within the range of a float64", token) from None

    def integer(self, expected: str, low: int) -> int:
        token = self.current
        value = self.number(expected)
        if not value.is_integer() or value < low:
            raise self.fail(expected, token)
        return int(value)


def _header(reader: _Reader) -> tuple[str, tuple[str, ...]]:
    first = reader.current
    if first.kind == "word" and first.text == "EFG":
        raise NfgFormatError(
            f"{reader.source}:1:1: this is an extensive-form game (EFG); mechgym reads strategic games (NFG). Convert "
            "it to its normal form first, e.g. with pygambit or pyspiel.extensive_to_tensor_game"
        )
    reader.take("word", 'the file to start with "NFG 1 R" (a Gambit strategic game)', "NFG")
    version = reader.current
    if not (version.kind == "number" and version.text == "1"):
        raise reader.fail('format version 1 ("NFG 1 R"), the only version of the strategic-game format')
    reader.advance()
    if not (reader.current.kind == "word" and reader.current.text in ("R", "D")):
        raise reader.fail('the number type "R" (rational) or "D" (decimal)')
    reader.advance()
    title = reader.string('the game\'s title in double quotes, e.g. "My game"')
    reader.take("brace", 'the players\' labels in braces, e.g. { "Player 1" "Player 2" }', "{")
    players = []
    while not reader.at("brace", "}"):
        players.append(reader.string('a player\'s label in double quotes or "}"'))
    reader.advance()
    if len(players) == 0:
        raise reader.fail("at least one player")
    return title, tuple(players)


def _strategies(reader: _Reader, n_players: int) -> tuple[tuple[int, ...], tuple[tuple[str, ...], ...]]:
    reader.take("brace", 'the strategies: counts { 2 2 } or labels { { "U" "D" } { "L" "R" } }', "{")
    if reader.at("brace", "{"):  # labels per player
        labels = []
        for k in range(n_players):
            reader.take("brace", f'the strategy labels of player {k + 1}, e.g. {{ "U" "D" }}', "{")
            own = []
            while not reader.at("brace", "}"):
                own.append(reader.string('a strategy label in double quotes or "}"'))
            if not own:
                raise reader.fail(f"at least one strategy for player {k + 1}")
            reader.advance()
            labels.append(tuple(own))
        reader.take("brace", f'"}}" after the strategies of the {n_players} players', "}")
        return tuple(len(own) for own in labels), tuple(labels)
    counts = tuple(
        reader.integer(f"the number of strategies of player {k + 1} (an integer >= 1)", 1) for k in range(n_players)
    )
    reader.take("brace", f'"}}" after the strategy counts of the {n_players} players', "}")
    return counts, ()


def _outcome_payoffs(reader: _Reader, n_players: int, n_profiles: int) -> np.ndarray:
    reader.advance()  # the "{" of the outcome list
    outcomes = [np.zeros(n_players)]  # outcome 0: the null outcome
    while not reader.at("brace", "}"):
        reader.take("brace", 'an outcome { "label" payoff, payoff, ... } or "}"', "{")
        if reader.at("string"):
            reader.advance()
        values = [
            reader.number(f"payoff {i + 1} of the {n_players} of outcome {len(outcomes)}") for i in range(n_players)
        ]
        if reader.at("comma"):
            reader.advance()
        reader.take("brace", f'"}}": outcome {len(outcomes)} has {n_players} payoffs, one per player', "}")
        outcomes.append(np.array(values))
    reader.advance()
    table = np.stack(outcomes)
    index = np.empty(n_profiles, dtype=np.int64)
    for k in range(n_profiles):
        token = reader.current
        index[k] = reader.integer(
            f"the outcome of profile {k + 1} of {n_profiles} (an integer in [0, {len(outcomes) - 1}])", 0
        )
        if index[k] >= len(outcomes):
            raise reader.fail(f"an outcome number in [0, {len(outcomes) - 1}] for profile {k + 1}", token)
    return table[index]


def parse_nfg(text: str, source: str = "<string>") -> NormalFormGame:
    """Parse the text of a Gambit ``.nfg`` file (either variant; see the module docstring).

    Args:
        text: The file's content.
        source: Its name in error messages.

    Returns:
        The game; its payoffs are indexed ``[s_1, ..., s_N, i]`` with 0-based strategies.

    Raises:
        NfgFormatError: malformed text (``source:line:column: expected ...; got ...``), an extensive-form file or
            another version of the format.
        MemoryBudgetError: a payoff table too large for this machine's memory.
    """
    reader = _Reader(text, source)
    title, players = _header(reader)
    n = len(players)
    shape, labels = _strategies(reader, n)
    comment = reader.string("the comment") if reader.at("string") else ""
    n_profiles = int(np.prod(shape, dtype=object))
    estimate = 16.0 * n * min(n_profiles, 1 << 62)  # float64 payoffs, read and reordered (a huge count overflows)
    check_memory(estimate, f"the payoff table of {source} ({' x '.join(map(str, shape))})", option=None)
    if reader.at("brace", "{"):
        flat = _outcome_payoffs(reader, n, n_profiles)
    else:
        flat = np.array(
            [
                [reader.number(f"payoff {i + 1} of {n} of profile {k + 1} of {n_profiles}") for i in range(n)]
                for k in range(n_profiles)
            ]
        ).reshape(n_profiles, n)
    if not reader.at("end"):
        raise reader.fail(f"the end of the file after the {n_profiles} profiles")
    # profile k lists player 1 fastest: Fortran order over the strategy axes
    payoffs = np.stack([flat[:, i].reshape(shape, order="F") for i in range(n)], axis=-1)
    try:
        return NormalFormGame(payoffs, players, labels, title, comment)
    except ConfigurationError as error:
        raise NfgFormatError(f"{source}: {error}") from None


def read_nfg(path: PathLike) -> NormalFormGame:
    """Read a Gambit ``.nfg`` file (see :func:`parse_nfg`).

    Raises:
        NfgFormatError: a missing, unreadable or malformed file (the message starts with its path).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise NfgFormatError(f"{path}: cannot read the file: {error}") from None
    return parse_nfg(text, str(path))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _number(value: float) -> str:
    return np.format_float_positional(value, unique=True, trim="-")


def format_nfg(game: NormalFormGame, variant: NfgVariant = "outcome") -> str:
    """The text of ``game`` as a Gambit ``.nfg`` file.

    Args:
        game: The game.
        variant: ``"outcome"`` (strategy labels and one outcome per profile, what Gambit writes) or ``"payoff"``
            (strategy counts and the payoffs of every profile; strategy labels are lost).

    Raises:
        ConfigurationError: an unknown variant.
    """
    if variant not in ("outcome", "payoff"):
        raise ConfigurationError(f"variant must be 'outcome' or 'payoff'; got {variant!r}")
    n = game.n_players
    flat = np.stack([game.payoffs[..., i].reshape(-1, order="F") for i in range(n)], axis=-1)
    rows = [" ".join(_number(v) for v in row) for row in flat.tolist()]
    head = f"NFG 1 R {_quote(game.title)} {{ {' '.join(map(_quote, game.players))} }}"
    if variant == "payoff":
        comment = f"\n{_quote(game.comment)}\n" if game.comment else ""
        # the blank last line is for OpenSpiel's reader (nfg_game), which otherwise stops short of the end
        return f"{head} {{ {' '.join(map(str, game.shape))} }}\n{comment}\n" + "\n".join(rows) + "\n\n"
    strategies = "\n".join("{ " + " ".join(map(_quote, own)) + " }" for own in game.strategies)
    outcomes = "\n".join(f'{{ "{k + 1}" {row.replace(" ", ", ")} }}' for k, row in enumerate(rows))
    numbers = " ".join(str(k + 1) for k in range(len(rows)))
    return f"{head}\n\n{{ {strategies}\n}}\n{_quote(game.comment)}\n\n{{\n{outcomes}\n}}\n{numbers}\n"


def write_nfg(
    game: NormalFormGame, path: PathLike, *, variant: NfgVariant = "outcome", overwrite: bool = False
) -> Path:
    """Write ``game`` to ``path`` atomically (see :func:`format_nfg`).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    data = format_nfg(game, variant).encode("utf-8")

    def write(file: IO[bytes]) -> None:
        file.write(data)

    return atomic_write(target, write)


def from_nfg(
    path: PathLike,
    *,
    env_id: str | None = None,
    n_rounds: int = DEFAULT_N_ROUNDS,
    pad: bool = False,
    replace: bool = False,
) -> str:
    """Register the game of a Gambit ``.nfg`` file as a mechgym game and return its id.

    The environment (``mechgym.make(env_id)``) plays a frozen :class:`~mechgym.mechanisms.TabularMechanism`
    holding the file's payoffs (as float32), player ``k`` of the file being agent ``k - 1``.

    Args:
        path: The file.
        env_id: The id; by default ``nfg/<Title>-v0`` from the game's title (the file's name when it has none).
        n_rounds: Rounds per episode of the registered game (``mechgym.make(env_id, n_rounds=...)`` overrides it).
        pad: Give players with fewer strategies strictly dominated ones (see
            :meth:`~mechgym.interop.NormalFormGame.padded`); by default unequal counts are refused.
        replace: Replace what ``env_id`` holds; by default an id that holds another game is refused (the same game
            again is fine).

    Returns:
        The registered id.

    Raises:
        NfgFormatError: a missing, unreadable or malformed file.
        ConfigurationError: a game mechgym cannot play (fewer than 2 players, unequal strategy counts without
            ``pad``, one strategy each, over 2**20 joint actions) or an id that holds another game.
    """
    game = read_nfg(path)
    return register_game(
        game,
        env_id or game_id(NFG_NAMESPACE, game.title or Path(path).stem),
        n_rounds=n_rounds,
        pad=pad,
        replace=replace,
    )


def _imported_game(env: MechanismGameEnv) -> NormalFormGame | None:
    """The game behind an environment of an imported game, if its mechanism still holds that game's payoffs."""
    if env.env_id is None:
        return None
    entry = spec(env.env_id).entry_point
    if not isinstance(entry, NormalFormEntryPoint):
        return None
    table = env.mechanism.payoff_table().detach().cpu().numpy()
    same = table.shape == (entry.game.payoffs.size // entry.game.n_players, entry.game.n_players) and np.array_equal(
        table, entry.game.payoffs.reshape(table.shape).astype(table.dtype)
    )
    return entry.game if same else None


def _as_game(source: MechanismGameEnv | Mechanism | NormalFormGame, title: str | None) -> NormalFormGame:
    env = getattr(source, "unwrapped", source)
    if isinstance(source, NormalFormGame):
        game = source
    elif isinstance(env, MechanismGameEnv):
        name = env.env_id or type(env.mechanism).__name__
        game = _imported_game(env) or NormalFormGame.from_mechanism(env.mechanism, title=name)
    elif isinstance(source, Mechanism):
        game = NormalFormGame.from_mechanism(source, title=type(source).__name__)
    else:
        raise ConfigurationError(
            f"to_nfg writes a mechgym environment, a Mechanism or a NormalFormGame; got {type(source).__name__}"
        )
    if title is None:
        return game
    return NormalFormGame(game.payoffs, game.players, game.strategies, title, game.comment)


def to_nfg(
    source: MechanismGameEnv | Mechanism | NormalFormGame,
    path: PathLike,
    *,
    title: str | None = None,
    variant: NfgVariant = "outcome",
    overwrite: bool = False,
) -> Path:
    """Write a mechgym game as a Gambit ``.nfg`` file, atomically.

    Args:
        source: An environment, a mechanism or a :class:`~mechgym.interop.NormalFormGame`. An environment of a
            game imported by :func:`from_nfg` or :func:`~mechgym.interop.from_openspiel` is written as that game
            (its labels, title and exact payoffs); any other mechanism as its payoff table, each value the
            shortest decimal that reads back as the same float32, with players and strategies labelled 1, 2, ...
        path: Where to write.
        title: The game's title (default: the environment's id or the mechanism's class).
        variant: ``"outcome"`` (what Gambit writes) or ``"payoff"``.
        overwrite: Replace an existing file; by default one is never overwritten.

    Returns:
        ``path``.

    Raises:
        ConfigurationError: a source that is none of these, a mechanism too large for a payoff table, or an
            unknown variant.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    return write_nfg(_as_game(source, title), path, variant=variant, overwrite=overwrite)
