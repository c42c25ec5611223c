"""diml_inverse.FitConfig: the one home of fit's options (defaults, docs, rules), the CLI made from it, the
result that keeps options apart from what the fit measured, files of the previous format, and function sizes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path

import pytest
import torch

import diml_inverse
import mechgym
from diml_inverse import FitConfig
from diml_inverse.cli import build_parser, main
from diml_inverse.config import FIT_ARGUMENTS, FIT_OPTION_RULES
from diml_inverse.experiments.configs import experiment_config
from diml_inverse.result import LEGACY_FIT_FILE_FORMAT
from mechgym.cli_support import field_docstrings
from mechgym.errors import ConfigurationError
from mechgym.learners import LogitQ
from mechgym.mechanisms import NeuralJointMechanism
from mechgym.traces import TraceDataset

E1 = "mechgym/NeuralMechanism-v0"
ROOT = Path(__file__).resolve().parents[2]  # tests/diml_inverse/ -> the repository
FIELDS = dataclasses.fields(FitConfig)


@pytest.fixture(scope="module")
def traces() -> TraceDataset:
    return mechgym.rollout(E1, n_episodes=8, n_rounds=12, seed=0)


def _history(result: diml_inverse.FitResult) -> list[dict[str, float]]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in result.history]


# -- the dataclass ---------------------------------------------------------------------------------
def test_every_field_has_a_docstring_and_a_rule() -> None:
    documented = field_docstrings(FitConfig)
    assert [field.name for field in FIELDS] == list(documented)
    assert all(len(text) > 10 for text in documented.values())
    assert {field.name for field in FIELDS} | set(FIT_ARGUMENTS) == set(FIT_OPTION_RULES)


def test_the_defaults_are_the_published_settings() -> None:
    config = FitConfig()
    assert (config.epochs, config.batch_size, config.lr, config.weight_decay) == (100, 32, 1e-3, 1e-6)
    assert (config.payoff_l2, config.grad_clip, config.valid_fraction, config.select) == (1e-4, 1.0, 0.2, "best_valid")
    assert (config.model, config.device, config.seed, config.progress, config.check_memory) == (
        "auto",
        "auto",
        0,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("epochs", 0, ("epochs must be an integer >= 1", "Pass e.g. epochs=100 (the default)")),
        ("lr", float("nan"), ("lr must be a finite number > 0", "got nan")),
        ("select", "best", ("select must be 'best_valid' or 'last'",)),
        ("model", "tabluar", ("Did you mean 'tabular'",)),
        ("device", "mps", ("device 'mps' is not supported",)),
        ("learn_alpha", 1, ("learn_alpha must be True or False",)),
    ],
)
def test_a_bad_field_is_refused_where_the_config_is_made(field: str, value: object, words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError) as info:
        FitConfig(**{field: value})  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value), str(info.value)
    with pytest.raises(ConfigurationError, match="burn_in only applies to round windows"):
        FitConfig(burn_in=3)
    with pytest.raises(ConfigurationError, match="epochs"):
        dataclasses.replace(FitConfig(), epochs=-1)


def test_a_cuda_device_is_looked_for_when_the_fit_starts(traces: TraceDataset) -> None:
    config = FitConfig(device="cuda:1")  # a config (or a fit file) from a GPU machine is valid anywhere
    if torch.cuda.device_count() < 2:
        with pytest.raises(ConfigurationError, match="cuda:1"):
            diml_inverse.fit(E1, traces, config=config, epochs=1, progress=False)


# -- fit's call shape ------------------------------------------------------------------------------
def test_keywords_and_a_config_make_the_same_fit(traces: TraceDataset) -> None:
    by_keywords = diml_inverse.fit(E1, traces, epochs=2, lr=1e-2, seed=3, progress=False, device="cpu")
    config = FitConfig(epochs=2, lr=0.5, seed=3, progress=False, device="cpu")
    by_config = diml_inverse.fit(E1, traces, config=config, lr=1e-2)  # config plus overrides
    assert by_config.config == by_keywords.config == dataclasses.replace(config, lr=1e-2)
    assert _history(by_config) == _history(by_keywords)
    for p, q in zip(by_config.mechanism.parameters(), by_keywords.mechanism.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epoch": 5}, r"unknown fit option 'epoch'\. Did you mean 'epochs'"),
        ({"learn_beta": True}, r"unknown fit option 'learn_beta'\. Did you mean .*'learn_alpha'"),
        ({"callbak": print}, r"Did you mean 'callback'"),
        ({"config": {"epochs": 5}}, "config must be None or a diml_inverse.FitConfig; got dict"),
    ],
)
def test_unknown_keywords_get_a_did_you_mean(traces: TraceDataset, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        diml_inverse.fit(E1, traces, progress=False, **options)  # type: ignore[arg-type]


def test_the_result_keeps_the_options_apart_from_what_the_fit_measured(tmp_path: Path, traces: TraceDataset) -> None:
    result = diml_inverse.fit(E1, traces, epochs=2, progress=False, device="cpu")
    assert isinstance(result.config, FitConfig)
    assert result.config.model == "auto"  # the option; the family it resolved to was measured
    assert {str(row["model"]) for row in result.model_search} == {"interaction", "interaction_totals"}
    assert result.model_name in {"interaction", "interaction_totals"}
    assert (result.config.env_kwargs, result.env_kwargs) == (None, traces.metadata.env_kwargs)
    assert (result.env_id, result.assumed_learner, result.fit_device) == (E1, LogitQ(), "cpu")
    assert (result.n_train_episodes, result.n_valid_episodes) == (6, 2)
    assert result.seconds >= sum(row["seconds"] for row in result.history) > 0
    loaded = diml_inverse.load(result.save(tmp_path / "fit.pt"))
    for name in ("config", "env_id", "env_kwargs", "model_name", "assumed_learner", "fit_device", "seconds"):
        assert getattr(loaded, name) == getattr(result, name), name
    assert (loaded.n_train_episodes, loaded.n_valid_episodes) == (6, 2)


def test_a_fit_from_an_instance_saves_its_class_name(tmp_path: Path, traces: TraceDataset) -> None:
    model = NeuralJointMechanism(3, 6, hidden=8, seed=1)
    result = diml_inverse.fit(E1, traces, model=model, epochs=1, progress=False, device="cpu")
    assert result.config.model is model and result.model_name == "NeuralJointMechanism"
    loaded = diml_inverse.load(result.save(tmp_path / "fit.pt"))
    assert loaded.model_name == "NeuralJointMechanism"
    assert isinstance(loaded.config.model, NeuralJointMechanism)  # the fitted weights: the start is not saved
    assert loaded.config.model is not loaded.mechanism
    assert dataclasses.replace(loaded.config, model=model) == result.config


# -- files of the previous format ---------------------------------------------------------------------
#: The config of a fit file written by the previous version (diml_inverse.fit/1), as it wrote it: the options
#: and what the fit measured in one dict, the model and the device as used.
LEGACY_CONFIG = {
    "env_id": E1,
    "env_kwargs": {"n_agents": 3, "n_actions": 6, "n_rounds": 12, "mechanism_seed": 0, "embed_dim": None},
    "model": "neural",
    "model_kwargs": {"hidden": 8},
    "learner": {"name": "logit_q", "params": {"alpha": 0.25, "beta": 3.0, "epsilon": 0.06, "q0": 0.0}},
    "epochs": 2,
    "batch_size": 32,
    "lr": 0.001,
    "weight_decay": 1e-06,
    "payoff_l2": 0.0001,
    "grad_clip": 1.0,
    "valid_fraction": 0.2,
    "patience": None,
    "select": "best_valid",
    "learn_q0": True,
    "learn_alpha": True,
    "learn_epsilon": False,
    "seed": 0,
    "device": "cuda:0",
    "n_train_episodes": 6,
    "n_valid_episodes": 2,
    "agent_batch_size": None,
    "round_window": 4,
    "burn_in": 3,
    "compile": False,
    "extra": {},
}


def _legacy_file(path: Path, config: dict[str, object]) -> Path:
    """A fit file as the previous version's ``FitResult.save`` wrote it (format /1, its content hash)."""
    from diml_inverse import result as result_module

    mechanism = NeuralJointMechanism(3, 6, hidden=8, seed=0)
    description = {
        "format": LEGACY_FIT_FILE_FORMAT,
        "family": mechanism.family,
        "mechanism_config": mechanism.config(),
        "learner": {"name": "logit_q", "params": {"alpha": 0.3, "beta": 3.0, "epsilon": 0.06, "q0": 0.0}},
        "history": [{"epoch": 1, "train_nll": 1.8, "burn_in": 3, "valid_nll": 1.79, "seconds": 0.01}],
        "config": config,
        "selected_epoch": 1,
        "best_epoch": 1,
    }
    description_json = json.dumps(description)
    state_dict = mechanism.state_dict()
    q0 = torch.zeros(3, 6)
    torch.save(
        {
            "description": description_json,
            "state_dict": state_dict,
            "q0": q0,
            "sha256": result_module._content_hash(state_dict, q0, description_json),
        },
        path,
    )
    return path


