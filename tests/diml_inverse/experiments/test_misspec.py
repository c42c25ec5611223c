"""The misspecification study (``python -m diml_inverse.experiments misspec``) in smoke mode, and its pieces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diml_inverse.experiments.__main__ import main
from diml_inverse.experiments.misspec import (
    BETA_GRID,
    FIT_LOGIT_Q,
    FIT_TRUE,
    GENERATORS,
    LEARNER_GENERATORS,
    misspec_config,
    record_traces,
)
from diml_inverse.experiments.report import read_rows
from mechgym.errors import ConfigurationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study in smoke mode on E1 and E3 (every generator), seeds 0 and 1, through the command line."""
    out = tmp_path_factory.mktemp("misspec")
    options = ["--games", "e1", "e3", "--seeds", "0", "1", "-q", "--threads", "1", "--out", str(out)]
    status = main(["misspec", "--smoke", *options, "--figures-dir", str(out / "figures")])
    assert status == 0
    return out


def test_smoke_run_has_every_fit(smoke_out: Path) -> None:
    rows = read_rows(smoke_out / "misspec" / "results.csv")
    for seed in (0, 1):
        for game in ("e1", "e3"):
            assert (smoke_out / "misspec" / f"seed{seed}" / f"{game}.csv").is_file()
            for generator in GENERATORS:
                fits = [r for r in rows if (r["seed"], r["game"], r["generator"]) == (seed, game, generator)]
                logit_q = [r for r in fits if r["fit"] == FIT_LOGIT_Q]
                assert sorted(r["beta"] for r in logit_q) == sorted(BETA_GRID)
                assert sum(r["selected"] for r in logit_q) == 1
                selected = next(r for r in logit_q if r["selected"])
                assert selected["valid_nll"] == min(r["valid_nll"] for r in logit_q)
                true_fits = [r for r in fits if r["fit"] == FIT_TRUE]
                assert len(true_fits) == (1 if generator in LEARNER_GENERATORS else 0)
    for row in rows:
        assert row["zero_diff_mse"] > 0 and math.isfinite(row["diff_mse"])
        assert row["rescaled_diff_mse"] <= min(row["diff_mse"], row["zero_diff_mse"]) + 1e-12
        assert row["uniform_nll"] == pytest.approx(math.log(6 if row["game"] == "e1" else 7))


def test_smoke_report_and_figure(smoke_out: Path) -> None:
    import matplotlib.image

    table = (smoke_out / "misspec" / "misspec.md").read_text()
    assert "| E1 | hedge | logit-Q |" in table and "| E3 | dqn | logit-Q |" in table
    image = matplotlib.image.imread(smoke_out / "figures" / "misspec.png")
    assert image.shape[1] > 600 and float(np.asarray(image).std()) > 0.01


def test_generators_are_reproducible() -> None:
    game = misspec_config(smoke=True).game("e1")
    for generator in ("hedge", "a2c"):
        first, second = (record_traces(game, generator, seed=5, run_seed=0) for _ in range(2))
        assert torch.equal(first.actions_tensor(), second.actions_tensor())
    assert not torch.equal(
        record_traces(game, "hedge", seed=5, run_seed=0).actions_tensor(),
        record_traces(game, "smooth-fp", seed=5, run_seed=0).actions_tensor(),
    )


def test_config_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="hedge"):
        misspec_config(generators=["hegde"])
    with pytest.raises(ConfigurationError, match="game"):
        misspec_config(games=["e4"])
    with pytest.raises(ConfigurationError, match="epochs"):
        misspec_config(epochs=0)
    assert main(["misspec", "--smoke", "--generators", "pop", "--out", str(tmp_path)]) == 2
    assert "ppo" in capsys.readouterr().err
