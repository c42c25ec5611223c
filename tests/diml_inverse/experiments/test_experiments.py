"""diml_inverse.experiments: settings, seeds, the shared-truth evaluator, and the whole pipeline in smoke mode."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import mechgym
from diml_inverse import metrics
from diml_inverse.experiments import experiment_config, run_seeds
from diml_inverse.experiments.__main__ import main
from diml_inverse.experiments.report import read_rows
from diml_inverse.experiments.runner import assumed_learner, write_rows
from diml_inverse.metrics import Evaluator, frozen_view
from diml_inverse.metrics.cfkl import simulated_play
from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError
from mechgym.learners import LogitQ
from mechgym.mechanisms import AnonymousCountMechanism, NeuralJointMechanism
from mechgym.rollout import simulate

EXPECTED_METHODS = {
    "e1": {"DIML", "Tabular MLE", "DIML-Wrong"},
    "e2": {"DIML", "Tabular MLE", "DIML-Wrong", "StructMLE"},
    "e3": {"DIML", "Tabular MLE", "DIML-Wrong", "StructMLE"},
    "e4": {"DIML"},
}
PER_SEED_FILES = ("curves.csv", "final.csv", "timing.csv", "config.json")
MERGED_FILES = ("curves.csv", "final.csv", "timing.csv", "final.md")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every experiment in smoke mode, seeds 0 and 1, through the command line."""
    out = tmp_path_factory.mktemp("experiments")
    status = main(
        [
            "run",
            "all",
            "--smoke",
            "--seeds",
            "0",
            "1",
            "--device",
            "cpu",
            "-q",
            "--out",
            str(out),
            "--figures-dir",
            str(out / "figures"),
            "--threads",
            "1",
            "--system-malloc",  # no process-wide malloc settings inside the test session
        ]
    )
    assert status == 0
    return out


# -- the pipeline end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["e1", "e2", "e3", "e4"])
def test_smoke_run_writes_every_file(smoke_out: Path, name: str) -> None:
    for seed in (0, 1):
        for game in experiment_config(name, smoke=True).games:
            for file_name in PER_SEED_FILES:
                path = smoke_out / name / f"seed{seed}" / game.label / file_name
                assert path.is_file(), path
    for file_name in MERGED_FILES:
        assert (smoke_out / name / file_name).stat().st_size > 0, (name, file_name)
    assert (smoke_out / "figures" / f"{name}.png").is_file()


@pytest.mark.parametrize("name", ["e1", "e4"])
def test_figure_opens(smoke_out: Path, name: str) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(smoke_out / name / f"{name}.png")
    height, width = image.shape[:2]
    assert width > 600 and height > 250
    assert float(np.asarray(image).std()) > 0.01  # not a blank canvas


@pytest.mark.parametrize("name", ["e1", "e2", "e3", "e4"])
def test_curves_have_every_method_epoch_and_seed(smoke_out: Path, name: str) -> None:
    config = experiment_config(name, smoke=True)
    curves = read_rows(smoke_out / name / "curves.csv")
    assert {row["method"] for row in curves} == EXPECTED_METHODS[name]
    assert {row["game"] for row in curves} == {g.label for g in config.games}
    assert {row["seed"] for row in curves} == {0, 1}
    expected = len(config.games) * len(config.methods) * config.training.epochs * 2
    assert len(curves) == expected
    for row in curves:
        assert math.isfinite(row["diff_mse"]) and row["diff_mse"] >= 0
        assert math.isfinite(row["valid_nll"]) and row["zero_diff_mse"] > 0
        # smoke: cfkl every 2 epochs and at the last (3)
        assert math.isnan(row["cfkl_params"]) == (row["epoch"] == 1)


@pytest.mark.parametrize("name", ["e2", "e4"])
def test_final_rows_select_on_validation_likelihood(smoke_out: Path, name: str) -> None:
    curves = read_rows(smoke_out / name / "curves.csv")
    final = read_rows(smoke_out / name / "final.csv")
    epochs = experiment_config(name, smoke=True).training.epochs
    for row in final:
        history = [
            c for c in curves if (c["game"], c["method"], c["seed"]) == (row["game"], row["method"], row["seed"])
        ]
        if row["checkpoint"] == "last":
            assert row["epoch"] == epochs
        else:
            best = min(history, key=lambda c: c["valid_nll"])
            assert row["epoch"] == best["epoch"]
        assert row["valid_nll"] == pytest.approx(history[row["epoch"] - 1]["valid_nll"])
        assert row["diff_mse"] == pytest.approx(history[row["epoch"] - 1]["diff_mse"], rel=1e-6)
        assert row["cfkl_noise_floor"] >= 0 and row["uniform_nll"] == pytest.approx(math.log(row_actions(name, row)))
    assert {row["checkpoint"] for row in final} == {"best", "last"}


