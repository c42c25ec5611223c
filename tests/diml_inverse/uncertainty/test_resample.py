"""Episode resampling (whole episodes, with replacement, seed-determined) and intervals read off replicates."""

from __future__ import annotations

import numpy as np
import pytest

from diml_inverse.uncertainty import INTERVAL_METHODS, bootstrap_interval, resample_episodes
from diml_inverse.uncertainty.resample import replicate_seeds
from mechgym.errors import ConfigurationError


def test_resamples_stay_within_their_part_and_repeat_episodes() -> None:
    indices, fit_seeds = resample_episodes(40, 10, n_replicates=25, seed=3)
    assert indices.shape == (25, 50) and len(fit_seeds) == 25
    assert ((indices[:, :40] >= 0) & (indices[:, :40] < 40)).all()
    assert ((indices[:, 40:] >= 40) & (indices[:, 40:] < 50)).all()
    # with replacement: some episode repeats in every replicate (P(no repeat in 40 draws of 40) ~ 1e-16)
    assert all(len(set(row[:40].tolist())) < 40 for row in indices)
    assert len({tuple(row) for row in indices}) == 25  # replicates differ
    assert len(set(fit_seeds)) == 25


def test_resamples_are_seed_determined_per_replicate() -> None:
    first, seeds = resample_episodes(30, 0, n_replicates=5, seed=7)
    again, seeds_again = resample_episodes(30, 0, n_replicates=5, seed=7)
    more, more_seeds = resample_episodes(30, 0, n_replicates=9, seed=7)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, more[:5])  # replicate r depends on (seed, r) only
    assert seeds == seeds_again == more_seeds[:5]
    other, _ = resample_episodes(30, 0, n_replicates=5, seed=8)
    assert not np.array_equal(first, other)
    generator, fit_seed = replicate_seeds(7, 2)
    assert fit_seed == seeds[2] and 0 <= fit_seed < 2**63
    np.testing.assert_array_equal(generator.integers(0, 30, 30), first[2])


def test_interval_methods_on_known_replicates() -> None:
    rng = np.random.default_rng(0)
    replicates = 1.0 + rng.normal(size=(4000, 3, 2))
    estimate = np.full((3, 2), 1.5)
    low, high = bootstrap_interval(estimate, replicates, level=0.9, method="percentile")
    assert low.shape == high.shape == (3, 2)
    np.testing.assert_allclose(low, -0.645, atol=0.08)
    np.testing.assert_allclose(high, 2.645, atol=0.08)
    basic_low, basic_high = bootstrap_interval(estimate, replicates, level=0.9, method="basic")
    np.testing.assert_allclose(basic_low, 2 * 1.5 - high)
    np.testing.assert_allclose(basic_high, 2 * 1.5 - low)
    normal_low, normal_high = bootstrap_interval(estimate, replicates, level=0.9, method="normal")
    np.testing.assert_allclose((normal_low + normal_high) / 2, 1.5)
    np.testing.assert_allclose(normal_high - normal_low, 2 * 1.6449 * replicates.std(0, ddof=1), rtol=1e-4)
    corrected_low, corrected_high = bootstrap_interval(estimate, replicates, level=0.9, method="bias_corrected")
    np.testing.assert_allclose((corrected_low + corrected_high) / 2, 2 * 1.5 - replicates.mean(0))
    assert set(INTERVAL_METHODS) == {"percentile", "basic", "normal", "bias_corrected"}


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1, True, "0.9"])
def test_levels_outside_the_unit_interval_are_refused(level: object) -> None:
    with pytest.raises(ConfigurationError, match=r"level must be a number in \(0, 1\)"):
        bootstrap_interval(np.zeros(2), np.zeros((5, 2)), level=level)  # type: ignore[arg-type]


def test_bad_methods_and_shapes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'percentile'"):
        bootstrap_interval(np.zeros(2), np.zeros((5, 2)), method="percentil")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"R >= 2"):
        bootstrap_interval(np.zeros(2), np.zeros((1, 2)))
    with pytest.raises(ConfigurationError, match=r"R >= 2"):
        bootstrap_interval(np.zeros(2), np.zeros((5, 3)))
    with pytest.raises(ConfigurationError, match="n_replicates"):
        resample_episodes(10, 2, n_replicates=0)
