"""bootstrap: whole-episode refits through the sweep, interval shapes, named parameters, save/load, bad input."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest
import torch

import diml_inverse
import mechgym
from diml_inverse.errors import FitFileError
from diml_inverse.uncertainty import BootstrapResult, bootstrap, load_bootstrap, resample_episodes
from mechgym.errors import ConfigurationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENV_ID = "mechgym/Congestion-v0"
#: The game's own family, a handful of full-batch epochs: about a second per fit.
OPTIONS = {"model": "structured", "epochs": 3, "lr": 0.05, "device": "cpu"}


@pytest.fixture(scope="module")
def traces() -> mechgym.TraceDataset:
    return mechgym.rollout(ENV_ID, n_episodes=10, n_rounds=12, seed=0)


@pytest.fixture(scope="module")
def boot(traces: mechgym.TraceDataset) -> BootstrapResult:
    return bootstrap(ENV_ID, traces, n_replicates=3, seed=5, progress=False, **OPTIONS)


def test_replicates_are_fits_of_the_seeded_resamples(boot: BootstrapResult, traces: mechgym.TraceDataset) -> None:
    assert len(boot.replicates) == 3 and not boot.failed
    n_train, n_valid = boot.point.n_train_episodes, boot.point.n_valid_episodes
    assert (n_train, n_valid) == (8, 2)
    resamples, fit_seeds = resample_episodes(n_train, n_valid, 3, seed=5)
    np.testing.assert_array_equal(boot.resamples, resamples)
    assert boot.fit_seeds == fit_seeds
    # the point estimate is the fit of the original episodes; replicate r, that of its resample
    point = diml_inverse.fit(ENV_ID, traces, progress=False, **OPTIONS)
    joint = traces.actions_tensor()[0, :4]
    torch.testing.assert_close(boot.payoff_differences(joint), point.payoff_differences(joint))
    resample = traces.episodes(list(resamples[1]))
    refit = diml_inverse.fit(ENV_ID, resample, progress=False, **{**OPTIONS, "seed": fit_seeds[1]})
    torch.testing.assert_close(boot.replicates[1].payoff_differences(joint), refit.payoff_differences(joint))


def test_interval_shapes(boot: BootstrapResult, traces: mechgym.TraceDataset) -> None:
    joint = traces.actions_tensor()[:2, :5]  # [2, 5, N]
    assert boot.payoff_differences(joint).shape == (2, 5, 4, 5)
    assert boot.replicate_payoff_differences(joint).shape == (3, 2, 5, 4, 5)
    for method in ("percentile", "basic", "normal", "bias_corrected"):
        low, high = boot.payoff_differences_interval(joint, level=0.8, method=method)  # type: ignore[arg-type]
        assert low.shape == high.shape == (2, 5, 4, 5) and bool((low <= high).all())
    own = joint[..., None]  # the own action's difference is 0 in every replicate
    low, high = boot.payoff_differences_interval(joint)
    assert float(low.gather(-1, own).abs().max()) == 0.0 == float(high.gather(-1, own).abs().max())


def test_named_parameter_intervals(boot: BootstrapResult) -> None:
    assert boot.parameter_names() == ["c1", "c2", "tau"]
    low, high = boot.parameter_interval("c2", level=0.9)
    assert low.shape == high.shape == (5,) and (low <= high).all()
    np.testing.assert_array_equal(boot.parameter("c2"), boot.point.mechanism.c2.detach().double().numpy())
    with pytest.raises(ConfigurationError, match="Did you mean 'tau'"):
        boot.parameter_interval("tua")
    with pytest.raises(ConfigurationError, match=r"level must be a number in \(0, 1\)"):
        boot.parameter_interval("c2", level=1.0)


def test_save_and_load_round_trip(boot: BootstrapResult, traces: mechgym.TraceDataset, tmp_path) -> None:
    path = boot.save(tmp_path / "fit.bootstrap")
    loaded = load_bootstrap(path)
    joint = traces.actions_tensor()[0]
    torch.testing.assert_close(loaded.replicate_payoff_differences(joint), boot.replicate_payoff_differences(joint))
    torch.testing.assert_close(loaded.payoff_differences(joint), boot.payoff_differences(joint))
    np.testing.assert_array_equal(loaded.resamples, boot.resamples)
    assert (loaded.seed, loaded.fit_seeds, loaded.failed) == (boot.seed, boot.fit_seeds, boot.failed)
    with pytest.raises(FitFileError, match="overwrite=True"):
        boot.save(path)
    boot.save(path, overwrite=True)


def test_damaged_files_are_refused(boot: BootstrapResult, tmp_path) -> None:
    path = boot.save(tmp_path / "fit.bootstrap")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    damaged = bytearray(members["replicates/0001.pt"])
    damaged[len(damaged) // 2] ^= 0xFF
    members["replicates/0001.pt"] = bytes(damaged)
    edited = tmp_path / "edited.bootstrap"
    with zipfile.ZipFile(edited, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(FitFileError, match="SHA-256"):
        load_bootstrap(edited)
    (tmp_path / "truncated.bootstrap").write_bytes(path.read_bytes()[:200])
    with pytest.raises(FitFileError):
        load_bootstrap(tmp_path / "truncated.bootstrap")
    with pytest.raises(FitFileError, match="no bootstrap file"):
        load_bootstrap(tmp_path / "missing.bootstrap")


@pytest.mark.parametrize("n_replicates", [0, 1, 2.5, True])
def test_too_few_replicates_are_refused(traces: mechgym.TraceDataset, n_replicates: object) -> None:
    with pytest.raises(ConfigurationError, match="n_replicates must be an integer >= 2"):
        bootstrap(ENV_ID, traces, n_replicates=n_replicates, progress=False, **OPTIONS)  # type: ignore[arg-type]


def test_bad_fit_options_are_refused_before_any_fit(traces: mechgym.TraceDataset) -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'epochs'"):
        bootstrap(ENV_ID, traces, n_replicates=2, epohcs=3)
    with pytest.raises(ConfigurationError, match="seed"):
        bootstrap(ENV_ID, traces, n_replicates=2, seed=-1, **OPTIONS)
    config = dataclasses.replace(diml_inverse.FitConfig(), epochs=1)
    with pytest.raises(ConfigurationError, match="lr must be"):
        bootstrap(ENV_ID, traces, n_replicates=2, config=config, lr=-1.0)
