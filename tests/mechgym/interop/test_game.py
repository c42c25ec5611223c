"""Imported games as mechgym games: the table order, padding, registration, PettingZoo conformance, traces."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import mechgym
import tests.test_conformance as conformance
from mechgym.errors import ConfigurationError
from mechgym.interop import NormalFormGame, game_id, read_nfg, register_game
from mechgym.learners import LogitQ

DATA = Path(__file__).parent / "data"


def test_the_table_lists_agent_zero_most_significant() -> None:
    payoffs = np.arange(2 * 2 * 2 * 3, dtype=float).reshape(2, 2, 2, 3)
    mechanism = NormalFormGame(payoffs).to_mechanism()
    joint = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0]])
    expected = torch.tensor(np.stack([payoffs[tuple(row)] for row in joint.tolist()]), dtype=torch.float32)
    torch.testing.assert_close(mechanism(joint), expected)
    assert mechanism.frozen and mechanism.family == "tabular"


def test_padding_adds_strictly_dominated_strategies() -> None:
    game = read_nfg(DATA / "selten_payoff.nfg")  # 3 x 2
    with pytest.raises(ConfigurationError, match="pass pad=True"):
        game.to_mechanism()
    padded = game.padded()
    assert padded.shape == (3, 3) and padded.strategies[1] == ("1", "2", "(padding 1)")
    np.testing.assert_array_equal(padded.payoffs[:, :2], game.payoffs)
    column = padded.payoffs[..., 1]  # player 2's payoffs, its padding in column 2
    assert (column[:, 2][:, None] < column[:, :2]).all()  # strictly below each real strategy, row by row
    assert padded.padded() is padded
    three = NormalFormGame(np.zeros((2, 3, 1, 3)))  # player 3 has one strategy: padded twice
    mixed = three.padded()
    for player in range(3):
        own = np.moveaxis(mixed.payoffs[..., player], player, 0)  # [own strategy, others...]
        real, added = own[: three.shape[player]], own[three.shape[player] :]
        if len(added):
            assert added.max(axis=0).max() < real.min(axis=0).min()


def test_games_mechgym_cannot_play_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 2 players"):
        NormalFormGame(np.zeros((3, 1))).to_mechanism()
    with pytest.raises(ConfigurationError, match="one strategy"):
        NormalFormGame(np.zeros((1, 1, 2))).to_mechanism()
    with pytest.raises(ConfigurationError, match="more than a mechgym tabular game holds"):
        NormalFormGame(np.zeros((1025, 1, 1, 3))).padded()  # 1025**3 joint actions once padded
    with pytest.raises(ConfigurationError, match=r"shape \[S_1, ..., S_N, N\]"):
        NormalFormGame(np.zeros((2, 2, 3)))
    with pytest.raises(ConfigurationError, match="finite"):
        NormalFormGame(np.full((2, 2, 2), np.nan))
    with pytest.raises(ConfigurationError, match="players must be 2 strings"):
        NormalFormGame(np.zeros((2, 2, 2)), players=("only one",))


def test_ids_registration_and_its_refusals(tmp_path: Path) -> None:
    assert game_id("nfg", "Prisoner's dilemma, v2") == "nfg/PrisonersDilemmaV2-v0"
    assert game_id("openspiel", "matrix_pd") == "openspiel/matrix_pd-v0"
    env_id = mechgym.from_nfg(DATA / "matching_pennies_outcome.nfg")
    assert env_id == "nfg/MatchingPennies-v0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same game again: no re-registration, no warning
        assert mechgym.from_nfg(DATA / "matching_pennies_outcome.nfg") == env_id
    other = NormalFormGame(np.ones((2, 2, 2)), title="Matching pennies")
    with pytest.raises(ConfigurationError, match="registered already for another game"):
        register_game(other, env_id)
    untitled = tmp_path / "my_game.nfg"
    untitled.write_text('NFG 1 R "" { "1" "2" } { 2 2 } 1 2 3 4 5 6 7 8')
    assert mechgym.from_nfg(untitled) == "nfg/my_game-v0"
    with pytest.warns(UserWarning):  # PettingZoo and Gymnasium say that an id is overridden
        assert register_game(other, "testinterop/Replaced-v0") == "testinterop/Replaced-v0"
        register_game(NormalFormGame(np.zeros((2, 2, 2))), "testinterop/Replaced-v0", replace=True)
    assert float(mechgym.make("testinterop/Replaced-v0").mechanism.table.abs().sum()) == 0.0
    with pytest.raises(ConfigurationError, match="pad=True"):
        mechgym.from_nfg(DATA / "selten_payoff.nfg")
    padded_id = mechgym.from_nfg(DATA / "selten_payoff.nfg", env_id="testinterop/Selten-v0", pad=True, n_rounds=7)
    env = mechgym.make(padded_id)
    assert (env.n_agents, env.n_actions, env.n_rounds) == (2, 3, 7)
    assert mechgym.make(padded_id, n_rounds=3, default_learner=LogitQ(beta=1.0)).n_rounds == 3


@pytest.mark.parametrize("name", sorted(path.name for path in DATA.glob("*.nfg")))
def test_imported_games_pass_pettingzoo_conformance(name: str) -> None:
    env_id = mechgym.from_nfg(DATA / name, env_id=f"testinterop/{Path(name).stem}-v0", pad=True)
    conformance.test_pettingzoo_conformance(env_id)


def test_an_imported_game_is_recorded_like_any_other(tmp_path: Path) -> None:
    env_id = mechgym.from_nfg(DATA / "coordination_outcome.nfg")
    traces = mechgym.rollout(env_id, LogitQ(), n_episodes=6, n_rounds=12, seed=0)
    assert traces.metadata.env_id == env_id
    again = mechgym.load_traces(traces.save(tmp_path / "traces.parquet"))
    assert torch.equal(again.actions_tensor(), traces.actions_tensor())
