"""OpenSpiel's normal-form games as mechgym games (skipped without the .[openspiel] extra, except the ImportError)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import mechgym
import tests.test_conformance as conformance
from mechgym.errors import ConfigurationError
from mechgym.interop import NormalFormGame, format_nfg, import_pyspiel, openspiel_game, parse_nfg

HAS_OPENSPIEL = importlib.util.find_spec("pyspiel") is not None
needs_openspiel = pytest.mark.skipif(not HAS_OPENSPIEL, reason="OpenSpiel is not installed: pip install '.[openspiel]'")
#: Every matrix game OpenSpiel registers (pyspiel.registered_names() starting with "matrix_").
MATRIX_GAMES = (
    *("matrix_bos", "matrix_brps", "matrix_cd", "matrix_coordination", "matrix_mp", "matrix_pd"),
    *("matrix_rps", "matrix_rpsw", "matrix_sh", "matrix_shapleys_game"),
)


def test_without_openspiel_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspiel", None)  # an import of pyspiel now raises ImportError
    with pytest.raises(ImportError, match=r"pip install '\.\[openspiel\]'"):
        import_pyspiel()
    with pytest.raises(ImportError, match="open_spiel"):
        mechgym.from_openspiel("matrix_pd")


@needs_openspiel
def test_prisoners_dilemma_payoffs_and_names() -> None:
    env_id = mechgym.from_openspiel("matrix_pd")
    assert env_id == "openspiel/matrix_pd-v0"
    env = mechgym.make(env_id)
    game = openspiel_game("matrix_pd")
    assert game.strategies == (("Cooperate", "Defect"),) * 2 and game.title == "Prisoner's Dilemma"
    # OpenSpiel's row player is agent 0: (C, D) pays 0 to the row player and 10 to the column player
    np.testing.assert_array_equal(game.payoffs[0, 1], [0.0, 10.0])
    np.testing.assert_array_equal(env.mechanism.payoff_table().numpy(), [[5, 5], [0, 10], [10, 0], [1, 1]])


@needs_openspiel
@pytest.mark.parametrize("name", MATRIX_GAMES)
def test_matrix_games_agree_with_openspiels_own_nfg_export(name: str) -> None:
    import pyspiel

    ours = openspiel_game(name)
    exported = parse_nfg(pyspiel.game_to_nfg_string(pyspiel.load_game(name)), f"OpenSpiel's export of {name}")
    np.testing.assert_array_equal(ours.payoffs, exported.payoffs)
    conformance.test_pettingzoo_conformance(mechgym.from_openspiel(name))


@needs_openspiel
def test_tensor_games_and_nfg_files_through_openspiel(tmp_path: pytest.TempPathFactory) -> None:
    import pyspiel

    generator = np.random.default_rng(1)
    utilities = np.round(generator.normal(size=(3, 2, 2, 2)), 2)  # [player, a_0, a_1, a_2]
    tensor = pyspiel.create_tensor_game(utilities.tolist())
    game = openspiel_game(tensor)
    np.testing.assert_array_equal(game.payoffs, np.moveaxis(utilities, 0, -1))
    env_id = mechgym.from_openspiel(tensor, env_id="testopenspiel/Tensor-v0")
    assert mechgym.make(env_id).n_agents == 3
    # a file we write, loaded by OpenSpiel's nfg_game, comes back unchanged
    plain = NormalFormGame(game.payoffs, title="no comment")  # its reader takes the payoff version, no comment
    loaded = pyspiel.load_nfg_game(format_nfg(plain, "payoff"))
    np.testing.assert_array_equal(openspiel_game(loaded).payoffs, game.payoffs)


@needs_openspiel
def test_games_that_are_not_normal_form_or_unknown() -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'matrix_pd'"):
        mechgym.from_openspiel("matrix_pdd")
    with pytest.raises(ConfigurationError, match="extensive_to_tensor_game"):
        mechgym.from_openspiel("kuhn_poker")
    with pytest.raises(ConfigurationError, match="a game name such as 'matrix_pd' or a pyspiel game"):
        mechgym.from_openspiel(42)


def test_import_mechgym_does_not_import_pyspiel() -> None:
    """Every ``import pyspiel`` of the package is inside a function (a subprocess would show it too, 10 s slower)."""
    for path in Path(mechgym.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = {alias.name.split(".")[0] for node in top_level for alias in node.names}
        names |= {node.module.split(".")[0] for node in top_level if isinstance(node, ast.ImportFrom) and node.module}
        assert "pyspiel" not in names, path


@needs_openspiel
def test_unequal_action_counts_and_parameterised_names(tmp_path: Path) -> None:
    import pyspiel

    uneven = pyspiel.create_matrix_game([[1, 2, 3], [4, 5, 6]], [[6, 5, 4], [3, 2, 1]])  # 2 x 3
    with pytest.raises(ConfigurationError, match="pad=True"):
        mechgym.from_openspiel(uneven, env_id="testopenspiel/Uneven-v0")
    env = mechgym.make(mechgym.from_openspiel(uneven, env_id="testopenspiel/Uneven-v0", pad=True))
    assert env.n_actions == 3
    np.testing.assert_array_equal(env.mechanism.payoff_table()[:3].numpy(), [[1, 6], [2, 5], [3, 4]])
    path = tmp_path / "game.nfg"
    path.write_text(format_nfg(NormalFormGame(openspiel_game("matrix_sh").payoffs, title="x"), "payoff"))
    env_id = mechgym.from_openspiel(f"nfg_game(filename={path})")
    assert env_id == "openspiel/nfg_game_filename_game_nfg-v0"
    np.testing.assert_array_equal(
        openspiel_game(f"nfg_game(filename={path})").payoffs, openspiel_game("matrix_sh").payoffs
    )


@needs_openspiel
def test_the_list_of_matrix_games_is_openspiels() -> None:
    import pyspiel

    assert sorted(MATRIX_GAMES) == sorted(name for name in pyspiel.registered_names() if name.startswith("matrix_"))
