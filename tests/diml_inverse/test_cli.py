"""The ``diml`` command line: fit then evaluate, and clear errors."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mechgym
from diml_inverse import FitResult, load
from diml_inverse.cli import main
from diml_inverse.fit import FitInterrupted
from mechgym.learners import BanditQ, Hedge, Learner, LogitQ, SmoothFP
from mechgym.mechanisms import Mechanism
from mechgym.traces import TraceDataset, load_traces

FIT_MODULE = importlib.import_module("diml_inverse.fit")  # ``diml_inverse.fit`` the attribute is the function


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
    assert "fitted interaction on mechgym/PublicGoods-v0 (8 episodes)" in capsys.readouterr().out
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
    assert (config.round_window, config.burn_in, config.agent_batch_size) == (5, 8, 2)


def test_fit_takes_the_auto_candidates_as_words(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit_path = tmp_path / "candidates.pt"
    options = ["--auto-candidates", "neural", "tabular"]
    assert main(["fit", str(trace_file), "--epochs", "1", "-q", "--device", "cpu", "-o", str(fit_path), *options]) == 0
    fitted = load(fit_path)
    assert fitted.config.auto_candidates == ("neural", "tabular")
    assert [row["model"] for row in fitted.model_search] == ["neural", "tabular"]
    assert main(["fit", str(trace_file), "-q", "-o", str(tmp_path / "bad.pt"), "--auto-candidates", "nerual"]) == 2
    assert "Did you mean 'neural'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fit_file(trace_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fit") / "fit.pt"
    assert main(["fit", str(trace_file), "--epochs", "2", "-q", "--device", "cpu", "-o", str(path)]) == 0
    return path


# -- --learner and its parameters ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, expected",
    [
        (["--learner", "logit-q", "--beta", "2"], LogitQ(beta=2.0)),
        (["--learner", "hedge", "--eta", "0.05", "--epsilon", "0.1"], Hedge(eta=0.05, epsilon=0.1)),
        (["--learner", "bandit-q", "--alpha", "0.5", "--q0", "1"], BanditQ(alpha=0.5, q0=1.0)),
        (["--learner", "smooth_fp", "--prior-weight", "3"], SmoothFP(prior_weight=3.0)),
        (["--beta", "1.5"], LogitQ(beta=1.5)),  # the recorded learner with one parameter changed
        ([], LogitQ()),  # the recorded learner
    ],
    ids=["logit-q", "hedge", "bandit-q", "smooth-fp", "recorded-with-beta", "recorded"],
)
def test_fit_assumes_the_learner_given(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], expected: Learner
) -> None:
    assert load_traces(trace_file).learner() == LogitQ()
    fit_path = tmp_path / "fit.pt"
    argv = ["fit", str(trace_file), "--epochs", "1", "-q", "--device", "cpu", "-o", str(fit_path), *options]
    assert main(argv) == 0
    assert f"assuming {expected.name};" in capsys.readouterr().out
    result = load(fit_path)
    assert result.learner == expected
    assert result.assumed_learner is not None and result.assumed_learner.to_dict() == expected.to_dict()


def unrecorded_learner_traces(trace_file: Path, path: Path) -> Path:
    """The traces as Stable-Baselines3 agents would leave them: no learner, the SB3 provenance in ``extra``."""
    traces = load_traces(trace_file)
    metadata = dataclasses.replace(traces.metadata, learner=None, extra={"sb3": {"algorithm": "ppo"}})
    TraceDataset(actions=traces.actions, rewards=traces.rewards, metadata=metadata).save(path)
    return path


def test_fit_traces_without_a_recorded_learner(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traces = unrecorded_learner_traces(trace_file, tmp_path / "ppo.parquet")
    fit_path = tmp_path / "fit.pt"
    assert main(["fit", str(traces), "--epochs", "1", "-q", "--device", "cpu", "-o", str(fit_path)]) == 2
    err = capsys.readouterr().err
    assert "records no learner (they were played by Stable-Baselines3 PPO agents" in err
    assert "--learner logit-q --alpha 0.25 --beta 3 --epsilon 0.06" in err
    assert main(["fit", str(traces), "--eta", "0.1", "-q", "-o", str(fit_path)]) == 2
    assert "--eta set a learning rule's parameters but there is no learner to apply them to" in capsys.readouterr().err
    assert not fit_path.exists()
    argv = ["fit", str(traces), "--epochs", "1", "-q", "--device", "cpu", "-o", str(fit_path)]
    assert main([*argv, "--learner", "hedge", "--eta", "0.05"]) == 0
    assert load(fit_path).learner == Hedge(eta=0.05)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--learner", "hedg"], "invalid choice: unknown learner 'hedg'. Did you mean 'hedge'?"),
        (["--learner", "logitq"], "Did you mean 'logit-q'"),
        (["--learner", "ppo"], "Known: bandit-q, hedge, logit-q, smooth-fp."),
        (
            ["--learner", "hedge", "--alpha", "0.5"],
            "the hedge learner has no parameter among --alpha; its parameters are --epsilon, --eta, --q0",
        ),
        (["--eta", "0.1"], "the learner recorded in"),
        (["--learner", "smooth-fp", "--beta", "-1"], "beta must be a positive number"),
    ],
    ids=["typo", "no-hyphen", "sb3-is-no-model", "wrong-parameter", "recorded-has-no-eta", "bad-value"],
)
def test_fit_learner_errors(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    assert main(["fit", str(trace_file), "-q", "-o", str(tmp_path / "fit.pt"), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "fit.pt").exists()


# -- progress bars and -v logging ------------------------------------------------------------------------
def test_evaluate_shows_progress_unless_quiet(
    fit_file: Path, trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", str(fit_file), "--traces", str(trace_file), "--cf-episodes", "4", "--cf-rounds", "4"]
    argv += ["--diff-samples", "50", "--json"]
    assert main(argv) == 0
    shown = capsys.readouterr()
    assert "evaluate: " in shown.err and "3/3" in shown.err and "counterfactual play" in shown.err
    assert main([*argv, "-q"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    assert quiet.out == shown.out  # the same metrics either way


def test_fit_shows_progress_unless_quiet(trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fit", str(trace_file), "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "-o", str(tmp_path / "a.pt")]) == 0
    assert "fit mechgym/PublicGoods-v0" in capsys.readouterr().err
    assert main([*argv, "-q", "-o", str(tmp_path / "b.pt")]) == 0
    assert capsys.readouterr().err == ""


def test_verbose_log_lines_never_land_inside_the_progress_bar(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    neural = ["--model", "neural"]  # one model: model="auto" also logs its prior search and the other families
    assert (
        main(["-v", "fit", str(trace_file), *neural, "--epochs", "3", "--device", "cpu", "-o", str(tmp_path / "f.pt")])
        == 0
    )
    err = capsys.readouterr().err
    segments = re.split(r"[\r\n]", err)  # what a terminal shows: the bar redraws after \r, a line ends at \n
    assert any(segment.startswith("fit mechgym/PublicGoods-v0") for segment in segments)  # the bar
    for epoch in (1, 2, 3):
        logged = [segment for segment in segments if f"epoch {epoch}: train_nll=" in segment]
        assert len(logged) == 1, err
        assert logged[0].startswith(f"epoch {epoch}: train_nll="), f"log line mixed into the bar: {logged[0]!r}"
    # -q -v: the same log lines, no bar
    assert (
        main(
            [
                "fit",
                str(trace_file),
                *neural,
                "--epochs",
                "2",
                "--device",
                "cpu",
                "-q",
                "-v",
                "-o",
                str(tmp_path / "g.pt"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]


# -- Ctrl-C during a fit ---------------------------------------------------------------------------------
@pytest.mark.parametrize("saved", [True, False], ids=["after-3-epochs", "before-any-epoch"])
def test_interrupted_fit_saves_the_best_epoch_so_far(
    fit_file: Path,
    trace_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    saved: bool,
) -> None:
    best: FitResult | None = load(fit_file) if saved else None

    def interrupted_fit(*args: Any, **kwargs: Any) -> FitResult:
        raise FitInterrupted(best, 3 if saved else 0, 10)

    monkeypatch.setattr(FIT_MODULE, "fit", interrupted_fit)
    output = tmp_path / "partial.pt"
    assert main(["fit", str(trace_file), "-q", "-o", str(output)]) == 130
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    (line,) = captured.err.strip().splitlines()
    if best is not None:
        expected = f"saved the best epoch so far (epoch {best.selected_epoch}) to {output}"
        assert line == f"diml fit: interrupted after 3 of 10 epochs; {expected}"
        assert load(output).history == best.history
    else:
        assert (
            line == f"diml fit: interrupted before any of the 10 epochs was done; nothing saved ({output} not written)"
        )
        assert not output.exists()


def test_ctrl_c_in_a_real_fit_saves_the_best_epoch(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real ``fit``: Ctrl-C (a KeyboardInterrupt from the epoch callback) during epoch 3 of 6."""
    real_fit: Callable[..., FitResult] = FIT_MODULE.fit

    def stop_in_epoch_3(epoch: int, mechanism: Mechanism) -> dict[str, float]:
        if epoch == 3:
            raise KeyboardInterrupt
        return {}

    def fit_with_ctrl_c(*args: Any, **kwargs: Any) -> FitResult:
        return real_fit(*args, callback=stop_in_epoch_3, **kwargs)

    monkeypatch.setattr(FIT_MODULE, "fit", fit_with_ctrl_c)
    output = tmp_path / "fit.pt"
    assert main(["fit", str(trace_file), "--epochs", "6", "-q", "--device", "cpu", "-o", str(output)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    result = load(output)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.selected_epoch in (1, 2)
    assert err.strip().splitlines()[-1] == (
        f"diml fit: interrupted after 2 of 6 epochs; saved the best epoch so far (epoch {result.selected_epoch}) "
        f"to {output}"
    )


@pytest.mark.timeout(300)
def test_sigint_during_diml_fit(trace_file: Path, tmp_path: Path) -> None:
    """A real Ctrl-C (SIGINT) once the first epoch is logged: the best epoch is saved, exit 130, no traceback."""
    output = tmp_path / "fit.pt"
    argv = ["-m", "diml_inverse", "-v", "fit", str(trace_file), "--epochs", "100000", "-q", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, *argv, "-o", str(output)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        # Ctrl-C as a terminal delivers it: a run started in the background of a non-interactive shell (`cmd &`)
        # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("epoch 1:"):
            process.send_signal(signal.SIGINT)
            break
    out, rest = process.communicate(timeout=120)
    err = "".join(seen) + rest
    assert process.returncode == 130, err
    assert "Traceback" not in err and out == ""
    result = load(output)
    assert len(result.history) >= 1
    assert f"saved the best epoch so far (epoch {result.selected_epoch}) to {output}" in err.strip().splitlines()[-1]
