"""Evaluation metrics of an inverse-learned mechanism (paper §6.3), vectorised and explicitly seeded.

* :func:`diff_mse` — payoff-difference error on held-out contexts (the identifiable part of a mechanism,
  Theorem 1), with :func:`zero_baseline_diff_mse`, the same error of the zero mechanism, and
  :func:`rescaled_diff_mse` (:mod:`~diml_inverse.metrics.payoff_differences`).
* :func:`cfkl_params` — KL between the joint-action distributions that the true and the fitted mechanism
  induce under a shifted learner, with :func:`cfkl_noise_floor`, the same plug-in KL between two
  independent simulations of the truth (:mod:`~diml_inverse.metrics.cfkl`); the joint-action histograms and
  their plug-in KL (:func:`joint_action_histogram`, :func:`empirical_kl`, :func:`histogram_kl`) are in
  :mod:`~diml_inverse.metrics.histograms`.
* :func:`heldout_nll` — negative log-likelihood per agent-round on held-out traces (Eq. 5), with
  :func:`uniform_nll` = ``log A`` (:mod:`~diml_inverse.metrics.nll`).
* :class:`Evaluator` computes all of them for many estimates of one truth, the truth's share once
  (per epoch for the experiments, at the end for a fit), :func:`evaluate` for one estimate
  (:mod:`~diml_inverse.metrics.evaluator`); :func:`format_metrics_table` prints rows of them as Markdown.

Randomness: every metric takes a ``seed`` and derives its own streams from it with :func:`derive_seed`
(a hash of the seed and the metric's purpose), so evaluation never consumes a training stream nor the
global torch generator, and the same seed gives the same value on the CPU and on CUDA.

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents, ``A`` actions, ``K`` sampled contexts.
"""

from diml_inverse.metrics.cfkl import DEFAULT_SHIFT, cfkl_noise_floor, cfkl_params
from diml_inverse.metrics.evaluator import METRIC_DESCRIPTIONS, Evaluator, evaluate, frozen_view, kl_column_names
from diml_inverse.metrics.histograms import (
    KL_FLOOR,
    MAX_JOINT_HISTOGRAM_SIZE,
    HistogramKind,
    empirical_kl,
    histogram_kl,
    joint_action_histogram,
)
from diml_inverse.metrics.inputs import Traces, derive_seed
from diml_inverse.metrics.nll import heldout_nll, uniform_nll
from diml_inverse.metrics.payoff_differences import (
    DiffContexts,
    diff_mse,
    payoff_differences,
    rescaled_diff_mse,
    sample_diff_contexts,
    zero_baseline_diff_mse,
)
from diml_inverse.metrics.table import format_metrics_table

__all__ = [
    "DEFAULT_SHIFT",
    "KL_FLOOR",
    "MAX_JOINT_HISTOGRAM_SIZE",
    "METRIC_DESCRIPTIONS",
    "DiffContexts",
    "Evaluator",
    "HistogramKind",
    "Traces",
    "cfkl_noise_floor",
    "cfkl_params",
    "derive_seed",
    "diff_mse",
    "empirical_kl",
    "evaluate",
    "format_metrics_table",
    "frozen_view",
    "heldout_nll",
    "histogram_kl",
    "joint_action_histogram",
    "kl_column_names",
    "payoff_differences",
    "rescaled_diff_mse",
    "sample_diff_contexts",
    "uniform_nll",
    "zero_baseline_diff_mse",
]
