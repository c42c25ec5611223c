"""Standard errors of a fit: observed information and the robust sandwich, on the gauge-fixed parameters.

The negative log-likelihood (paper Eq. 4-5) of the traces is a function of the fitted parameters ``theta`` (the
mechanism's trainable tensors and any learned ``Q(1)``, ``alpha``, ``epsilon``). It does not determine all of them:

* **the gauge** (Corollary 1): a full-information rule (logit-Q, Hedge, smooth fictitious play) sees payoffs only
  up to a constant ``c_i(a_-i)`` added to every action of agent ``i`` in context ``a_-i``, and ``Q(1)`` up to a
  constant per agent. A tabular model's entries move freely along those directions;
* **the support**: payoffs in contexts the traces never visit do not enter the likelihood at all;
* **the parametrisation**: a structured family may have redundant parameters (congestion's ``c1`` and ``tau``
  only enter as ``c1 -/+ tau``).

The Hessian is singular along every such direction, so it is never inverted as it is (and never ridged). The
directions the likelihood can see are found explicitly: ``g(theta)``, the identified quantities (the gauge-fixed
counterfactual payoffs ``u_i(a, a_-i) - mean_a' u_i(a', a_-i)`` of every context the traces visit, ``Q(1)`` minus
its mean over actions, the learned ``alpha`` and ``epsilon``), has a Jacobian ``G``; its row space, spanned by the
eigenvectors ``V`` of ``G^T G`` above a relative tolerance, is the identified subspace. The fit is reparametrised as
``theta = theta_hat + V phi`` and, with ``H`` the Hessian of the total NLL and ``s_e`` the score of episode ``e`` (the
independent units), both in ``phi`` and in float64 (:mod:`torch.func`):

* observed information: ``Cov(phi) = H^-1``;
* sandwich (robust to a misspecified likelihood): ``Cov(phi) = H^-1 B H^-1`` with ``B = sum_e s_e s_e^T``;

and ``Cov(theta) = V Cov(phi) V^T``. A direction of ``V`` along which ``H`` is still flat is dropped too and
counted: a relative eigenvalue below ``1e-9`` (e.g. under a rule that is not gauge-invariant, whose identified
quantities are the raw payoffs), or a slightly negative one, above ``-1e-4`` (the exploration-mixed logit is not
concave where a policy saturates). A clearly negative eigenvalue means the fit is not at a maximum and is refused.
A quantity ``q(theta)`` (a parameter, a payoff difference) gets the delta-method variance ``J Cov(theta) J^T``; if
its gradient ``J`` leaves the identified subspace, the data do not determine it and its standard error is ``inf``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.func import jacrev

from diml_inverse.result import FitResult
from diml_inverse.uncertainty.information import (
    GAUGE_INVARIANT_RULES,
    FlatFit,
    Information,
    StandardErrorsError,
    has_prior,
    identified_information,
    posterior_information,
)
from mechgym.errors import ConfigurationError, suggest
from mechgym.mechanisms import validate_joint_actions
from mechgym.memory import check_memory
from mechgym.traces import TraceDataset

__all__ = [
    "DEFAULT_MAX_PARAMETERS",
    "StandardErrors",
    "StandardErrorsError",
    "check_level",
    "normal_quantile",
    "standard_errors",
]

#: The most parameters :func:`standard_errors` takes on (its Hessian is ``P x P`` in float64).
DEFAULT_MAX_PARAMETERS = 6000
#: A gradient whose part outside the identified subspace exceeds this share of its norm is not identified.
IDENTIFIED_TOLERANCE = 1e-6
Episodes = Literal["train", "all"]


def check_level(level: Any) -> float:
    """``level`` as a float in (0, 1).

    Raises:
        ConfigurationError: anything else, saying what to pass.
    """
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
        raise ConfigurationError(f"level must be a number in (0, 1), e.g. 0.9 for a 90 % interval; got {level!r}")
    return float(level)


def normal_quantile(p: float | np.ndarray) -> np.ndarray:
    """The standard normal quantile ``Phi^-1(p)`` in float64 (:func:`torch.special.ndtri`)."""
    return np.asarray(torch.special.ndtri(torch.as_tensor(p, dtype=torch.float64)).numpy())


@dataclass(frozen=True, eq=False)
class StandardErrors:
    """Standard errors of a fit's parameters and, by the delta method, of any smooth function of them.

    Attributes:
        labels: One label per fitted number (``"c1[2]"``, ``"table[17, 0]"``, ``"q0[0, 3]"``, ``"alpha"``).
        estimate: The fitted values, ``[P]``.
        covariance: Observed-information covariance ``V H^-1 V^T``, ``[P, P]`` (zero outside the identified
            subspace: read :meth:`parameter`, which says which entries are identified).
        robust_covariance: The sandwich ``V H^-1 B H^-1 V^T``, ``[P, P]``.
        n_episodes: Episodes of the likelihood (the independent units of the scores).
        n_identified: Dimension of the identified subspace.
        n_gauge_directions: Directions no data could pin down (gauge, unvisited contexts, redundant parameters).
        n_flat_directions: Further directions dropped because the Hessian is flat along them in these data.
        smallest_eigenvalue: The smallest Hessian eigenvalue kept, relative to the largest (conditioning).
        posterior: Whether these are posterior standard deviations (Laplace, under the model's prior) rather than the
            likelihood's standard errors.
    """

    labels: tuple[str, ...]
    estimate: np.ndarray
    covariance: np.ndarray
    robust_covariance: np.ndarray
    n_episodes: int
    n_identified: int
    n_gauge_directions: int
    n_flat_directions: int
    smallest_eigenvalue: float
    flat: FlatFit
    information: Information
    posterior: bool = False

    def __repr__(self) -> str:
        kind = "posterior, " if self.posterior else ""
        return (
            f"StandardErrors({kind}{len(self.labels)} parameters, {self.n_identified} identified directions, "
            f"{self.n_gauge_directions} gauge, {self.n_flat_directions} flat; {self.n_episodes} episodes)"
        )

    def delta_method(self, function: Callable[[Tensor], Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Estimate, standard error and robust standard error of ``function(theta)`` (any output shape).

        Args:
            function: Maps the flat float64 parameter vector ``[P]`` to a tensor (differentiable).

        Returns:
            Three arrays of the output's shape; the errors are ``inf`` where the output's gradient leaves the
            identified subspace (the data do not determine it).
        """
        theta = self.flat.theta
        value = function(theta).detach()
        jacobian = jacrev(lambda t: function(t).reshape(-1), chunk_size=256)(theta)  # [Q, P]
        basis = self.information.basis
        projected = jacobian @ basis  # [Q, d]
        outside = (jacobian - projected @ basis.T).norm(dim=1)
        identified = outside <= IDENTIFIED_TOLERANCE * jacobian.norm(dim=1).clamp_min(1e-12)
        inverse = 1.0 / self.information.hessian
        variance = (projected**2 * inverse).sum(1)
        weighted = projected * inverse
        robust = ((weighted @ self.information.meat) * weighted).sum(1)
        infinite = torch.full_like(variance, float("inf"))
        se = torch.where(identified, variance.clamp_min(0).sqrt(), infinite)
        robust_se = torch.where(identified, robust.clamp_min(0).sqrt(), infinite)
        shape = tuple(value.shape)
        return value.numpy(), se.reshape(shape).numpy(), robust_se.reshape(shape).numpy()

    def parameter(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Estimate, standard error and robust standard error of the named parameter, each of its shape.

        Args:
            name: A parameter of the model (``"c1"``, ``"tau"``, ``"table"``) or ``"q0"``, ``"alpha"``, ``"epsilon"``
                when the fit learned it.

        Raises:
            ConfigurationError: an unknown name, with a did-you-mean.
        """
        slices = self.flat.slices()
        if name not in slices:
            raise ConfigurationError(suggest(name, slices, "fitted parameter"))
        where = slices[name]
        shape = self.flat.shapes[list(slices).index(name)]
        estimate, se, robust = self.delta_method(lambda theta: theta[where].reshape(shape))
        return estimate, se, robust

    def payoff_differences(self, joint_actions: Tensor | Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Estimate, SE and robust SE of ``u_i(a, a_-i) - u_i(a_i, a_-i)`` at ``joint_actions`` ``[..., N]``, each
        ``[..., N, A]`` (as :meth:`diml_inverse.FitResult.payoff_differences`).

        Raises:
            InvalidActionError: joint actions outside the game.
        """
        mechanism = self.flat.module.mechanism
        joint = torch.as_tensor(joint_actions)
        validate_joint_actions(joint, mechanism.n_agents, mechanism.n_actions, "the fitted mechanism")
        flat_joint = joint.long().reshape(-1, mechanism.n_agents)
        chunks = []
        for start in range(0, flat_joint.shape[0], 32):
            rows = flat_joint[start : start + 32]

            def differences(theta: Tensor, rows: Tensor = rows) -> Tensor:
                cf = self.flat.counterfactual(theta, rows)  # [K, N, A]
                return cf - cf.gather(-1, rows[..., None])

            chunks.append(self.delta_method(differences))
        shape = (*joint.shape, mechanism.n_actions)
        return tuple(np.concatenate([c[k] for c in chunks]).reshape(shape) for k in range(3))  # type: ignore[return-value]

    def payoff_differences_interval(
        self, joint_actions: Tensor | Any, level: float = 0.9, *, robust: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Delta-method normal interval ``estimate -/+ z SE`` of the payoff differences, each ``[..., N, A]``.

        Args:
            joint_actions: ``[..., N]``.
            level: Nominal coverage in (0, 1).
            robust: Use the sandwich standard errors.

        Raises:
            ConfigurationError: ``level`` outside (0, 1).
        """
        z = float(normal_quantile(0.5 + check_level(level) / 2))
        estimate, se, robust_se = self.payoff_differences(joint_actions)
        half = z * (robust_se if robust else se)
        return estimate - half, estimate + half

    def table(self, max_rows: int | None = 40) -> str:
        """The parameters as discrete-choice packages print them: name, estimate, SE, robust SE, z (= estimate/SE).

        Parameters not identified by the data (along the gauge, unvisited, redundant) show ``not identified``.
        """
        estimate, se, robust = self.delta_method(lambda theta: theta)
        head = (
            f"{self.n_episodes} episodes; {len(self.labels)} parameters; posterior standard deviations (Laplace, "
            "under the model's prior); robust: the sandwich of the penalised estimate"
            if self.posterior
            else f"{self.n_episodes} episodes; {self.n_identified} identified directions of {len(self.labels)} "
            f"parameters ({self.n_gauge_directions} gauge or unvisited, {self.n_flat_directions} flat)"
        )
        lines = [
            head,
            f"{'parameter':<24} {'estimate':>11} {'SE':>11} {'robust SE':>11} {'z':>8}",
        ]
        rows = range(len(self.labels)) if max_rows is None else range(min(max_rows, len(self.labels)))
        for k in rows:
            if np.isfinite(se[k]):
                z = estimate[k] / se[k] if se[k] > 0 else float("nan")
                lines.append(f"{self.labels[k]:<24} {estimate[k]:>11.4g} {se[k]:>11.4g} {robust[k]:>11.4g} {z:>8.2f}")
            else:
                lines.append(f"{self.labels[k]:<24} {estimate[k]:>11.4g} {'not identified':>32}")
        if len(rows) < len(self.labels):
            lines.append(f"... {len(self.labels) - len(rows)} more (table(max_rows=None) prints all)")
        return "\n".join(lines)


def _actions(result: FitResult, traces: TraceDataset | Tensor, episodes: Episodes) -> Tensor:
    if episodes not in ("train", "all"):
        raise ConfigurationError(f"episodes must be 'train' or 'all'; got {episodes!r}")
    if isinstance(traces, TraceDataset):
        actions = traces.actions_tensor()
    elif isinstance(traces, Tensor) and traces.dim() == 3:
        actions = traces.long()
    else:
        raise ConfigurationError(
            f"traces must be the TraceDataset the fit was given, or its actions [E, T, N]; got {type(traces).__name__}"
        )
    mechanism = result.mechanism
    validate_joint_actions(actions, mechanism.n_agents, mechanism.n_actions, "the fitted mechanism")
    if episodes == "train":
        if actions.shape[0] < result.n_train_episodes or result.n_train_episodes < 1:
            raise ConfigurationError(
                f"the fit trained on its first {result.n_train_episodes} episodes but the traces have "
                f"{actions.shape[0]}; pass the traces the fit was given (or episodes='all')"
            )
        actions = actions[: result.n_train_episodes]
    if actions.shape[1] < 2:
        raise ConfigurationError("the traces need at least 2 rounds for a likelihood term")
    return actions.cpu()


def standard_errors(
    result: FitResult,
    traces: TraceDataset | Tensor,
    *,
    episodes: Episodes = "train",
    max_parameters: int = DEFAULT_MAX_PARAMETERS,
    posterior: bool | None = None,
) -> StandardErrors:
    """Observed-information and sandwich standard errors of a fit (see the module docstring for the method).

    Meant for small models: structured families and tabular tables (a neural network's weights have no
    meaning of their own; use :func:`diml_inverse.bootstrap` there). The likelihood is the pure NLL of the fit's
    training episodes, without ``payoff_l2`` or ``weight_decay``: fit to convergence (``select="last"``, enough
    epochs) for errors that describe the maximum-likelihood estimate.

    A model with a prior (``"interaction"``, ``"interaction_totals"``, ``"additive_counts"``, ``"aggregate_counts"``:
    the default fit's families) is a MAP estimate, shrunk toward its prior, so the likelihood's errors would describe
    the wrong estimator. Its errors are the **posterior** standard deviations of the Laplace approximation instead: the
    inverse Hessian of the NLL plus the prior penalty, which the prior makes positive definite (it pins the gauge and
    the unvisited contexts, so every payoff difference gets a finite interval, wide where the data say little). The
    robust column is then the sandwich of the penalised estimate (its sampling spread, without its shrinkage bias). The
    prior's strength is the one the fit chose (``tune_prior``).

    >>> errors = standard_errors(diml_inverse.fit(env, traces, model="structured"), traces)  # doctest: +SKIP
    >>> print(errors.table())  # doctest: +SKIP

    Args:
        result: The fit.
        traces: The traces the fit was given (a :class:`~mechgym.traces.TraceDataset` or actions ``[E, T, N]``).
        episodes: ``"train"``: their first ``result.n_train_episodes`` episodes, which the fit trained on;
            ``"all"``: every episode given.
        max_parameters: Refuse larger models (the Hessian is ``P x P``).
        posterior: ``None`` (default): posterior standard deviations when the model has a prior, the likelihood's
            standard errors otherwise; ``False``: the likelihood's always; ``True``: require a prior.

    Returns:
        A :class:`StandardErrors`.

    Raises:
        ConfigurationError: bad traces or options.
        StandardErrorsError: too many parameters, nothing identified, or a fit that is not at a maximum.
    """
    if not isinstance(result, FitResult):
        raise ConfigurationError(f"result must be a FitResult (from diml_inverse.fit); got {type(result).__name__}")
    actions = _actions(result, traces, episodes)
    n_params = sum(p.numel() for p in result.mechanism.parameters() if p.requires_grad)
    if n_params > max_parameters:
        raise StandardErrorsError(
            f"the fitted {type(result.mechanism).__name__} has {n_params:,} parameters, more than max_parameters="
            f"{max_parameters:,}: its Hessian would be {n_params:,} x {n_params:,}. Use diml_inverse.bootstrap, or "
            "raise max_parameters"
        )
    check_memory(8.0 * 6 * n_params**2, f"standard errors of {n_params:,} parameters (float64 Hessians)", option=None)
    if posterior not in (None, True, False):
        raise ConfigurationError(f"posterior must be None, True or False; got {posterior!r}")
    use_posterior = has_prior(result) if posterior is None else posterior
    if use_posterior:
        flat, information = posterior_information(result, actions)
    else:
        gauge = result.learner.name in GAUGE_INVARIANT_RULES
        flat, information = identified_information(result, actions, gauge=gauge)
    basis = information.basis
    inverse = 1.0 / information.hessian
    covariance = (basis * inverse) @ basis.T
    weighted = basis * inverse
    robust = weighted @ information.meat @ weighted.T
    return StandardErrors(
        labels=tuple(flat.labels()),
        estimate=flat.theta.numpy().copy(),
        covariance=covariance.numpy(),
        robust_covariance=robust.numpy(),
        n_episodes=int(actions.shape[0]),
        n_identified=int(basis.shape[1]),
        n_gauge_directions=information.n_gauge_directions,
        n_flat_directions=information.n_flat_directions,
        smallest_eigenvalue=information.smallest_eigenvalue,
        flat=flat,
        information=information,
        posterior=use_posterior,
    )
