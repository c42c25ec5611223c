"""Gambit .nfg files: both variants read by hand-checked entries, round trips, pygambit's files, clear errors."""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mechgym
from mechgym.errors import ConfigurationError
from mechgym.interop import NfgFormatError, NormalFormGame, format_nfg, parse_nfg, read_nfg, to_nfg, write_nfg
from mechgym.memory import MemoryBudgetError

DATA = Path(__file__).parent / "data"
FILES = sorted(path.name for path in DATA.glob("*.nfg"))
HAS_PYGAMBIT = importlib.util.find_spec("pygambit") is not None
needs_pygambit = pytest.mark.skipif(not HAS_PYGAMBIT, reason="pygambit is not installed: pip install '.[gambit]'")


def test_the_data_holds_both_variants() -> None:
    texts = [(DATA / name).read_text() for name in FILES]
    assert sum('"' in text.split("}", 1)[1].split("\n", 1)[0] or "{ {" in text for text in texts) >= 2
    assert {"selten_payoff.nfg", "three_player_payoff.nfg", "matching_pennies_outcome.nfg"} <= set(FILES)


def test_payoff_version_lists_player_one_fastest() -> None:
    game = read_nfg(DATA / "selten_payoff.nfg")
    assert game.shape == (3, 2) and game.players == ("Player 1", "Player 2")
    assert game.strategies == (("1", "2", "3"), ("1", "2"))
    # profiles (1,1) (2,1) (3,1) (1,2) (2,2) (3,2) pay (1,1) (0,2) (0,2) (1,1) (0,3) (2,0)
    expected = {(0, 0): (1, 1), (1, 0): (0, 2), (2, 0): (0, 2), (0, 1): (1, 1), (1, 1): (0, 3), (2, 1): (2, 0)}
    for profile, payoff in expected.items():
        assert tuple(game.payoffs[profile]) == payoff