def row_actions(name: str, row: dict) -> int:
    return next(g.n_actions for g in experiment_config(name, smoke=True).games if g.label == row["game"])


def test_markdown_report_has_tables(smoke_out: Path) -> None:
    text = (smoke_out / "e2" / "final.md").read_text()
    for heading in ("Final metrics", "Every seed", "Wall time", "SMOKE"):
        assert heading in text
    assert "StructMLE" in text and "published (last)" in text


def test_report_command_rebuilds(smoke_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (smoke_out / "e3" / "e3.png").unlink()
    assert main(["report", str(smoke_out), "e3"]) == 0
    assert (smoke_out / "e3" / "e3.png").is_file()
    assert "E3" in capsys.readouterr().out


def test_bad_cli_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "e1"]) == 2
    assert "run e1" in capsys.readouterr().err
    assert main(["run", "e4", "--smoke", "--scales", "n99", "--out", str(tmp_path), "-q"]) == 2
    assert "n99" in capsys.readouterr().err


# -- settings and seeds ---------------------------------------------------------------------------
def test_published_settings() -> None:
    e1, e2, e3, e4 = (experiment_config(name) for name in ("e1", "e2", "e3", "e4"))
    assert [(g.n_agents, g.n_actions, g.n_episodes, g.n_rounds) for g in (*e1.games, *e2.games, *e3.games)] == [
        (3, 6, 60, 60),
        (4, 5, 60, 60),
        (3, 7, 60, 60),
    ]
    assert [(g.n_agents, g.n_actions, g.n_episodes, g.n_rounds) for g in e4.games] == [
        (40, 10, 24, 30),
        (80, 20, 24, 30),
        (120, 25, 24, 30),
        (200, 30, 20, 30),
        (300, 40, 16, 25),
    ]
    assert e1.learner == LogitQ(0.25, 3.0, 0.06) and e4.learner == LogitQ(0.2, 6.0, 0.02)
    assert (e1.training.epochs, e1.training.batch_size, e4.training.epochs, e4.training.batch_size) == (100, 32, 200, 8)
    assert (e1.training.lr, e1.training.weight_decay, e1.training.grad_clip, e1.training.payoff_l2) == (
        1e-3,
        1e-6,
        1.0,
        1e-4,
    )
    assert (e1.evaluation.diff_samples, e1.evaluation.cf_episodes, e1.evaluation.cf_rounds) == (20_000, 200, 35)
    assert (e1.evaluation.final_cf_episodes, e1.evaluation.final_cf_rounds, e1.evaluation.cf_every) == (300, 50, 1)
    assert (e4.evaluation.diff_samples, e4.evaluation.cf_episodes, e4.evaluation.cf_rounds) == (50_000, 120, 30)
    assert e2.games[0].env_kwargs["pricing"] == "subsidy"
    assert experiment_config("e2", congestion_pricing="toll").games[0].env_kwargs["pricing"] == "toll"
    wrong = next(m for m in e1.methods if m.name == "DIML-Wrong")
    assert assumed_learner(e1.learner, wrong).beta == pytest.approx(1.8)


def test_config_overrides_and_errors() -> None:
    config = experiment_config("e4", epochs=5, cf_every=3, scales=["n80", "n40"])
    assert config.training.epochs == 5 and config.evaluation.cf_every == 3
    assert [g.label for g in config.games] == ["n80", "n40"]
    with pytest.raises(ConfigurationError, match="Did you mean 'e1'"):
        experiment_config("e11")
    with pytest.raises(ConfigurationError, match="cf_every"):
        experiment_config("e1", cf_every=0)


def test_run_seeds_are_independent_per_purpose() -> None:
    config = experiment_config("e4")
    first, again = run_seeds(config, config.games[0], 3), run_seeds(config, config.games[0], 3)
    assert first == again and first.mechanism == 3
    assert len({first.data, first.fit, first.evaluation, run_seeds(config, config.games[1], 3).data}) == 4
    with pytest.raises(ConfigurationError):
        run_seeds(config, config.games[0], -1)


