"""diml_inverse: recover a mechanism from the actions of learning agents (DIML).

>>> import mechgym, diml_inverse
>>> traces = mechgym.rollout("mechgym/NeuralMechanism-v0", n_episodes=48, n_rounds=60, seed=0)
>>> result = diml_inverse.fit("mechgym/NeuralMechanism-v0", traces, epochs=30)
>>> result.payoff_differences(traces.actions_tensor()[0, :5])
"""

from diml_inverse.comparison import LearnerComparison, compare_learners
from diml_inverse.config import FitConfig
from diml_inverse.equilibrium import InverseResult, inverse_nash, inverse_qre
from diml_inverse.errors import FitDivergedError
from diml_inverse.fit import FitInterrupted, fit
from diml_inverse.fit_options import estimate_fit_memory
from diml_inverse.likelihood import log_likelihood
from diml_inverse.models import build_model
from diml_inverse.result import FitFileError, FitResult, load
from diml_inverse.sweep import FitTask, TaskOutcome, TraceRecipe, run_sweep
from diml_inverse.uncertainty import BootstrapResult, StandardErrors, bootstrap, load_bootstrap, standard_errors

__all__ = [
    "BootstrapResult",
    "FitConfig",
    "FitDivergedError",
    "FitFileError",
    "FitInterrupted",
    "FitResult",
    "FitTask",
    "InverseResult",
    "LearnerComparison",
    "StandardErrors",
    "TaskOutcome",
    "TraceRecipe",
    "bootstrap",
    "build_model",
    "compare_learners",
    "estimate_fit_memory",
    "fit",
    "inverse_nash",
    "inverse_qre",
    "load",
    "load_bootstrap",
    "log_likelihood",
    "run_sweep",
    "standard_errors",
]
