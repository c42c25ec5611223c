"""Equilibrium inversion beside DIML: recover game parameters from observed equilibrium play.

Inverse Nash (Goktas et al. 2024): parameters under which the observed play is a Nash equilibrium, as the
min-max of cumulative regret (:func:`inverse_nash`). Inverse logit QRE: the maximum-likelihood payoffs (and
logit precision) of play that is not exactly rational (:func:`inverse_qre`). Both batch over markets. See
``docs/equilibrium.md``.
"""

from diml_inverse.equilibrium.finite import FiniteGame, empirical_counts, empirical_profiles, expected_payoffs
from diml_inverse.equilibrium.fisher import FisherMarket, FisherObservation
from diml_inverse.equilibrium.games import BertrandGame, CournotGame, EquilibriumGame
from diml_inverse.equilibrium.nash import METHODS, inverse_nash
from diml_inverse.equilibrium.qre import inverse_qre, logit_responses, qre_profile
from diml_inverse.equilibrium.result import InverseResult, relative_error
from diml_inverse.equilibrium.traces import equilibrium_fit_result, fit_equilibrium

__all__ = [
    "METHODS",
    "BertrandGame",
    "CournotGame",
    "EquilibriumGame",
    "FiniteGame",
    "FisherMarket",
    "FisherObservation",
    "InverseResult",
    "empirical_counts",
    "empirical_profiles",
    "equilibrium_fit_result",
    "expected_payoffs",
    "fit_equilibrium",
    "inverse_nash",
    "inverse_qre",
    "logit_responses",
    "qre_profile",
    "relative_error",
]
