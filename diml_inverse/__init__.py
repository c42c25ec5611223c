"""diml_inverse: recover a mechanism from the actions of learning agents (DIML).

>>> import mechgym, diml_inverse
>>> traces = mechgym.rollout("mechgym/NeuralMechanism-v0", n_episodes=48, n_rounds=60, seed=0)
>>> result = diml_inverse.fit("mechgym/NeuralMechanism-v0", traces, epochs=30)
>>> result.payoff_differences(traces.actions_tensor()[0, :5])
"""

from diml_inverse.config import FitConfig
from diml_inverse.errors import FitDivergedError
from diml_inverse.fit import FitInterrupted, fit
from diml_inverse.fit_options import estimate_fit_memory
from diml_inverse.likelihood import log_likelihood
from diml_inverse.models import build_model
from diml_inverse.result import FitFileError, FitResult, load

__all__ = [
    "FitConfig",
    "FitDivergedError",
    "FitFileError",
    "FitInterrupted",
    "FitResult",
    "build_model",
    "estimate_fit_memory",
    "fit",
    "load",
    "log_likelihood",
]
