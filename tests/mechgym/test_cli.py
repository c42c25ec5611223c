"""The ``mechgym`` command line, called in-process through ``main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mechgym
import mechgym.registration
from mechgym.cli import main
from mechgym.envs import markdown_table
from mechgym.learners import LogitQ
from mechgym.traces import load_traces

ENV_ID = "mechgym/Congestion-v0"


def record(tmp_path: Path, *extra: str, name: str = "traces.parquet") -> Path:
    path = tmp_path / name
    status = main(["record", ENV_ID, "--episodes", "3", "--rounds", "5", "--seed", "1", "-q", "-o", str(path), *extra])
    assert status == 0
    return path


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["id", "family", "N", "A", "rounds"]
    for env_id in mechgym.registered_ids():
        assert env_id in out
    assert ["mechgym/Congestion-v0", "congestion", "4", "5", "60"] in [line.split() for line in lines]
    assert ["mechgym/AnonymousGame-v0", "anonymous", "40", "10", "30"] in [line.split() for line in lines]


def test_list_survives_a_game_that_cannot_be_built(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the broken game leaves mechgym's list with the test (else later listings warn about it)
    monkeypatch.setattr(mechgym.registration, "_MECHGYM_IDS", dict(mechgym.registration._MECHGYM_IDS))
    mechgym.register("testcli/Broken-v0", lambda n_rounds=3: object(), single_agent=False)
    with pytest.warns(UserWarning, match="ParallelEnv"):
        assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ["mechgym/Congestion-v0", "congestion", "4", "5", "60"] in [line.split() for line in lines]
    assert [line for line in lines if line.startswith("testcli/Broken-v0")] == [
        "testcli/Broken-v0  (cannot be built with its defaults: the entry point of 'testcli/Broken-v0' returned a "
        "object; mechgym.make needs a MechanismGameEnv)"
    ]


def test_list_markdown_is_the_docs_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--markdown"]) == 0
    assert capsys.readouterr().out == markdown_table()


def test_record_matches_rollout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = record(tmp_path)
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    assert out.startswith(f"recorded 3 episodes x 5 rounds x 4 agents (A=5) of {ENV_ID}")
    assert str(path) in out
    traces = load_traces(path, env_id=ENV_ID)
    expected = mechgym.rollout(mechgym.make(ENV_ID, n_rounds=5), n_episodes=3, seed=1)
    assert traces == expected
    assert traces.metadata.env_kwargs["n_rounds"] == 5
    assert traces.metadata.learner == mechgym.make(ENV_ID).default_learner.to_dict()


def test_record_with_learner_params_and_env_kwargs(tmp_path: Path) -> None:
    path = record(
        tmp_path,
        "--alpha",
        "0.5",
        "--epsilon",
        "0.1",
        "--env-kwarg",
        "pricing=subsidy",
        "--env-kwarg",
        "mechanism_seed=3",
    )
    traces = load_traces(path)
    assert traces.metadata.learner == LogitQ(alpha=0.5, epsilon=0.1).to_dict()  # beta from the default learner
    assert traces.metadata.env_kwargs["pricing"] == "subsidy"
    assert traces.metadata.env_kwargs["mechanism_seed"] == 3
    env = mechgym.make(ENV_ID, n_rounds=5, pricing="subsidy", mechanism_seed=3)
    assert traces == mechgym.rollout(env, LogitQ(alpha=0.5, epsilon=0.1), n_episodes=3, seed=1)


def test_record_npz_with_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sub" / "traces.npz"
    assert main(["record", ENV_ID, "--episodes", "2", "--rounds", "4", "-o", str(path)]) == 0
    assert "rollout" in capsys.readouterr().err  # the tqdm bar
    assert load_traces(path).actions.shape == (2, 4, 4)


def test_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = record(tmp_path)
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{path} (Parquet, ")
    for expected in ("episodes  3", "rounds    5", "agents    4", "actions   5", "rewards   yes", ENV_ID, "logit_q("):
        assert expected in out
    assert main(["info", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_episodes"] == 3 and summary["metadata"]["env_id"] == ENV_ID


def test_unknown_env_id_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["record", "mechgym/Congestoin-v0", "-q", "-o", str(tmp_path / "t.parquet")])
    assert status == 2
    captured = capsys.readouterr()
    assert "Did you mean 'mechgym/Congestion-v0'" in captured.err
    assert "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env-kwarg", "pricng=subsidy"], "Did you mean 'pricing'"),
        (["--episodes", "0"], "n_episodes must be an integer >= 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--alpha", "2"], "alpha must be in (0, 1]"),
        (["--device", "tpu"], "unknown device"),
    ],
    ids=["env-kwarg-typo", "episodes", "rounds", "alpha", "device"],
)
def test_record_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["record", ENV_ID, "-q", "-o", str(tmp_path / "t.parquet"), *args]) == 2
    assert message in capsys.readouterr().err


def test_record_bad_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", ENV_ID, "-q", "-o", str(tmp_path / "t.csv")]) == 2
    assert "must end in .parquet or .npz" in capsys.readouterr().err


def test_info_on_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "missing.parquet")]) == 2
    assert "no trace file at" in capsys.readouterr().err
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    assert main(["info", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["record"], ["record", ENV_ID, "--env-kwarg", "novalue", "-o", "x.parquet"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: mechgym" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", "--help"]) == 0
    assert "--env-kwarg KEY=VALUE" in capsys.readouterr().out


def test_env_kwarg_values_are_json_when_they_parse(tmp_path: Path) -> None:
    path = record(tmp_path, "--env-kwarg", "counterfactual_info=false")
    assert load_traces(path).metadata.env_kwargs["counterfactual_info"] is False


def test_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mechgym", "info", str(tmp_path / "missing.parquet")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "no trace file" in result.stderr and "Traceback" not in result.stderr


def test_recorded_traces_are_deterministic(tmp_path: Path) -> None:
    first, second = record(tmp_path, name="a.parquet"), record(tmp_path, name="b.parquet")
    np.testing.assert_array_equal(load_traces(first).actions, load_traces(second).actions)


def test_unknown_learner_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", ENV_ID, "--learner", "bandit_qq", "-o", str(tmp_path / "t.parquet")]) == 2
    err = capsys.readouterr().err
    assert "unknown learner 'bandit_qq'. Did you mean 'bandit-q'?" in err
    assert "Known: a2c, bandit-q, dqn, hedge, logit-q, ppo, smooth-fp." in err
    assert list(tmp_path.iterdir()) == []


def test_sb3_training_shows_progress_unless_quiet_and_its_traces_fit_with_a_learner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("stable_baselines3")
    from diml_inverse import load
    from diml_inverse.cli import main as diml_main
    from mechgym.learners import Hedge

    argv = ["record", ENV_ID, "--learner", "ppo", "--sb3-kwarg", "n_steps=4", "--sb3-kwarg", "batch_size=4"]
    argv += ["--episodes", "2", "--rounds", "4"]
    assert main([*argv, "-o", str(tmp_path / "shown.parquet")]) == 0
    assert "ppo training" in capsys.readouterr().err  # the tqdm bar over training rounds
    assert main([*argv, "-q", "-o", str(tmp_path / "ppo.parquet")]) == 0
    assert capsys.readouterr().err == ""
    assert load_traces(tmp_path / "ppo.parquet") == load_traces(tmp_path / "shown.parquet")

    fit_path = tmp_path / "fit.pt"
    fit_argv = ["fit", str(tmp_path / "ppo.parquet"), "--epochs", "1", "--valid-fraction", "0", "-q"]
    fit_argv += ["--device", "cpu", "-o", str(fit_path)]
    assert diml_main(fit_argv) == 2  # SB3 agents have no likelihood model: say which learner to assume
    assert "Stable-Baselines3 PPO agents" in capsys.readouterr().err
    assert diml_main([*fit_argv, "--learner", "hedge", "--eta", "0.05"]) == 0
    assert load(fit_path).learner == Hedge(eta=0.05)
