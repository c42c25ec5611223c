"""The ``diml`` command line: fit then evaluate, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import mechgym
from diml_inverse import load
from diml_inverse.cli import main


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "traces.parquet"
    mechgym.rollout("mechgym/PublicGoods-v0", n_episodes=10, n_rounds=20, seed=0).save(path)
    return path


def test_fit_then_evaluate(trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit_path = tmp_path / "fit.pt"
    assert (
        main(
            [
                "fit",
                str(trace_file),
                "--epochs",
                "2",
                "--test-fraction",
                "0.2",
                "-q",
                "--device",
                "cpu",
                "-o",
                str(fit_path),
            ]
        )
        == 0
    )
    assert fit_path.is_file()
    assert "fitted neural on mechgym/PublicGoods-v0 (8 episodes)" in capsys.readouterr().out
    assert (
        main(
            [
                "evaluate",
                str(fit_path),
                "--traces",
                str(trace_file),
                "--test-fraction",
                "0.2",
                "--cf-episodes",
                "20",
                "--cf-rounds",
                "10",
                "--diff-samples",
                "500",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    for metric in ("diff_mse", "zero_diff_mse", "cfkl_params", "cfkl_noise_floor", "heldout_nll"):
        assert metric in table
    assert (
        main(
            [
                "evaluate",
                str(fit_path),
                "--traces",
                str(trace_file),
                "--truth-seed",
                "3",
                "--json",
                "--cf-episodes",
                "5",
                "--cf-rounds",
                "5",
                "--diff-samples",
                "100",
            ]
        )
        == 0
    )
    assert '"diff_mse"' in capsys.readouterr().out


def test_errors_exit_2_without_traceback(trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(tmp_path / "missing.parquet"), "-q"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["fit", str(trace_file), "--env", "mechgym/Congestion-v0", "-q"]) == 2
    assert "PublicGoods" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nofit.pt"), "--traces", str(trace_file)]) == 2
    assert main(["fit", str(trace_file), "--model", "bogus"]) == 2


def test_fit_with_round_windows_and_agent_batches(trace_file: Path, tmp_path: Path) -> None:
    fit_path = tmp_path / "windowed.pt"
    options = ["--round-window", "5", "--burn-in", "8", "--agent-batch-size", "2", "--batch-size", "4"]
    assert main(["fit", str(trace_file), "--epochs", "1", "-q", "--device", "cpu", "-o", str(fit_path), *options]) == 0
    config = load(fit_path).config
    assert (config["round_window"], config["burn_in"], config["agent_batch_size"]) == (5, 8, 2)
