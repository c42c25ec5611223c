"""The OpenSpiel recovery run, smoke-sized (skipped without the .[openspiel] extra)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from diml_inverse.experiments import openspiel_games
from diml_inverse.experiments.report import read_rows

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyspiel") is None, reason="OpenSpiel is not installed: pip install '.[openspiel]'"
)


def test_the_command_writes_a_row_per_model_and_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert openspiel_games.main(["--smoke", "--seeds", "0", "--games", "matrix_mp", "--out", str(tmp_path), "-q"]) == 0
    rows = read_rows(tmp_path / "openspiel" / "results.csv")
    assert [row["model"] for row in rows] == list(openspiel_games.MODELS)
    for row in rows:
        assert (row["game"], row["seed"], row["n_actions"]) == ("matrix_mp", 0, 2)
        assert row["zero_diff_mse"] > 0 and math.isfinite(row["diff_mse"])
        assert row["ratio"] == pytest.approx(row["diff_mse"] / row["zero_diff_mse"])
        assert row["oracle_gap"] == pytest.approx(row["fit_nll"] - row["truth_nll"])
    table = (tmp_path / "openspiel" / "table.md").read_text()
    assert "| matrix_mp | 2 | default |" in table and "| matrix_mp | 2 | tabular |" in table
    assert table in capsys.readouterr().out


def test_unknown_games_exit_with_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert openspiel_games.main(["--games", "matrix_pdd", "--out", str(tmp_path), "-q"]) == 2
    assert "Did you mean 'matrix_pd'" in capsys.readouterr().err
