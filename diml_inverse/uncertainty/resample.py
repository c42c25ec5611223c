"""The episode bootstrap's two primitives: seeded resamples of whole episodes, and intervals from replicates.

Episodes are the independent units of a trace dataset (each is a fresh play of the game by fresh learners), so a
replicate resamples whole episodes with replacement. :func:`resample_episodes` does it within the fit's training
and validation parts separately, so that no episode is both trained on and used to select the epoch, and derives
replicate ``r``'s draws and fit seed from ``(seed, r)`` alone (:class:`numpy.random.SeedSequence`), never from the
order replicates run in. :func:`bootstrap_interval` turns a point estimate and its replicates into an interval.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from diml_inverse.uncertainty.standard_errors import check_level, normal_quantile
from mechgym.errors import ConfigurationError, suggest
from mechgym.validation import check_int, check_seed

__all__ = ["INTERVAL_METHODS", "IntervalMethod", "bootstrap_interval", "replicate_seeds", "resample_episodes"]

#: How an interval is read off the replicates (see :func:`bootstrap_interval`).
IntervalMethod = Literal["percentile", "basic", "normal", "bias_corrected"]
INTERVAL_METHODS: tuple[str, ...] = get_args(IntervalMethod)


def replicate_seeds(seed: int, replicate: int) -> tuple[np.random.Generator, int]:
    """Replicate ``replicate``'s resampling generator and fit seed, both from ``(seed, replicate)`` only.

    Returns:
        A :class:`numpy.random.Generator` for the resample and a fit seed in ``[0, 2**63)``.
    """
    sequence = np.random.SeedSequence(check_seed(seed), spawn_key=(check_int(replicate, "replicate", low=0),))
    resample_sequence, fit_sequence = sequence.spawn(2)
    fit_seed = int(fit_sequence.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
    return np.random.default_rng(resample_sequence), fit_seed


def resample_episodes(
    n_train: int, n_valid: int, n_replicates: int, seed: int = 0
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Episode indices of ``n_replicates`` bootstrap resamples, and each replicate's fit seed.

    Row ``r`` holds ``n_train`` indices drawn with replacement from the training episodes ``0..n_train-1``, then
    ``n_valid`` drawn with replacement from the validation episodes ``n_train..n_train+n_valid-1`` (the fit splits
    by episode order, so each part stays in its place).

    Args:
        n_train: Training episodes of the fit (>= 1).
        n_valid: Validation episodes (>= 0).
        n_replicates: Replicates (>= 1).
        seed: The bootstrap's seed.

    Returns:
        ``(indices [n_replicates, n_train + n_valid], fit_seeds)``.
    """
    check_int(n_train, "n_train", low=1)
    check_int(n_valid, "n_valid", low=0)
    check_int(n_replicates, "n_replicates", low=1)
    rows, fit_seeds = [], []
    for replicate in range(n_replicates):
        generator, fit_seed = replicate_seeds(seed, replicate)
        train = generator.integers(0, n_train, n_train)
        valid = n_train + generator.integers(0, n_valid, n_valid) if n_valid else np.zeros(0, dtype=np.int64)
        rows.append(np.concatenate([train, valid]))
        fit_seeds.append(fit_seed)
    return np.stack(rows).astype(np.int64), tuple(fit_seeds)


def bootstrap_interval(
    estimate: np.ndarray, replicates: np.ndarray, level: float = 0.9, method: IntervalMethod = "percentile"
) -> tuple[np.ndarray, np.ndarray]:
    """A two-sided interval of nominal coverage ``level`` from a point estimate and its bootstrap replicates.

    With ``q_lo``, ``q_hi`` the replicates' ``(1 -/+ level) / 2`` quantiles, ``sd`` their standard deviation,
    ``mean`` their mean and ``z`` the normal quantile of ``(1 + level) / 2``:

    * ``"percentile"``: ``[q_lo, q_hi]``;
    * ``"basic"``: ``[2 estimate - q_hi, 2 estimate - q_lo]`` (the reflected percentile interval);
    * ``"normal"``: ``estimate -/+ z sd``;
    * ``"bias_corrected"``: ``(2 estimate - mean) -/+ z sd``: the normal interval around the estimate minus the
      bootstrap's estimate of its bias (``mean - estimate``). The remedy when the estimator is biased, e.g.
      shrunk toward zero by early stopping or a penalty, and the replicates are shrunk alike.

    Args:
        estimate: The point estimate, any shape ``S``.
        replicates: ``[R, *S]``, ``R >= 2``.
        level: Nominal coverage in (0, 1).
        method: One of :data:`INTERVAL_METHODS`.

    Returns:
        ``(low, high)``, each of shape ``S`` (float64).

    Raises:
        ConfigurationError: a level outside (0, 1), an unknown method (with a did-you-mean), fewer than 2
            replicates or mismatched shapes.
    """
    level = check_level(level)
    if method not in INTERVAL_METHODS:
        raise ConfigurationError(suggest(str(method), INTERVAL_METHODS, "interval method"))
    point = np.asarray(estimate, dtype=np.float64)
    draws = np.asarray(replicates, dtype=np.float64)
    if draws.ndim != point.ndim + 1 or draws.shape[1:] != point.shape or draws.shape[0] < 2:
        raise ConfigurationError(f"replicates must have shape [R >= 2, *{list(point.shape)}]; got {list(draws.shape)}")
    if method in ("percentile", "basic"):
        low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        return (low, high) if method == "percentile" else (2 * point - high, 2 * point - low)
    half = float(normal_quantile((1 + level) / 2)) * draws.std(axis=0, ddof=1)
    centre = point if method == "normal" else 2 * point - draws.mean(axis=0)
    return centre - half, centre + half