# -- the shared-truth evaluator -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("truth", "estimate"),
    [
        (NeuralJointMechanism(3, 6, seed=0), NeuralJointMechanism(3, 6, seed=1)),
        (AnonymousCountMechanism(20, 5, seed=0), AnonymousCountMechanism(20, 5, seed=1)),
    ],
    ids=["table-game", "anonymous-game"],
)
def test_evaluator_matches_metrics(truth: NeuralJointMechanism, estimate: NeuralJointMechanism) -> None:
    truth.freeze()
    learner = LogitQ(0.2, 6.0, 0.02)
    test = simulate(truth, learner, 4, 10, seed=9)[0]
    evaluator = Evaluator(
        truth, test, learner, seed=5, diff_samples=300, cf_episodes=40, cf_rounds=8, shift=(0.6, 1.4, 1.5)
    )
    got = evaluator.epoch_metrics(estimate, with_cfkl=True)
    assert got["diff_mse"] == pytest.approx(metrics.diff_mse(truth, estimate, test, 300, seed=5), rel=1e-6)
    assert got["cfkl_params"] == pytest.approx(metrics.cfkl_params(truth, estimate, learner, 40, 8, seed=5), rel=1e-9)
    floor = metrics.cfkl_noise_floor(truth, learner, 40, 8, seed=5)
    assert evaluator.noise_floor((40, 8)) == {"cfkl_noise_floor": pytest.approx(floor)}
    assert evaluator.zero_diff_mse == pytest.approx(metrics.zero_baseline_diff_mse(truth, test, 300, seed=5))
    assert math.isnan(evaluator.epoch_metrics(estimate, with_cfkl=False)["cfkl_params"])


def test_index_sum_binning_matches_metrics() -> None:
    truth, estimate = AnonymousCountMechanism(20, 5, seed=0).freeze(), AnonymousCountMechanism(20, 5, seed=1)
    learner = LogitQ(0.2, 6.0, 0.02)
    test = simulate(truth, learner, 3, 6, seed=9)[0]
    evaluator = Evaluator(
        truth,
        test,
        learner,
        seed=2,
        diff_samples=100,
        cf_episodes=30,
        cf_rounds=6,
        shift=(0.6, 1.4, 1.5),
        binnings=("auto", "index_sum"),
    )
    got = evaluator.cfkl(estimate, (30, 6))
    expected = metrics.cfkl_params(truth, estimate, learner, 30, 6, seed=2, kind="index_sum")
    assert got["cfkl_index_sum"] == pytest.approx(expected, rel=1e-9)
    assert got["cfkl_params"] == pytest.approx(metrics.cfkl_params(truth, estimate, learner, 30, 6, seed=2), rel=1e-9)
    assert set(evaluator.noise_floor((30, 6))) == {"cfkl_noise_floor", "cfkl_index_sum_noise_floor"}
    with pytest.raises(ConfigurationError, match="binnings"):
        Evaluator(
            truth,
            test,
            learner,
            seed=2,
            diff_samples=10,
            cf_episodes=2,
            cf_rounds=2,
            shift=(0.6, 1.4, 1.5),
            binnings=("hash",),
        )


def test_e4_reports_the_published_binning_too(smoke_out: Path) -> None:
    final = read_rows(smoke_out / "e4" / "final.csv")
    assert all(isinstance(row["cfkl_index_sum"], float) for row in final)
    assert "index-sum KL (last)" in (smoke_out / "e4" / "final.md").read_text()
    assert "cfkl_index_sum" not in read_rows(smoke_out / "e1" / "final.csv")[0]


def test_simulation_matches_mechgym_and_frozen_view_matches_payoffs() -> None:
    learner = LogitQ().shifted()
    estimate = NeuralJointMechanism(3, 6, seed=4)
    view = frozen_view(estimate)
    joint = torch.tensor([[0, 1, 2], [5, 5, 0]])
    torch.testing.assert_close(view.counterfactual_payoffs(joint), estimate.counterfactual_payoffs(joint).detach())
    big = AnonymousCountMechanism(30, 5, seed=2).freeze()
    seed = metrics.derive_seed(1, "cfkl/truth")
    for mechanism in (view, big):  # the view reads a counterfactual table, the anonymous game calls the mechanism
        actions = mechgym.play_episodes(MechanismGameEnv(mechanism, n_rounds=9), learner, 4, seed).actions_tensor()
        got = simulated_play(mechanism, learner, 4, 9, 1, "cfkl/truth")
        assert torch.equal(got, actions.reshape(-1, mechanism.n_agents))
        assert torch.equal(got, simulate(mechanism, learner, 4, 9, seed)[0].reshape(-1, mechanism.n_agents))


def test_smoke_data_is_the_seeded_truths() -> None:
    config = experiment_config("e1", smoke=True)
    game = config.games[0]
    truth = mechgym.make(game.env_id, **game.make_kwargs(2)).mechanism
    assert truth.frozen and torch.equal(truth.layer1.weight, NeuralJointMechanism(3, 6, seed=2).layer1.weight)


def test_write_rows_never_leaves_a_partial_file(tmp_path: Path) -> None:
    """A row that fails to format mid-write leaves the previous file as it was (``--resume`` trusts what exists)."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("disk full")

    path = write_rows(tmp_path / "game.csv", [{"a": 1.5, "b": "x"}])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        write_rows(path, [{"a": 2.0, "b": "y"}, {"a": Unprintable(), "b": "z"}])
    assert path.read_bytes() == before and read_rows(path) == [{"a": 1.5, "b": "x"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["game.csv"]  # no temporary file left behind
