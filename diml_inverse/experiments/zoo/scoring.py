"""How the zoo scores a fit: payoff-difference error beside the zero mechanism, held-out NLL beside the truth's."""

from __future__ import annotations

import math

from diml_inverse.metrics import diff_mse, heldout_nll, zero_baseline_diff_mse
from diml_inverse.result import FitResult
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism
from mechgym.traces import TraceDataset

__all__ = ["score_fit"]


def score_fit(
    truth: Mechanism, result: FitResult, test: TraceDataset, truth_learner: Learner, samples: int, seed: int
) -> dict[str, float]:
    """The zoo's columns of one fit on held-out episodes ``test``.

    Returns:
        ``diff_mse`` (on ``samples`` contexts drawn with ``seed``), ``zero_diff_mse`` (the zero mechanism's, same
        contexts), ``ratio`` (their quotient, NaN when the zero error is 0), ``fit_nll`` and ``truth_nll``
        (held-out NLL per agent-round under the fit's learner and under ``truth_learner``) and
        ``oracle_gap = fit_nll - truth_nll``.
    """
    error = diff_mse(truth, result.mechanism, test, samples, seed)
    zero = zero_baseline_diff_mse(truth, test, samples, seed)
    fit_nll = heldout_nll(result.mechanism, test, result.learner, result.q0)
    truth_nll = heldout_nll(truth, test, truth_learner)
    return {
        "diff_mse": error,
        "zero_diff_mse": zero,
        "ratio": error / zero if zero > 0 else math.nan,
        "fit_nll": fit_nll,
        "truth_nll": truth_nll,
        "oracle_gap": fit_nll - truth_nll,
    }
