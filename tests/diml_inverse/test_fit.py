"""diml_inverse.fit: recovery at E1 size and on an anonymous game, options, results, bad input."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import diml_inverse
import mechgym
from diml_inverse import metrics
from diml_inverse.fit import FitDivergedError, FitInterrupted
from diml_inverse.result import FitFileError
from mechgym.errors import ConfigurationError, MechGymError, TraceDatasetError
from mechgym.learners import LogitQ
from mechgym.mechanisms import (
    AdditiveCountMechanism,
    AnonymousCountMechanism,
    Mechanism,
    NeuralJointMechanism,
    TabularMechanism,
)
from mechgym.traces import TraceDataset, TraceMetadata

E1 = "mechgym/NeuralMechanism-v0"


@pytest.fixture(scope="module")
def e1_traces() -> TraceDataset:
    """E1-sized traces: 3 agents x 6 actions, 60 episodes x 60 rounds (48 train / 12 test)."""
    return mechgym.rollout(E1, n_episodes=60, n_rounds=60, seed=0)


def test_recovers_e1_mechanism_below_half_the_zero_baseline(e1_traces: TraceDataset) -> None:
    train, test = e1_traces.split(0.8)
    result = diml_inverse.fit(E1, train, epochs=30, device="cpu", seed=0, progress=False)
    truth = mechgym.make(E1).mechanism
    error = metrics.diff_mse(truth, result.mechanism, test, seed=1)
    baseline = metrics.zero_baseline_diff_mse(truth, test, seed=1)
    assert error < 0.5 * baseline, (error, baseline)
    # at 30 epochs the network is not converged and the interaction model (L-BFGS, which stops once converged) can
    # win the held-out comparison; the network trains every epoch
    assert 1 <= result.selected_epoch <= len(result.history) <= 30
    if result.model_name == "neural":
        assert len(result.history) == 30 and result.history[-1]["train_nll"] < result.history[0]["train_nll"]


def test_recovers_anonymous_game_below_half_the_zero_baseline() -> None:
    env_id = "mechgym/AnonymousGame-v0"
    kwargs = {"n_agents": 20, "n_actions": 6}
    traces = mechgym.rollout(mechgym.make(env_id, **kwargs), n_episodes=20, n_rounds=30, seed=0)
    train, test = traces.split(0.8)
    result = diml_inverse.fit(env_id, train, epochs=12, batch_size=8, device="cpu", seed=0, progress=False)
    # model="auto" fits every anonymous family and keeps the best held-out NLL
    assert result.model_name in ("additive_counts", "aggregate_counts", "anonymous")
    assert isinstance(result.mechanism, (AdditiveCountMechanism, AnonymousCountMechanism))
    truth = mechgym.make(env_id, **kwargs).mechanism
    error = metrics.diff_mse(truth, result.mechanism, test, seed=1)
    baseline = metrics.zero_baseline_diff_mse(truth, test, seed=1)
    assert error < 0.5 * baseline, (error, baseline)


def test_same_seed_same_fit(e1_traces: TraceDataset) -> None:
    small = e1_traces.episodes(slice(0, 10))
    first = diml_inverse.fit(E1, small, epochs=2, seed=3, progress=False, device="cpu")
    second = diml_inverse.fit(E1, small, epochs=2, seed=3, progress=False, device="cpu")
    for p, q in zip(first.mechanism.parameters(), second.mechanism.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [r["train_nll"] for r in first.history] == [r["train_nll"] for r in second.history]


@pytest.mark.parametrize(("model", "cls"), [("tabular", TabularMechanism), ("neural", NeuralJointMechanism)])
def test_model_families(e1_traces: TraceDataset, model: str, cls: type) -> None:
    result = diml_inverse.fit(E1, e1_traces.episodes(slice(0, 8)), model=model, epochs=2, progress=False, device="cpu")
    assert isinstance(result.mechanism, cls)
    assert result.config.model == model


def test_structured_model_is_the_game_family() -> None:
    traces = mechgym.rollout("mechgym/Congestion-v0", n_episodes=8, n_rounds=20, seed=0)
    result = diml_inverse.fit(None, traces, model="structured", epochs=2, progress=False, device="cpu")
    truth = mechgym.make("mechgym/Congestion-v0").mechanism
    assert type(result.mechanism) is type(truth)
    assert not torch.equal(result.mechanism.c1, truth.c1)  # random init, never the truth


def test_misspecified_learner_is_recorded(e1_traces: TraceDataset) -> None:
    wrong = LogitQ(alpha=0.25, beta=1.8, epsilon=0.06)
    result = diml_inverse.fit(
        E1, e1_traces.episodes(slice(0, 8)), learner=wrong, epochs=1, progress=False, device="cpu"
    )
    assert result.learner == wrong
    assert result.assumed_learner is not None and result.assumed_learner.to_dict() == wrong.to_dict()


def test_learn_alpha_epsilon_and_q0(e1_traces: TraceDataset) -> None:
    result = diml_inverse.fit(
        E1,
        e1_traces.episodes(slice(0, 16)),
        epochs=3,
        model="neural",  # Adam steps (the interaction model's L-BFGS may take the rates to their bounds)
        learn_alpha=True,
        learn_epsilon=True,
        learn_q0=True,
        lr=1e-2,
        progress=False,
        device="cpu",
    )
    assert result.learner.alpha != 0.25 and 0 < result.learner.alpha < 1
    assert result.learner.epsilon != 0.06 and 0 < result.learner.epsilon < 1
    assert result.learner.beta == 3.0
    assert result.q0 is not None and result.q0.shape == (3, 6)


def test_early_stopping_and_selection(e1_traces: TraceDataset) -> None:
    data = e1_traces.episodes(slice(0, 12))
    stopped = diml_inverse.fit(E1, data, epochs=50, patience=1, lr=0.05, progress=False, device="cpu")
    assert len(stopped.history) < 50
    assert stopped.selected_epoch == stopped.best_epoch
    best_valid = min(r["valid_nll"] for r in stopped.history)
    assert stopped.history[stopped.best_epoch - 1]["valid_nll"] == best_valid
    last = diml_inverse.fit(E1, data, epochs=3, select="last", progress=False, device="cpu")
    assert last.selected_epoch == 3
    no_valid = diml_inverse.fit(E1, data, epochs=2, valid_fraction=0.0, progress=False, device="cpu")
    assert "valid_nll" not in no_valid.history[0] and no_valid.n_valid_episodes == 0


def test_callback_rows_join_the_history(e1_traces: TraceDataset) -> None:
    seen: list[int] = []

    def track(epoch: int, mechanism: mechgym.mechanisms.Mechanism) -> dict[str, float]:
        seen.append(epoch)
        return {"param_norm": float(sum(p.norm() for p in mechanism.parameters()))}

    result = diml_inverse.fit(
        E1, e1_traces.episodes(slice(0, 8)), epochs=2, callback=track, model="neural", progress=False, device="cpu"
    )
    assert seen == [1, 2] and all("param_norm" in row for row in result.history)


def test_gauge_fixed_payoffs_and_differences(e1_traces: TraceDataset) -> None:
    result = diml_inverse.fit(E1, e1_traces.episodes(slice(0, 8)), epochs=1, progress=False, device="cpu")
    joint = e1_traces.actions_tensor()[0, :10]
    cf = result.mechanism.counterfactual_payoffs(joint).detach()
    fixed = result.gauge_fixed_payoffs(joint)
    torch.testing.assert_close(fixed, result.mechanism(joint).detach() - cf.mean(-1))
    differences = result.payoff_differences(joint)
    assert differences.shape == (10, 3, 6)
    assert torch.all(differences.gather(-1, joint[..., None]) == 0)
    with pytest.raises(MechGymError):
        result.payoff_differences(torch.tensor([[0, 1, 9]]))


def test_save_load_roundtrip(tmp_path: Path, e1_traces: TraceDataset) -> None:
    result = diml_inverse.fit(
        E1, e1_traces.episodes(slice(0, 8)), epochs=2, learn_q0=True, progress=False, device="cpu"
    )
    path = result.save(tmp_path / "fit.pt")
    loaded = diml_inverse.load(path)
    joint = e1_traces.actions_tensor()[1]
    torch.testing.assert_close(loaded.mechanism(joint), result.mechanism(joint))
    assert loaded.learner == result.learner and loaded.history == result.history
    assert loaded.config == result.config and loaded.selected_epoch == result.selected_epoch
    torch.testing.assert_close(loaded.q0, result.q0)
    assert [p.name for p in tmp_path.iterdir()] == ["fit.pt"]  # no temporary files left


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_load_rejects_bad_files(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "fit.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(FitFileError):
        diml_inverse.load(path)


def test_simulate_counterfactual_prediction(e1_traces: TraceDataset) -> None:
    result = diml_inverse.fit(E1, e1_traces.episodes(slice(0, 8)), epochs=1, progress=False, device="cpu")
    other = LogitQ(alpha=0.5, beta=5.0, epsilon=0.1)
    simulated = result.simulate(other, n_episodes=4, n_rounds=12, seed=2)
    assert simulated.actions.shape == (4, 12, 3)
    assert simulated.learner() == other and simulated.metadata.extra == {"mechanism": "fitted"}
    assert simulated == result.simulate(other, n_episodes=4, n_rounds=12, seed=2)


def _traces(actions: np.ndarray, env_id: str | None = E1, n_actions: int = 6) -> TraceDataset:
    metadata = TraceMetadata(n_agents=actions.shape[2], n_actions=n_actions, env_id=env_id, learner=LogitQ().to_dict())
    return TraceDataset(actions=actions, metadata=metadata)


def test_bad_input_gets_clear_errors(e1_traces: TraceDataset) -> None:
    ok = np.zeros((4, 10, 3), dtype=np.int64)
    with pytest.raises(TraceDatasetError, match="agents"):
        diml_inverse.fit(E1, _traces(np.zeros((4, 10, 4), dtype=np.int64)), progress=False)
    with pytest.raises(TraceDatasetError, match="actions"):
        diml_inverse.fit(E1, _traces(ok, n_actions=5), progress=False)
    with pytest.raises(TraceDatasetError, match="recorded on mechgym/NeuralMechanism-v0"):
        diml_inverse.fit("mechgym/PublicGoods-v0", _traces(ok), progress=False)
    with pytest.raises(mechgym.UnknownEnvironmentError, match="Did you mean"):
        diml_inverse.fit("mechgym/NeuralMechanism-v1", _traces(ok, env_id=None), progress=False)
    with pytest.raises(ConfigurationError, match="Did you mean 'tabular'"):
        diml_inverse.fit(E1, _traces(ok), model="tabluar", progress=False)
    with pytest.raises(ConfigurationError, match="at least 2 rounds"):
        diml_inverse.fit(E1, _traces(np.zeros((4, 1, 3), dtype=np.int64)), progress=False)
    with pytest.raises(TraceDatasetError):
        diml_inverse.fit(E1, "does/not/exist.parquet", progress=False)
    with pytest.raises(TraceDatasetError, match="TraceDataset"):
        diml_inverse.fit(E1, e1_traces.actions, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="epochs"):
        diml_inverse.fit(E1, e1_traces, epochs=0, progress=False)
    with pytest.raises(ConfigurationError, match="CUDA"):
        if torch.cuda.is_available():
            raise ConfigurationError("CUDA present: nothing to check")
        diml_inverse.fit(E1, e1_traces, device="cuda", progress=False)


def test_nan_weights_are_refused(e1_traces: TraceDataset) -> None:
    model = NeuralJointMechanism(3, 6)
    with torch.no_grad():
        model.layer1.weight[0, 0] = float("nan")
    with pytest.raises(ConfigurationError, match="NaN"):
        diml_inverse.fit(E1, e1_traces.episodes(slice(0, 4)), model=model, progress=False, device="cpu")


def test_diverging_fit_stops_with_a_clear_message(e1_traces: TraceDataset) -> None:
    with pytest.raises(FitDivergedError, match="diverged"):
        diml_inverse.fit(
            E1,
            e1_traces.episodes(slice(0, 8)),
            model="tabular",
            lr=1e30,
            grad_clip=None,
            payoff_l2=0.0,
            epochs=5,
            progress=False,
            device="cpu",
        )


def test_fit_from_a_saved_file(tmp_path: Path, e1_traces: TraceDataset) -> None:
    path = tmp_path / "traces.parquet"
    e1_traces.episodes(slice(0, 6)).save(path)
    result = diml_inverse.fit(None, path, epochs=1, progress=False, device="cpu")
    assert result.env_id == E1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_matches_cpu(e1_traces: TraceDataset) -> None:
    data = e1_traces.episodes(slice(0, 16))
    cpu = diml_inverse.fit(E1, data, epochs=3, seed=0, progress=False, device="cpu")
    gpu = diml_inverse.fit(E1, data, epochs=3, seed=0, progress=False, device="cuda")
    for row_cpu, row_gpu in zip(cpu.history, gpu.history, strict=True):
        assert abs(row_cpu["train_nll"] - row_gpu["train_nll"]) < 1e-4
    joint = data.actions_tensor()[0]
    torch.testing.assert_close(gpu.mechanism(joint.cuda()).cpu(), cpu.mechanism(joint), rtol=1e-3, atol=1e-4)


def test_agent_minibatches_cover_large_games_in_bounded_memory() -> None:
    env_id = "mechgym/AnonymousGame-v0"
    kwargs = {"n_agents": 30, "n_actions": 5}
    traces = mechgym.rollout(mechgym.make(env_id, **kwargs), n_episodes=6, n_rounds=12, seed=0)
    result = diml_inverse.fit(
        env_id,
        traces,
        epochs=2,
        batch_size=3,
        agent_batch_size=7,
        progress=False,
        device="cpu",
        model_kwargs={"hidden": 16},
    )
    assert result.config.agent_batch_size == 7
    assert all(np.isfinite(row["train_nll"]) and np.isfinite(row["valid_nll"]) for row in result.history)
    with pytest.raises(ConfigurationError, match="agent_batch_size"):
        diml_inverse.fit(env_id, traces, epochs=1, agent_batch_size=0, progress=False, device="cpu")


@pytest.mark.slow
def test_compiled_fit_equals_the_eager_fit(e1_traces: TraceDataset) -> None:
    options = {"epochs": 3, "batch_size": 16, "device": "cpu", "progress": False, "seed": 4}
    eager = diml_inverse.fit("mechgym/NeuralMechanism-v0", e1_traces, **options)
    compiled = diml_inverse.fit("mechgym/NeuralMechanism-v0", e1_traces, compile=True, **options)
    assert compiled.config.compile is True
    for first, second in zip(eager.history, compiled.history, strict=True):
        assert second["train_nll"] == pytest.approx(first["train_nll"], rel=1e-4)
        assert second["valid_nll"] == pytest.approx(first["valid_nll"], rel=1e-4)


def test_a_failing_compile_is_a_clear_error(e1_traces: TraceDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        def call(*inner: object) -> None:
            raise RuntimeError("Compiler: cl is not found.\nmore detail")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(ConfigurationError, match=r"torch.compile failed .*cl is not found.*compile=False"):
        # the network's Adam steps (full-batch L-BFGS fits of the prior families are not compiled)
        diml_inverse.fit(E1, e1_traces, model="neural", epochs=1, compile=True, progress=False)


def test_a_model_instance_is_copied_never_trained_in_place(e1_traces: TraceDataset) -> None:
    data = e1_traces.episodes(slice(0, 8))
    model = NeuralJointMechanism(3, 6, hidden=16, seed=5)
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    first = diml_inverse.fit(E1, data, model=model, epochs=2, progress=False, device="cpu")
    assert first.mechanism is not model
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), name  # the caller's module is untouched
    trained = {name: tensor.clone() for name, tensor in first.mechanism.state_dict().items()}
    assert not torch.equal(trained["layer2.weight"], original["layer2.weight"])  # the fit did train its copy
    second = diml_inverse.fit(E1, data, model=model, epochs=2, progress=False, device="cpu")
    for name, tensor in first.mechanism.state_dict().items():
        assert torch.equal(tensor, trained[name]), name  # the earlier result is untouched
        assert torch.equal(second.mechanism.state_dict()[name], tensor), name  # same start, same seed: same fit


def _interrupt_at(epoch: int) -> Callable[[int, Mechanism], dict[str, float]]:
    def callback(current: int, mechanism: Mechanism) -> dict[str, float]:
        if current == epoch:
            raise KeyboardInterrupt
        return {"param_norm": float(sum(p.norm() for p in mechanism.parameters()))}

    return callback


@pytest.mark.parametrize("select", ["best_valid", "last"])
def test_ctrl_c_keeps_the_epochs_done(tmp_path: Path, e1_traces: TraceDataset, select: str) -> None:
    data = e1_traces.episodes(slice(0, 10))
    options = {"select": select, "lr": 0.05, "seed": 1, "progress": False, "device": "cpu", "learn_q0": True}
    options["model"] = "neural"  # one model's epochs (model="auto" would also search a prior, then fit another)
    with pytest.raises(FitInterrupted) as info:
        diml_inverse.fit(E1, data, epochs=10, callback=_interrupt_at(3), **options)  # type: ignore[arg-type]
    interrupted = info.value
    assert isinstance(interrupted, KeyboardInterrupt) and isinstance(interrupted.__cause__, KeyboardInterrupt)
    assert interrupted.epochs_done == 2 and interrupted.epochs == 10  # epoch 3's callback did not return
    assert "after 2 of 10 epochs" in str(interrupted)
    result = interrupted.result
    assert result is not None and [row["epoch"] for row in result.history] == [1, 2]
    assert result.selected_epoch <= 2 and (select == "best_valid" or result.selected_epoch == 2)
    # exactly what a fit of the done epochs returns (the live parameters were already past epoch 2)
    done = diml_inverse.fit(E1, data, epochs=2, callback=_interrupt_at(0), **options)  # type: ignore[arg-type]
    assert result.selected_epoch == done.selected_epoch and result.best_epoch == done.best_epoch
    for name, tensor in done.mechanism.state_dict().items():
        assert torch.equal(result.mechanism.state_dict()[name], tensor), name
    assert result.q0 is not None and done.q0 is not None and torch.equal(result.q0, done.q0)
    assert [r["valid_nll"] for r in result.history] == [r["valid_nll"] for r in done.history]
    assert dataclasses.replace(result.config, epochs=2) == done.config
    loaded = diml_inverse.load(result.save(tmp_path / "interrupted.pt"))
    joint = data.actions_tensor()[0]
    torch.testing.assert_close(loaded.mechanism(joint), result.mechanism(joint))
    assert loaded.history == result.history and loaded.selected_epoch == result.selected_epoch


def test_ctrl_c_in_a_training_step_keeps_the_last_epoch_done(
    e1_traces: TraceDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = e1_traces.episodes(slice(0, 8))  # 6 training episodes of batch_size 4: 2 steps per epoch
    options = {"select": "last", "batch_size": 4, "seed": 2, "progress": False, "device": "cpu", "model": "neural"}
    done = diml_inverse.fit(E1, data, epochs=2, **options)  # type: ignore[arg-type]
    step, calls = torch.optim.Adam.step, []

    def interrupted_step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        out = step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 5:  # the first step of epoch 3, after it changed the parameters
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", interrupted_step)
    with pytest.raises(FitInterrupted) as info:
        diml_inverse.fit(E1, data, epochs=5, **options)  # type: ignore[arg-type]
    result = info.value.result
    assert info.value.epochs_done == 2 and result is not None and result.selected_epoch == 2
    for name, tensor in done.mechanism.state_dict().items():
        assert torch.equal(result.mechanism.state_dict()[name], tensor), name


def test_ctrl_c_before_any_epoch_is_done_keeps_nothing(e1_traces: TraceDataset) -> None:
    with pytest.raises(FitInterrupted) as info:
        diml_inverse.fit(
            E1, e1_traces.episodes(slice(0, 6)), epochs=3, callback=_interrupt_at(1), progress=False, device="cpu"
        )
    assert info.value.result is None and info.value.epochs_done == 0
    assert "before any of its 3 epochs was done" in str(info.value)
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, FitInterrupted) and copy.epochs_done == 0 and copy.result is None


# -- the oracle gap ----------------------------------------------------------------------------------------------
def test_oracle_gap_is_zero_for_the_truth_and_positive_for_a_mechanism_that_knows_nothing() -> None:
    from diml_inverse.result import FitResult
    from mechgym.mechanisms import TabularMechanism

    env = mechgym.make("mechgym/NeuralMechanism-v0")
    truth, learner = env.unwrapped.mechanism, env.unwrapped.default_learner
    test = mechgym.rollout(env, n_episodes=6, n_rounds=30, seed=3)
    assert FitResult(mechanism=truth, learner=learner).oracle_gap(truth, test) == 0.0
    zero = TabularMechanism(3, 6, init="zeros")
    gap = FitResult(mechanism=zero, learner=learner).oracle_gap(truth, test)
    expected = metrics.heldout_nll(zero, test, learner) - metrics.heldout_nll(truth, test, learner)
    assert gap == pytest.approx(expected) and gap > 0.005
    fitted = diml_inverse.fit("mechgym/NeuralMechanism-v0", mechgym.rollout(env, n_episodes=24, n_rounds=30), epochs=3)
    assert fitted.oracle_gap(truth, test) < gap  # a fit explains held-out play better than "nothing"
