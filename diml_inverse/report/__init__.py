"""The fit report: one HTML page with PNG figures about a :class:`~diml_inverse.FitResult` (``diml report``).

* :mod:`~diml_inverse.report.page`: :func:`write_report` (what :meth:`FitResult.report` calls).
* :mod:`~diml_inverse.report.calibration`: predicted against observed action frequencies by round.
* :mod:`~diml_inverse.report.support`: which counterfactual contexts the training traces visit.
* :mod:`~diml_inverse.report.figures`: the figures, drawn with matplotlib's Agg canvas.
"""

from diml_inverse.report.calibration import Calibration, calibration
from diml_inverse.report.page import PayoffIntervals, frequent_joint_actions, write_report
from diml_inverse.report.support import Support, context_keys, training_support

__all__ = [
    "Calibration",
    "PayoffIntervals",
    "Support",
    "calibration",
    "context_keys",
    "frequent_joint_actions",
    "training_support",
    "write_report",
]