def test_files_of_the_previous_format_still_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        loaded = diml_inverse.load(_legacy_file(tmp_path / "old.pt", LEGACY_CONFIG))
    assert not caplog.records  # its content hash verifies
    names = {field.name for field in FIELDS} - {"env_kwargs"}  # the file's env_kwargs are the ones used: measured
    options = {key: value for key, value in LEGACY_CONFIG.items() if key in names}
    assert loaded.config == FitConfig(**options)  # type: ignore[arg-type]
    assert (loaded.env_id, loaded.env_kwargs, loaded.model_name) == (E1, LEGACY_CONFIG["env_kwargs"], "neural")
    assert loaded.assumed_learner == LogitQ() and loaded.learner == LogitQ(alpha=0.3)
    assert (loaded.fit_device, loaded.n_train_episodes, loaded.n_valid_episodes) == ("cuda:0", 6, 2)
    assert math.isnan(loaded.seconds)
    again = diml_inverse.load(loaded.save(tmp_path / "new.pt"))  # saved again in the current format
    assert again.config == loaded.config and again.assumed_learner == loaded.assumed_learner


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"env_id": 5}, r"config\['env_id'\] must be a registered environment id"),
        ({"n_train_episodes": -1}, r"config\['n_train_episodes'\] must be an integer >= 0"),
        ({"epochs": 0}, r"config\['epochs'\] must be an integer >= 1"),
        ({"epohcs": 3}, r"unknown fit option 'epohcs'\. Did you mean 'epochs'"),
        ({"round_window": None}, "burn_in only applies to round windows"),
    ],
)
def test_bad_legacy_configs_are_refused(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(diml_inverse.FitFileError, match=message):
        diml_inverse.load(_legacy_file(tmp_path / "old.pt", {**LEGACY_CONFIG, **change}))


# -- the command line ------------------------------------------------------------------------------
def _fit_parser() -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["fit"]


def test_every_field_is_a_diml_fit_option_of_the_same_name_and_default() -> None:
    actions = {option: action for action in _fit_parser()._actions for option in action.option_strings}
    documented = field_docstrings(FitConfig)
    for field in FIELDS:
        action = actions[f"--{field.name.replace('_', '-')}"]
        assert action.dest == field.name and action.default == field.default, field.name
        assert action.help is not None and action.help.startswith(documented[field.name].split()[0]), field.name
        if field.default is True:
            assert f"--no-{field.name.replace('_', '-')}" in action.option_strings, field.name


def test_the_kept_flag_names_parse_to_the_config() -> None:
    argv = ["fit", "t.parquet", "--learn-alpha", "--compile", "--patience", "3", "--batch-size", "8"]
    argv += ["--grad-clip", "none", "--model-kwargs", '{"hidden": 16}', "--no-check-memory", "--select", "last"]
    args = build_parser().parse_args(argv)
    from mechgym.cli_support import dataclass_from_args

    config = dataclass_from_args(FitConfig, args)
    assert config == FitConfig(
        learn_alpha=True,
        compile=True,
        patience=3,
        batch_size=8,
        grad_clip=None,
        model_kwargs={"hidden": 16},
        check_memory=False,
        select="last",
    )


def test_cli_options_reach_the_fit(tmp_path: Path, traces: TraceDataset, capsys: pytest.CaptureFixture[str]) -> None:
    trace_file = traces.save(tmp_path / "traces.parquet")
    output = tmp_path / "fit.pt"
    argv = ["fit", str(trace_file), "--epochs", "1", "-q", "--device", "cpu", "-o", str(output)]
    assert main([*argv, "--model-kwargs", '{"hidden": 8}', "--weight-decay", "0", "--grad-clip", "none"]) == 0
    result = diml_inverse.load(output)
    assert result.mechanism.hidden == 8  # type: ignore[union-attr]
    assert (result.config.weight_decay, result.config.grad_clip, result.config.progress) == (0.0, None, False)
    capsys.readouterr()
    assert main([*argv, "--overwrite", "--model-kwargs", "[1]"]) == 2
    assert "expected a JSON object" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--epochs", "0"]) == 2
    assert "epochs must be an integer >= 1" in capsys.readouterr().err


def test_the_experiments_hold_a_fit_config() -> None:
    e1, e4 = experiment_config("e1"), experiment_config("e4", epochs=7)
    assert e1.training == FitConfig() and e4.training == FitConfig(epochs=7, batch_size=8)
    assert json.loads(json.dumps(e1.to_dict()))["training"] == FitConfig().to_dict()
