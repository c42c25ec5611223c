"""Which learning model generated the traces: :func:`compare_learners` and its validation study.

* :mod:`~diml_inverse.comparison.compare`: :func:`compare_learners`, cross-validated held-out likelihood of each
  candidate learner with paired standard errors over episodes (:class:`LearnerComparison`).
* :mod:`~diml_inverse.comparison.study`: how often the generating rule wins on the misspecification generators
  (``python -m diml_inverse.comparison.study``).
"""

from diml_inverse.comparison.compare import (
    SIGNIFICANCE_Z,
    CandidateScore,
    LearnerComparison,
    compare_learners,
    episode_nll,
)

__all__ = ["SIGNIFICANCE_Z", "CandidateScore", "LearnerComparison", "compare_learners", "episode_nll"]
