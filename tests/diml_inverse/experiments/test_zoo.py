"""The recovery zoo (``python -m diml_inverse.experiments zoo``): its games as third-party games, and a smoke run."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test

from diml_inverse.experiments.__main__ import main
from diml_inverse.experiments.report import read_rows
from diml_inverse.experiments.zoo import (
    RESULT_COLUMNS,
    TABLE_COLUMNS,
    ZOO_GAMES,
    ZooGame,
    register_zoo,
    zoo_config,
    zoo_game,
)
from mechgym.errors import ConfigurationError
from mechgym.mechanisms import Mechanism
from mechgym.registration import make, registered_ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GAME_NAMES = [game.name for game in ZOO_GAMES]


def build(game: ZooGame, seed: int) -> Mechanism:
    """The game's truth at ``mechanism_seed=seed``, through the registry."""
    register_zoo()
    return make(game.env_id, mechanism_seed=seed).mechanism


def random_joint(game: ZooGame, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(game.n_actions, (*shape, game.n_agents), generator=generator)


#: The smoke run of the default suite: a small game, an anonymous one and one of the paper's (every zoo game runs in
#: the slow test below: the default fit tries six models per game, a minute and more on 2 cores).
SMOKE_GAMES = ("Coordination", "ThresholdPublicGood", "E1")


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three games in smoke mode, seeds 0 and 1, through the command line."""
    out = tmp_path_factory.mktemp("zoo")
    command = ["zoo", "--smoke", "--seeds", "0", "1", "-q", "--threads", "1", "--out", str(out)]
    assert main([*command, "--games", *SMOKE_GAMES]) == 0
    return out


@pytest.mark.slow
def test_smoke_run_of_every_game(tmp_path: Path) -> None:
    assert main(["zoo", "--smoke", "--seeds", "0", "-q", "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "zoo" / "results.csv")
    assert sorted(str(row["game"]) for row in rows) == sorted(GAME_NAMES)
    assert all(np.isfinite(float(row["ratio"])) for row in rows)


def test_data_needs_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = ["zoo", "--smoke", "--games", "Coordination", "--episodes", "3", "6", "--seeds", "0", "-q"]
    quick = ["--fit-options", '{"model": "interaction", "tune_prior": false}']  # one fit per size, not six
    assert main([*command, *quick, "--threads", "1", "--out", str(tmp_path)]) == 0
    root = tmp_path / "zoo" / "data_needs"
    rows = read_rows(root / "data_needs.csv")
    assert [int(row["n_train_episodes"]) for row in rows] == [3, 6]
    assert len({float(row["zero_diff_mse"]) for row in rows}) == 1  # one test set for every size
    assert "| Coordination |" in (root / "data_needs.md").read_text() and (root / "data_needs.png").is_file()
    assert "k: slope" in capsys.readouterr().out


def test_fit_options_choose_an_alternative_estimator(tmp_path: Path) -> None:
    command = ["zoo", "--smoke", "--games", "Coordination", "--seeds", "0", "-q", "--threads", "1"]
    assert main([*command, "--fit-options", '{"model": "neural"}', "--out", str(tmp_path)]) == 0
    assert read_rows(tmp_path / "zoo" / "results.csv")[0]["model"] == "neural"
    assert main([*command, "--fit-options", '{"modle": "neural"}', "--out", str(tmp_path / "bad")]) == 2


def test_zoo_spans_the_required_families() -> None:
    families = {game.mechanism for game in ZOO_GAMES}
    assert len(families) >= 10
    small = [g for g in ZOO_GAMES if g.kind == "small"]
    anonymous = [g for g in ZOO_GAMES if g.kind == "anonymous"]
    assert all(3 <= g.n_agents <= 4 and 3 <= g.n_actions <= 7 and not g.mechanism.anonymous for g in small)
    assert all(20 <= g.n_agents <= 100 and g.mechanism.anonymous for g in anonymous)
    assert min(g.scale for g in ZOO_GAMES) < 1 < max(g.scale for g in ZOO_GAMES)
    assert not any(game.env_id.startswith("mechgym/") for game in ZOO_GAMES)


def test_smoke_run_writes_every_file(smoke_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = smoke_out / "zoo"
    rows = read_rows(root / "results.csv")
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert sorted((str(r["game"]), int(r["seed"])) for r in rows) == sorted(
        (name, seed) for name in SMOKE_GAMES for seed in (0, 1)
    )
    assert {str(r["kind"]) for r in rows} == {"small", "anonymous", "paper"}
    for row in rows:
        assert row["zero_diff_mse"] > 0 and np.isfinite(row["diff_mse"])
        assert row["ratio"] == pytest.approx(row["diff_mse"] / row["zero_diff_mse"])
        assert row["oracle_gap"] == pytest.approx(row["fit_nll"] - row["truth_nll"])
    for seed in (0, 1):
        assert all((root / f"seed{seed}" / f"{name}.csv").is_file() for name in SMOKE_GAMES)
    table = (root / "table.md").read_text()
    assert all(column in table for column in TABLE_COLUMNS)
    assert all(f"| {name} |" in table for name in SMOKE_GAMES)
    assert "Over 2 games" in table and "median ratio" in table and "worst" in table  # the paper's E1 is not one
    import matplotlib.image

    image = matplotlib.image.imread(root / "zoo.png")
    assert image.shape[1] > 500 and float(np.asarray(image).std()) > 0.01


@pytest.mark.parametrize("name", GAME_NAMES)
def test_pettingzoo_parallel_api(name: str) -> None:
    register_zoo()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Observation numpy array is all zeros")
        parallel_api_test(make(zoo_game(name).env_id, n_rounds=4), num_cycles=6)


@pytest.mark.parametrize("name", GAME_NAMES)
def test_counterfactual_payoffs_match_the_reference(name: str) -> None:
    game = zoo_game(name)
    mechanism = build(game, seed=1)
    assert mechanism.frozen
    joint = random_joint(game, (3, 7))
    fast = mechanism.counterfactual_payoffs(joint)
    assert fast.shape == (3, 7, game.n_agents, game.n_actions)
    torch.testing.assert_close(fast, mechanism.counterfactual_payoffs_generic(joint))
    torch.testing.assert_close(mechanism.counterfactual_payoffs_batch_invariant(joint), fast)
    assert mechanism(joint).shape == (3, 7, game.n_agents)


@pytest.mark.parametrize("name", GAME_NAMES)
def test_each_game_is_deterministic_given_its_seed(name: str) -> None:
    game = zoo_game(name)
    joint = random_joint(game, (64,), seed=2)
    first, again, other = (build(game, seed)(joint) for seed in (3, 3, 4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # the mechanism's own constructor draws the same truth as the registry
    direct = game.mechanism(n_agents=game.n_agents, n_actions=game.n_actions, seed=3, **game.options)
    assert torch.equal(direct(joint), first)


def test_register_zoo_is_idempotent() -> None:
    ids = register_zoo()
    before = registered_ids()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert register_zoo() == ids
    assert registered_ids() == before
    assert set(ids) <= set(before) and len(set(ids)) == len(ZOO_GAMES)
    assert make("zoo/ElFarol-v0").mechanism.family == "zoo_el_farol"


def test_unknown_games_get_suggestions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'ElFarol'"):
        zoo_config(games=["ElFarl"])
    assert main(["zoo", "--smoke", "--games", "Polymatirx", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'Polymatrix'" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="epochs"):
        zoo_config(epochs=0)
    assert zoo_config(epochs=7).training.epochs == 7
    assert zoo_config(smoke=True).training.epochs == 2
