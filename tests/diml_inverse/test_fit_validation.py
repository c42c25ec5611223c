"""diml_inverse.fit's boundary: every option validated by name, the up-front memory estimate and its guard."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import time

import pytest

import diml_inverse
import mechgym
import mechgym.memory
from diml_inverse.config import FIT_OPTION_RULES, check_fit_options
from diml_inverse.fit_options import PARAMETER_COPIES, estimate_fit_memory
from diml_inverse.models import model_skeleton
from mechgym.errors import ConfigurationError
from mechgym.mechanisms import AnonymousCountMechanism, NeuralJointMechanism
from mechgym.memory import MemoryBudgetError
from mechgym.traces import TraceDataset

E1 = "mechgym/NeuralMechanism-v0"
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def traces() -> TraceDataset:
    return mechgym.rollout(E1, n_episodes=10, n_rounds=20, seed=0)


def _fit(traces: TraceDataset, **options: object) -> diml_inverse.FitResult:
    defaults: dict[str, object] = {"epochs": 1, "progress": False, "device": "cpu"}
    env_id = options.pop("env_id", E1)
    return diml_inverse.fit(env_id, traces, **{**defaults, **options})  # type: ignore[arg-type]


# (option, bad value, words the message must contain)
BAD_OPTIONS: list[tuple[str, object, tuple[str, ...]]] = [
    ("grad_clip", -1, ("grad_clip must be None (no clipping) or a finite number > 0", "got -1 (int)", "grad_clip=1.0")),
    ("grad_clip", 0, ("grad_clip", "> 0", "got 0")),
    ("grad_clip", NAN, ("grad_clip", "finite", "got nan")),
    ("grad_clip", True, ("grad_clip", "got True (bool)")),
    ("payoff_l2", -1e-4, ("payoff_l2", ">= 0", "got -0.0001")),
    ("payoff_l2", INF, ("payoff_l2", "finite", "got inf")),
    ("weight_decay", -1.0, ("weight_decay", ">= 0", "got -1.0", "weight_decay=1e-06")),
    ("weight_decay", NAN, ("weight_decay", "finite", "got nan")),
    ("lr", 0, ("lr", "> 0", "got 0")),
    ("lr", INF, ("lr", "finite", "got inf")),
    ("lr", "1e-3", ("lr", "number", "got '1e-3' (str)")),
    ("lr", True, ("lr", "got True (bool)")),
    ("epochs", 0, ("epochs must be an integer >= 1", "got 0", "epochs=100")),
    ("epochs", 2.0, ("epochs", "integer", "got 2.0 (float)")),
    ("epochs", True, ("epochs", "not a bool", "got True (bool)")),
    ("batch_size", 0, ("batch_size", ">= 1", "got 0")),
    ("batch_size", False, ("batch_size", "got False (bool)")),
    ("valid_fraction", 1.0, ("valid_fraction", "[0, 1)", "got 1.0")),
    ("valid_fraction", -0.1, ("valid_fraction", "[0, 1)", "got -0.1")),
    ("valid_fraction", NAN, ("valid_fraction", "finite", "got nan")),
    ("patience", 0, ("patience", "None or an integer >= 1", "got 0")),
    ("patience", 1.5, ("patience", "got 1.5")),
    ("select", "best", ("select must be 'best_valid' or 'last'", "got 'best'")),
    ("seed", -1, ("seed", "[0, 2**64)", "got -1")),
    ("seed", 1.5, ("seed", "[0, 2**64)", "got 1.5 (float)")),
    ("seed", 2**64, ("seed", "[0, 2**64)", f"got {2**64}")),
    ("seed", True, ("seed", "not a bool", "got True (bool)")),
    ("learn_q0", 1, ("learn_q0 must be True or False", "got 1 (int)")),
    ("learn_alpha", "yes", ("learn_alpha", "True or False", "got 'yes'")),
    ("learn_epsilon", None, ("learn_epsilon", "True or False", "got None")),
    ("progress", 0, ("progress", "True or False", "got 0")),
    ("compile", "no", ("compile", "True or False")),
    ("check_memory", 1, ("check_memory", "True or False")),
    ("device", "mps", ("device 'mps' is not supported", "'cpu' and 'cuda'")),
    ("device", "meta", ("device 'meta' is not supported",)),
    ("device", "gpu", ("unknown device 'gpu'",)),
    ("agent_batch_size", 0, ("agent_batch_size", ">= 1", "got 0")),
    ("round_window", True, ("round_window", "got True (bool)")),
    ("burn_in", -1, ("burn_in", ">= 0", "got -1")),
    ("model", "tabluar", ("unknown model 'tabluar'", "Did you mean 'tabular'", "Mechanism instance")),
    ("model", 3, ("model must be one of", "Mechanism instance", "got 3 (int)")),
    ("model_kwargs", {"hiden": 64}, ("model_kwargs key", "'hiden'", "Did you mean 'hidden'", "NeuralJointMechanism")),
    ("model_kwargs", {"hidden": -1}, ("model_kwargs", "hidden", "-1", "NeuralJointMechanism")),
    ("model_kwargs", {"hidden": "wide"}, ("model_kwargs", "hidden", "wide")),
    ("model_kwargs", {"seed": 3}, ("model_kwargs may not set 'seed'", "seed=")),
    ("model_kwargs", {"n_agents": 4}, ("model_kwargs may not set 'n_agents'",)),
    ("model_kwargs", [("hidden", 64)], ("model_kwargs must be None or a dict", "got [('hidden', 64)] (list)")),
    ("env_kwargs", "n_agents=3", ("env_kwargs must be None or a dict", "got 'n_agents=3' (str)")),
    ("callback", "print", ("callback must be None or a callable", "got 'print'")),
    ("learner", "logit_q", ("learner must be None or a mechgym Learner", "got 'logit_q' (str)")),
    ("env_id", 3, ("env_id must be None or a registered environment id", "got 3 (int)")),
]


@pytest.mark.parametrize(("option", "value", "words"), BAD_OPTIONS, ids=[f"{o}={v!r}" for o, v, _ in BAD_OPTIONS])
def test_every_bad_option_is_refused_by_name(
    traces: TraceDataset, option: str, value: object, words: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        _fit(traces, **{option: value})
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


def test_options_are_checked_before_the_traces_are_read() -> None:
    with pytest.raises(ConfigurationError, match="grad_clip"):
        diml_inverse.fit(E1, "does/not/exist.parquet", grad_clip=-1.0, progress=False)


def test_every_fit_option_has_one_rule() -> None:
    arguments = set(inspect.signature(diml_inverse.fit).parameters) - {"traces", "config", "overrides"}
    options = {field.name for field in dataclasses.fields(diml_inverse.FitConfig)}
    assert arguments | options == set(FIT_OPTION_RULES)


def test_unknown_option_names_get_a_did_you_mean() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown fit option 'grad_clipp'\. Did you mean 'grad_clip'"):
        check_fit_options(grad_clipp=1.0)


@pytest.mark.parametrize(
    "options",
    [{"model": "structured", "model_kwargs": {"hidden": 8}}, {"model_kwargs": {"hidden": 8}, "model": "instance"}],
    ids=["structured", "instance"],
)
def test_model_kwargs_that_nothing_reads_are_refused(traces: TraceDataset, options: dict[str, object]) -> None:
    if options["model"] == "instance":
        options = {**options, "model": NeuralJointMechanism(3, 6, hidden=8)}
    with pytest.raises(ConfigurationError, match="model_kwargs only apply to model="):
        _fit(traces, **options)


def test_model_kwargs_are_checked_without_the_memory_guard_too(traces: TraceDataset) -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'hidden'"):
        _fit(traces, model_kwargs={"hiden": 8}, check_memory=False)
    with pytest.raises(ConfigurationError, match=r"model_kwargs=.*refused by AnonymousCountMechanism"):
        _fit(traces, model="anonymous", model_kwargs={"hidden": -1}, check_memory=False)


def test_boundary_values_are_accepted(traces: TraceDataset) -> None:
    result = _fit(
        traces,
        grad_clip=None,
        weight_decay=0,
        payoff_l2=0.0,
        lr=1,
        seed=2**64 - 1,
        valid_fraction=0.0,
        model_kwargs={"hidden": 8, "embed_dim": 4},
    )
    assert result.config.seed == 2**64 - 1 and result.config.grad_clip is None
    assert result.mechanism.hidden == 8 and result.mechanism.embed_dim == 4
    assert all(math.isfinite(row["train_nll"]) for row in result.history)


# -- the memory guard ---------------------------------------------------------------------------


def test_a_huge_model_is_refused_fast_with_the_estimate(traces: TraceDataset) -> None:
    started = time.perf_counter()
    with pytest.raises(MemoryBudgetError) as info:
        _fit(traces, model_kwargs={"hidden": 200000})
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert elapsed < 2.0, elapsed
    assert "40,004,600,111 parameters" in message, message
    assert re.search(r"needs about [\d.]+ (GiB|TiB)", message), message


def test_the_guard_refuses_what_the_device_cannot_hold_unless_turned_off(
    traces: TraceDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(_fit(traces, model="neural").history) == 1  # the real machine holds a small fit
    monkeypatch.setattr(mechgym.memory, "available_memory_bytes", lambda device="cpu": 16 * 2**20)
    with pytest.raises(MemoryBudgetError) as info:
        _fit(traces, model="neural")
    message = str(info.value)
    n_parameters = sum(p.numel() for p in NeuralJointMechanism(3, 6).parameters())
    assert f"a fit of model='neural' with {n_parameters:,} parameters" in message, message
    assert "16.0 MiB available" in message and "check_memory=False" in message, message
    assert len(_fit(traces, model="neural", check_memory=False).history) == 1


def test_the_skeleton_counts_the_parameters_without_allocating_them() -> None:
    truth = mechgym.make(E1).mechanism
    skeleton = model_skeleton("neural", truth, model_kwargs={"hidden": 64})
    real = NeuralJointMechanism(3, 6, hidden=64)
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    n_real = sum(p.numel() for p in real.parameters())
    assert sum(p.numel() for p in skeleton.parameters()) == n_real
    estimate = estimate_fit_memory(skeleton, n_train_episodes=8, n_valid_episodes=2, n_rounds=20, batch_size=4)
    assert estimate.n_parameters == n_real
    assert estimate.parameter_bytes == PARAMETER_COPIES * 4 * n_real
    assert estimate.data_bytes == 8 * 10 * 20 * 3
    assert estimate.minibatch == (4, 19, 3, 6)


def test_the_estimate_grows_with_the_minibatch_and_shrinks_with_windows() -> None:
    model = AnonymousCountMechanism(40, 10, hidden=32)  # no payoff table: the (own, alternative) rows path
    sizes = {"n_train_episodes": 64, "n_valid_episodes": 0, "n_rounds": 200}
    small, large = (estimate_fit_memory(model, batch_size=b, **sizes).step_bytes for b in (1, 8))
    assert large > small > 0
    whole = estimate_fit_memory(model, batch_size=8, **sizes)
    windowed = estimate_fit_memory(model, batch_size=8, window_rounds=21, **sizes)
    assert windowed.step_bytes < whole.step_bytes and windowed.minibatch == (8, 20, 40, 10)
    agents = estimate_fit_memory(model, batch_size=8, agent_batch_size=4, **sizes)
    assert agents.step_bytes < whole.step_bytes and agents.minibatch[2] == 4


def test_a_model_instance_is_estimated_from_its_own_parameters() -> None:
    instance = NeuralJointMechanism(3, 6, hidden=16, seed=1).double()  # float64: 8 bytes per parameter
    assert model_skeleton(instance, mechgym.make(E1).mechanism) is instance
    estimate = estimate_fit_memory(instance, n_train_episodes=8, n_valid_episodes=2, n_rounds=20, batch_size=4)
    assert estimate.parameter_bytes == PARAMETER_COPIES * 8 * sum(p.numel() for p in instance.parameters())
