"""Learning dynamics: the parallel likelihood of every learning rule DIML can assume, and their dispatch table.

The counterfactual payoffs ``u(t)`` (paper Eq. 1) depend only on the observed actions and the mechanism, so a
rule whose state is a linear filter of them gets every state of every round from one batched counterfactual
evaluation and a causal filter over rounds, with no loop over rounds (:mod:`~diml_inverse.dynamics.filters`).
One module per rule of :mod:`mechgym.learners`, each with its parallel log-probabilities:

* :mod:`~diml_inverse.dynamics.logit_q`: logit-Q (Eq. 2-3), an exponential filter; forgets; learns ``q0``,
  ``alpha`` and ``epsilon``.
* :mod:`~diml_inverse.dynamics.hedge`: Hedge (Eq. H1-H2), a cumulative sum; learns ``q0``.
* :mod:`~diml_inverse.dynamics.smooth_fp`: smooth fictitious play (Eq. F1-F2), a cumulative mean.
* :mod:`~diml_inverse.dynamics.bandit_q`: bandit-feedback Q-learning (Eq. B1), a time-varying filter of the
  realised payoffs scanned in chunks; learns ``q0``.

:func:`~diml_inverse.log_likelihood` and :func:`~diml_inverse.fit` find a learner's rule with
:func:`dynamics_for`; a third-party rule plugs in with :func:`register_dynamics`. Every rule's
log-probabilities are a function ``log_probs(learner, unroll)`` of the learner and an :class:`Unroll` (the
counterfactual payoffs, the actions and the overrides). The four built-in rules are
registered below.
"""

from __future__ import annotations

from diml_inverse.dynamics.bandit_q import (
    DEFAULT_BANDIT_CHUNK_SIZE,
    bandit_q_log_likelihood,
    bandit_q_log_probs,
    bandit_q_scores,
    bandit_q_trace_log_probs,
)
from diml_inverse.dynamics.filters import (
    DEFAULT_CHUNK_SIZE,
    WHOLE_HORIZON_MAX_ROUNDS,
    counterfactual_scores,
    linear_filter,
    time_major_filter,
)
from diml_inverse.dynamics.hedge import hedge_log_probs, hedge_scores
from diml_inverse.dynamics.logit_q import logit_q_log_probs
from diml_inverse.dynamics.registry import (
    DYNAMICS,
    LEARNABLE_PARAMETERS,
    Dynamics,
    TraceLogProbs,
    Unroll,
    dynamics_for,
    register_dynamics,
)
from diml_inverse.dynamics.smooth_fp import smooth_fp_beliefs, smooth_fp_log_probs
from mechgym.learners import BanditQ, Hedge, LogitQ, SmoothFP

__all__ = [
    "DEFAULT_BANDIT_CHUNK_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "DYNAMICS",
    "LEARNABLE_PARAMETERS",
    "WHOLE_HORIZON_MAX_ROUNDS",
    "Dynamics",
    "TraceLogProbs",
    "Unroll",
    "bandit_q_log_likelihood",
    "bandit_q_log_probs",
    "bandit_q_scores",
    "bandit_q_trace_log_probs",
    "counterfactual_scores",
    "dynamics_for",
    "hedge_log_probs",
    "hedge_scores",
    "linear_filter",
    "logit_q_log_probs",
    "register_dynamics",
    "smooth_fp_beliefs",
    "smooth_fp_log_probs",
    "time_major_filter",
]

# The built-in rules. Round windows are exact only for a state that decays exponentially (logit-Q); the others
# keep cumulative sums, counts or the scores of unplayed actions forever. A fit learns alpha and epsilon of
# logit-Q only, and q0 of every rule that starts from one.
register_dynamics(LogitQ, logit_q_log_probs, learnable=frozenset({"q0", "alpha", "epsilon"}), forgets=True)
register_dynamics(Hedge, hedge_log_probs, learnable=frozenset({"q0"}))
register_dynamics(SmoothFP, smooth_fp_log_probs)
register_dynamics(BanditQ, bandit_q_trace_log_probs, learnable=frozenset({"q0"}))
