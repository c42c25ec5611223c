"""Equilibrium inversion on traces: fit_equilibrium, fit files, `diml fit --method`, the experiments' subcommands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mechgym
from diml_inverse import load, metrics
from diml_inverse.cli import main as diml_main
from diml_inverse.equilibrium import equilibrium_fit_result, fit_equilibrium
from diml_inverse.experiments.__main__ import main as experiments_main
from mechgym.errors import ConfigurationError
from mechgym.learners import LogitQ

LEARNER = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)


@pytest.fixture(scope="module")
def traces() -> mechgym.TraceDataset:
    return mechgym.rollout("mechgym/PublicGoods-v0", LEARNER, n_episodes=24, n_rounds=30, seed=0)


def test_inverse_qre_on_settled_play_beats_the_zero_mechanism(traces: mechgym.TraceDataset) -> None:
    train, test = traces.split(0.75)
    truth = mechgym.make("mechgym/PublicGoods-v0").mechanism
    result = fit_equilibrium(train, "qre", model="structured", iterations=50)
    assert float(result.params["lam"]) == LEARNER.beta  # the recorded learner's precision
    assert result.mechanism is not None
    assert metrics.diff_mse(truth, result.mechanism, test) < metrics.zero_baseline_diff_mse(truth, test)


def test_fit_file_round_trip(traces: mechgym.TraceDataset, tmp_path: Path) -> None:
    result = fit_equilibrium(traces, "nash", model="tabular", iterations=20)
    fit_result = equilibrium_fit_result(result, traces, LEARNER, model="tabular")
    loaded = load(fit_result.save(tmp_path / "nash.pt"))
    torch.testing.assert_close(loaded.mechanism.payoff_table(), fit_result.mechanism.payoff_table())
    assert loaded.history[0]["iterations"] == 20 and loaded.env_id == "mechgym/PublicGoods-v0"
    with pytest.raises(ConfigurationError, match="'qre' or 'nash'"):
        fit_equilibrium(traces, "dynamics")  # type: ignore[arg-type]


def test_diml_fit_method_qre_then_evaluate(
    traces: mechgym.TraceDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = traces.save(tmp_path / "traces.parquet")
    output = tmp_path / "qre.pt"
    assert diml_main(["fit", str(path), "--method", "qre", "--last-rounds", "10", "-o", str(output)]) == 0
    assert "by inverse qre" in capsys.readouterr().out
    assert load(output).model_name == "structured"
    command = ["evaluate", str(output), "--traces", str(path), "--cf-episodes", "8", "--cf-rounds", "5", "--json", "-q"]
    assert diml_main(command) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["diff_mse"] < values["zero_diff_mse"]


def test_goktas_subcommand_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        experiments_main(["goktas", "--games", "fisher-cobb-douglas", "--out", str(tmp_path), "--iterations", "400"])
        == 0
    )
    assert "Fisher Cobb-Douglas budgets+valuations" in capsys.readouterr().out
    rows = json.loads((tmp_path / "goktas" / "table.json").read_text())
    assert [row["recovered"] for row in rows] == [1.0, 1.0]
    assert experiments_main(["goktas", "--games", "cournot-duopoly"]) == 2  # a did-you-mean, exit status 2


@pytest.mark.slow
def test_equilibrium_comparison_smoke(tmp_path: Path) -> None:
    assert experiments_main(["equilibrium", "--smoke", "--games", "e3", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "equilibrium" / "table.json").read_text())
    assert {row["method"] for row in rows} >= {
        "DIML (structured)",
        "inverse QRE (structured)",
        "inverse Nash (structured)",
    }
    assert all(row["zero_diff_mse"] > 0 for row in rows)
