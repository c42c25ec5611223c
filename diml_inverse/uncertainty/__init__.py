"""How much to trust a fit: the episode bootstrap and observed-information / sandwich standard errors.

* :func:`~diml_inverse.uncertainty.bootstrap.bootstrap` refits on episodes resampled with replacement and gives
  percentile, basic, normal and bias-corrected intervals of the payoff differences and of named parameters.
* :func:`~diml_inverse.uncertainty.standard_errors.standard_errors` gives the standard errors of a small model's
  parameters on their identified (gauge-fixed) subspace, and delta-method intervals of payoff differences.

See ``docs/uncertainty.md``.
"""

from diml_inverse.uncertainty.bootstrap import BootstrapResult, bootstrap, load_bootstrap
from diml_inverse.uncertainty.information import StandardErrorsError
from diml_inverse.uncertainty.resample import INTERVAL_METHODS, IntervalMethod, bootstrap_interval, resample_episodes
from diml_inverse.uncertainty.standard_errors import StandardErrors, standard_errors

__all__ = [
    "INTERVAL_METHODS",
    "BootstrapResult",
    "IntervalMethod",
    "StandardErrors",
    "StandardErrorsError",
    "bootstrap",
    "bootstrap_interval",
    "load_bootstrap",
    "resample_episodes",
    "standard_errors",
]