def test_every_number_style_and_escaped_text() -> None:
    game = read_nfg(DATA / "three_player_payoff.nfg")
    assert game.title == 'A three-player game with "quoted" text'
    assert game.players == ("Ann", "Bob", "Cy") and game.shape == (2, 2, 2)
    assert game.comment.startswith("Payoffs in every number style")
    np.testing.assert_array_equal(game.payoffs[1, 0, 0], [-0.5, 0.5, 0.0])  # profile 2: Ann's 2nd strategy
    np.testing.assert_array_equal(game.payoffs[0, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(game.payoffs[0, 1, 0], [0.0, 0.0, 0.1])  # 1e-1
    np.testing.assert_array_equal(game.payoffs[1, 1, 0], [2.5, -3.0, 1 / 3])
    np.testing.assert_array_equal(game.payoffs[0, 0, 1], [-0.25, 7.0, 0.0])
    np.testing.assert_array_equal(game.payoffs[1, 1, 1], [10.0, -10.0, 12.5])


def test_outcome_version_with_the_null_outcome_and_shared_outcomes() -> None:
    pennies = read_nfg(DATA / "matching_pennies_outcome.nfg")
    assert pennies.strategies == (("Heads", "Tails"), ("Heads", "Tails"))
    np.testing.assert_array_equal(pennies.payoffs[..., 0], [[1, -1], [-1, 1]])
    np.testing.assert_array_equal(pennies.payoffs.sum(-1), np.zeros((2, 2)))
    coordination = read_nfg(DATA / "coordination_outcome.nfg")
    np.testing.assert_array_equal(coordination.payoffs[..., 1], [[4, 0, 1], [0, 2, 1], [1, 1, 1]])
    assert coordination.comment.startswith("Outcome 0 (the null outcome)")


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("variant", ["outcome", "payoff"])
def test_text_round_trip(name: str, variant: str) -> None:
    game = read_nfg(DATA / name)
    again = parse_nfg(format_nfg(game, variant))  # type: ignore[arg-type]
    if variant == "outcome":
        assert again == game
    else:  # the payoff version has no strategy labels
        np.testing.assert_array_equal(again.payoffs, game.payoffs)
        assert (again.title, again.players, again.comment) == (game.title, game.players, game.comment)


@pytest.mark.parametrize("name", ["matching_pennies_outcome.nfg", "coordination_outcome.nfg"])
def test_file_to_environment_to_file(name: str, tmp_path: Path) -> None:
    env_id = mechgym.from_nfg(DATA / name)
    env = mechgym.make(env_id)
    game = read_nfg(DATA / name)
    table = env.mechanism.payoff_table()
    np.testing.assert_array_equal(table.numpy(), game.payoffs.reshape(-1, 2).astype(np.float32))
    written = to_nfg(env, tmp_path / "copy.nfg")
    assert read_nfg(written) == game  # an imported game is written with its own labels


def test_any_mechanism_writes_shortest_float32_decimals(tmp_path: Path) -> None:
    env = mechgym.make("mechgym/PublicGoods-v0")
    path = to_nfg(env, tmp_path / "public_goods.nfg", title="Public goods")
    back = read_nfg(path)
    assert back.title == "Public goods" and back.shape == (7, 7, 7)
    np.testing.assert_array_equal(back.payoffs.reshape(-1, 3).astype(np.float32), env.mechanism.payoff_table().numpy())
    assert "0.10000000149011612" not in path.read_text()
    game = NormalFormGame(np.full((2, 2, 2), 0.1))
    assert "0.1, 0.1" in format_nfg(game)


def test_write_never_overwrites_by_surprise(tmp_path: Path) -> None:
    game = read_nfg(DATA / "selten_payoff.nfg")
    path = write_nfg(game, tmp_path / "g.nfg")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_nfg(game, path)
    write_nfg(game, path, variant="payoff", overwrite=True)
    assert path.read_text().startswith('NFG 1 R "Selten') and "{ 3 2 }" in path.read_text()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    with pytest.raises(ConfigurationError, match="'outcome' or 'payoff'"):
        format_nfg(game, "strategic")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="environment, a Mechanism or a NormalFormGame"):
        to_nfg("mechgym/Congestion-v0", tmp_path / "x.nfg")  # type: ignore[arg-type]


MALFORMED = {
    "empty": ("", '1:1: expected the file to start with "NFG 1 R"'),
    "efg": ('EFG 2 R "tree" { "1" "2" }', "extensive-form game"),
    "version": ('NFG 2 R "x" { "1" "2" } { 2 2 }', "1:5: expected format version 1"),
    "number type": ('NFG 1 Q "x" { "1" "2" } { 2 2 }', "1:7: expected the number type"),
    "no title": ("NFG 1 R { }", "1:9: expected the game's title"),
    "unclosed text": ('NFG 1 R "x', "1:9: a text in double quotes is never closed"),
    "stray character": ('NFG 1 R "x" { "1" "2" } { 2 2 }\n1 2 3 4 5 6 7 @', "2:15: unexpected character '@'"),
    "few payoffs": ('NFG 1 R "x" { "1" "2" } { 2 2 }\n1 2 3\n4 5', "3:4: expected payoff 2 of 2 of profile 3 of 4"),
    "extra payoffs": ('NFG 1 R "x" { "1" "2" } { 1 2 }\n1 2 3 4 5', "2:9: expected the end of the file"),
    "bad count": ('NFG 1 R "x" { "1" "2" } { 2 0 }', "1:29: expected the number of strategies of player 2"),
    "fraction count": ('NFG 1 R "x" { "1" "2" } { 2 1.5 }', "expected the number of strategies of player 2"),
    "divide by zero": ('NFG 1 R "x" { "1" "2" } { 1 2 }\n1 2 3 1/0', "2:7: expected a number (this rational divides"),
    "overflow": (
        'NFG 1 R "x" { "1" "2" } { 1 2 }\n1 2 3 1e400',
        "2:7: expected a number within the range of a float64",
    ),
    "no players": ('NFG 1 R "x" { } { }', "expected at least one player"),
    "outcome index": (
        'NFG 1 R "x" { "1" "2" } { { "a" } { "b" "c" } } "" { { "" 1 2 } } 1 2',
        "1:69: expected an outcome number in [0, 1] for profile 2",
    ),
    "outcome size": (
        'NFG 1 R "x" { "1" "2" } { { "a" } { "b" "c" } } "" { { "" 1 2 3 } } 1 1',
        "outcome 1 has 2 payoffs, one per player",
    ),
    "missing outcomes": ('NFG 1 R "x" { "1" "2" } { { "a" } { "b" "c" } } "" { { "" 1 2 } } 1', "profile 2 of 2"),
    "empty strategies": ('NFG 1 R "x" { "1" "2" } { { "a" } { } } "" { } 1', "at least one strategy for player 2"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_files_say_where_and_what_was_expected(case: str, tmp_path: Path) -> None:
    text, message = MALFORMED[case]
    path = tmp_path / "bad.nfg"
    path.write_text(text)
    with pytest.raises(NfgFormatError) as caught:
        read_nfg(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_unreadable_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(NfgFormatError, match="cannot read the file"):
        read_nfg(tmp_path / "missing.nfg")
    (tmp_path / "binary.nfg").write_bytes(b"\xff\xfe")
    with pytest.raises(NfgFormatError, match="cannot read the file"):
        read_nfg(tmp_path / "binary.nfg")
    with pytest.raises(MemoryBudgetError, match="payoff table of <string>"):
        parse_nfg('NFG 1 R "huge" { "1" "2" "3" } { 100000 100000 100000 }')
    with pytest.raises(MemoryBudgetError, match="payoff table of <string>"):
        parse_nfg('NFG 1 R "huge" { "1" "2" } { 1' + "0" * 300 + " 2 }")


def pygambit_payoffs(game: Any) -> list[np.ndarray]:
    """Each player's payoff array of a pygambit game, a profile without an outcome paying 0 (the format's null
    outcome; pygambit 16.7's ``to_arrays`` fails on such profiles)."""
    shape = tuple(len(player.strategies) for player in game.players)
    arrays = [np.zeros(shape) for _ in game.players]
    for profile in itertools.product(*(range(n) for n in shape)):
        outcome = game[profile]
        if outcome is not None:
            for i, player in enumerate(game.players):
                arrays[i][profile] = float(outcome[player])
    return arrays


@needs_pygambit
@pytest.mark.parametrize("name", FILES)
def test_pygambit_reads_our_files_as_we_do(name: str, tmp_path: Path) -> None:
    import pygambit

    ours = read_nfg(DATA / name)
    for variant in ("outcome", "payoff"):
        path = write_nfg(ours, tmp_path / f"{variant}.nfg", variant=variant)  # type: ignore[arg-type]
        for source in (DATA / name, path):
            theirs = pygambit.read_nfg(str(source))
            assert theirs.title == ours.title
            assert [str(getattr(p, "label", p)) for p in theirs.players] == list(ours.players)
            for i, array in enumerate(pygambit_payoffs(theirs)):
                np.testing.assert_array_equal(np.asarray(array, dtype=np.float64), ours.payoffs[..., i])


@needs_pygambit
def test_we_read_files_pygambit_writes(tmp_path: Path) -> None:
    import pygambit

    strategic = getattr(pygambit, "StrategicGame", pygambit.Game)  # pygambit 17 moved from_arrays there
    generator = np.random.default_rng(0)
    arrays = [np.round(generator.normal(size=(2, 3, 4)), 3) for _ in range(3)]
    game = strategic.from_arrays(*arrays, title="Random 2x3x4")
    text = game.to_nfg() if hasattr(game, "to_nfg") else game.write(format="nfg")
    path = tmp_path / "pygambit.nfg"
    path.write_text(text)
    ours = read_nfg(path)
    assert ours.title == "Random 2x3x4" and ours.shape == (2, 3, 4)
    for i, array in enumerate(arrays):
        np.testing.assert_allclose(ours.payoffs[..., i], array, rtol=0, atol=1e-12)
    again = pygambit.read_nfg(str(write_nfg(ours, tmp_path / "ours.nfg")))
    for i, array in enumerate(pygambit_payoffs(again)):
        np.testing.assert_array_equal(np.asarray(array, dtype=np.float64), ours.payoffs[..., i])


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    data=st.data(),
    variant=st.sampled_from(["outcome", "payoff"]),
)
def test_any_game_survives_the_text_round_trip(shape: list[int], data: st.DataObject, variant: str) -> None:
    values = st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-5, 5).map(float)
    payoffs = np.array(
        data.draw(st.lists(values, min_size=math.prod(shape) * len(shape), max_size=math.prod(shape) * len(shape)))
    )
    labels = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
    game = NormalFormGame(
        payoffs.reshape((*shape, len(shape))),
        players=tuple(data.draw(labels) for _ in shape),
        strategies=tuple(tuple(data.draw(labels) for _ in range(s)) for s in shape),
        title=data.draw(labels),
        comment=data.draw(labels),
    )
    again = parse_nfg(format_nfg(game, variant))  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.payoffs, game.payoffs)
    assert (again.title, again.players, again.comment) == (game.title, game.players, game.comment)
    if variant == "outcome":
        assert again == game
