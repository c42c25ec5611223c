"""The information of a fit on its identified subspace: the flat parameter vector, the basis, the Hessian, the scores.

:func:`identified_information` does the work behind :func:`~diml_inverse.uncertainty.standard_errors` (whose
module docstring states the method): it reparametrises a fit as one float64 vector ``theta``, finds the basis ``V``
of the directions the likelihood can see, and returns the Hessian of the total NLL and the per-episode scores in
that basis, computed with :mod:`torch.func`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap
from torch.func import grad as grad_of

from diml_inverse.likelihood import trace_terms
from diml_inverse.result import FitResult
from mechgym.errors import MechGymError
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism

__all__ = [
    "GAUGE_INVARIANT_RULES",
    "FlatFit",
    "Information",
    "StandardErrorsError",
    "flat_fit",
    "has_prior",
    "hessian_columns",
    "hessian_products",
    "identified_information",
    "posterior_information",
]

#: Learning rules whose likelihood is unchanged by adding ``c_i(a_-i)`` to every action's payoff (full-information
#: rules). Others (bandit-Q reads only realised payoffs) get the raw counterfactual payoffs as identified quantities.
GAUGE_INVARIANT_RULES: frozenset[str] = frozenset({"logit_q", "hedge", "smooth_fp"})
_CHUNK = 64


class StandardErrorsError(MechGymError):
    """Standard errors that cannot be computed: too many parameters, or a fit that is not at a maximum."""


class _Fitted(nn.Module):
    """A fit's mechanism and learned learner quantities as one module, so that parameters can be swapped in."""

    def __init__(self, mechanism: Mechanism, learner: Learner, q0: Tensor | None) -> None:
        super().__init__()
        self.mechanism = mechanism
        self.learner = learner
        self.q0 = None if q0 is None else nn.Parameter(q0)
        self.alpha: nn.Parameter | None = None
        self.epsilon: nn.Parameter | None = None

    def forward(self, actions: Tensor | None, agent: int | None = None) -> Tensor:
        """Per-episode log-likelihoods ``[E]`` of ``actions``; with ``agent``, the counterfactual payoffs
        ``[K, A]`` of that agent at the joint actions ``actions`` ``[K, N]``; with ``actions=None``, the mechanism's
        prior penalty (its negative log prior, a scalar)."""
        if actions is None:
            penalty = self.mechanism.prior_penalty()
            return torch.zeros((), dtype=torch.float64) if penalty is None else penalty
        if agent is not None:
            return self.mechanism.counterfactual_payoffs(actions, torch.tensor([agent]))[..., 0, :]
        log_probs, _ = trace_terms(
            self.mechanism, actions, self.learner, self.q0, alpha=self.alpha, epsilon=self.epsilon, validate=False
        )
        return log_probs.sum((1, 2))


@dataclass(frozen=True, eq=False)
class FlatFit:
    """A fit as one flat float64 vector ``theta`` of its trainable tensors (mechanism, ``q0``, ``alpha``, ``epsilon``).

    Attributes:
        module: The fitted quantities as one module (a float64 CPU copy; the caller's fit is not touched).
        names: The parameter names, in ``theta`` order (``"mechanism.table"``, ``"q0"``, ...).
        shapes: Their shapes.
        theta: The fitted values, ``[P]``.
    """

    module: _Fitted
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    theta: Tensor

    def params(self, theta: Tensor) -> dict[str, Tensor]:
        """``theta`` cut into the named tensors."""
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            out[name] = theta[start : start + size].reshape(shape)
            start += size
        return out

    def call(self, theta: Tensor, actions: Tensor | None, agent: int | None = None) -> Tensor:
        """The module's forward with ``theta`` swapped in."""
        return functional_call(self.module, self.params(theta), (actions, agent))

    def counterfactual(self, theta: Tensor, joint_actions: Tensor) -> Tensor:
        """Counterfactual payoffs ``[K, N, A]`` at joint actions ``[K, N]`` with ``theta`` swapped in."""
        n_agents = self.module.mechanism.n_agents
        return torch.stack([self.call(theta, joint_actions, agent) for agent in range(n_agents)], dim=-2)

    def labels(self) -> list[str]:
        """One label per entry of ``theta``: ``name`` or ``name[i, j]`` (``mechanism.`` dropped)."""
        labels: list[str] = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            short = name.removeprefix("mechanism.")
            labels += [short] if len(shape) == 0 else [f"{short}[{', '.join(map(str, i))}]" for i in np.ndindex(*shape)]
        return labels

    def slices(self) -> dict[str, slice]:
        """Where each named tensor lies in ``theta`` (names without ``mechanism.``)."""
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            out[name.removeprefix("mechanism.")] = slice(start, start + size)
            start += size
        return out


def flat_fit(result: FitResult) -> FlatFit:
    """A float64 CPU copy of ``result`` as a :class:`FlatFit` (learned ``alpha``/``epsilon`` on their own scale).

    Raises:
        StandardErrorsError: the model has no trainable parameters.
    """
    mechanism = copy.deepcopy(result.mechanism).cpu().double()
    trainable = {name for name, p in result.mechanism.named_parameters() if p.requires_grad}
    for name, parameter in mechanism.named_parameters():
        parameter.requires_grad_(name in trainable)
    q0 = None if result.q0 is None else result.q0.detach().cpu().double().clone()
    module = _Fitted(mechanism, result.learner, q0)
    learned = result.learner.params()
    if result.config.learn_alpha:
        module.alpha = nn.Parameter(torch.tensor(float(learned["alpha"]), dtype=torch.float64))
    if result.config.learn_epsilon:
        module.epsilon = nn.Parameter(torch.tensor(float(learned["epsilon"]), dtype=torch.float64))
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    if not named:
        raise StandardErrorsError(
            f"the fitted {type(result.mechanism).__name__} has no trainable parameters: there is nothing to give "
            "standard errors for"
        )
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])
    return FlatFit(module, tuple(n for n, _ in named), tuple(p.shape for _, p in named), theta)


def visited_contexts(actions: Tensor, n_agents: int) -> list[Tensor]:
    """Per agent ``i``: the distinct joint actions of rounds ``1..T-1`` with ``a_i`` set to 0 (the contexts ``a_-i``
    whose counterfactual payoffs enter the likelihood)."""
    played = actions[:, :-1].reshape(-1, n_agents)
    contexts = []
    for agent in range(n_agents):
        rows = played.clone()
        rows[:, agent] = 0
        contexts.append(torch.unique(rows, dim=0))
    return contexts


def _quantities(flat: FlatFit, actions: Tensor, gauge: bool) -> list[Callable[[Tensor], Tensor]]:
    """Functions ``theta -> g_k(theta)`` whose stacked Jacobians span the identified directions (one per agent,
    and one for the learner quantities)."""
    contexts = visited_contexts(actions, flat.module.mechanism.n_agents)

    def payoffs(agent: int) -> Callable[[Tensor], Tensor]:
        def g(theta: Tensor) -> Tensor:
            cf = flat.call(theta, contexts[agent], agent)  # [U, A]
            return (cf - cf.mean(-1, keepdim=True) if gauge else cf).reshape(-1)

        return g

    functions = [payoffs(agent) for agent in range(len(contexts))]
    learner_names = [name for name in flat.names if not name.startswith("mechanism.")]
    if learner_names:

        def learner_quantities(theta: Tensor) -> Tensor:
            params = flat.params(theta)
            parts = []
            for name in learner_names:
                value = params[name]
                parts.append(value - value.mean(-1, keepdim=True) if name == "q0" and gauge else value)
            return torch.cat([part.reshape(-1) for part in parts])

        functions.append(learner_quantities)
    return functions


@dataclass(frozen=True, eq=False)
class Information:
    """The likelihood's curvature on the identified subspace (see :func:`identified_information`).

    Attributes:
        basis: ``V``, ``[P, d]`` orthonormal columns: the directions kept.
        hessian: Eigenvalues of the Hessian of the total NLL in that basis, ``[d]`` (the basis diagonalises it).
        meat: ``B = sum_e s_e s_e^T`` in that basis, ``[d, d]``.
        n_gauge_directions: Directions the likelihood cannot see by construction (gauge, unvisited contexts,
            redundant parameters): ``P`` minus the rank of the identified quantities' Jacobian.
        n_flat_directions: Further directions dropped because the Hessian is flat along them.
        smallest_eigenvalue: The smallest Hessian eigenvalue kept, relative to the largest.
    """

    basis: Tensor
    hessian: Tensor
    meat: Tensor
    n_gauge_directions: int
    n_flat_directions: int
    smallest_eigenvalue: float


def _identified_basis(flat: FlatFit, actions: Tensor, gauge: bool, tolerance: float) -> Tensor:
    n_params = flat.theta.numel()
    gram = torch.zeros(n_params, n_params, dtype=torch.float64)
    for g in _quantities(flat, actions, gauge):
        jacobian = jacrev(g, chunk_size=256)(flat.theta)  # [F_k, P]
        gram += jacobian.T @ jacobian
    values, vectors = torch.linalg.eigh(gram)
    top = float(values.max()) if values.numel() else 0.0
    if top <= 0:
        raise StandardErrorsError("the fitted payoffs do not depend on the parameters: nothing is identified")
    return vectors[:, values > tolerance * top]


def hessian_products(function: Callable[[Tensor], Tensor], theta: Tensor, directions: Tensor) -> Tensor:
    """``H @ directions`` ``[P, K]`` for the Hessian ``H`` of the scalar ``function`` at ``theta`` ``[P]``
    (forward-over-reverse Hessian-vector products, vectorised over chunks of the ``K`` directions)."""

    def hvp(v: Tensor) -> Tensor:
        return jvp(grad_of(function), (theta,), (v,))[1]

    with warnings.catch_warnings():
        # torch's first forward-mode product loads its own decompositions with torch.jit.script, which warns about
        # itself (FutureWarning in torch 2.14): not the user's code, nor ours
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        columns = [
            vmap(hvp, in_dims=1, out_dims=1)(directions[:, k : k + _CHUNK])
            for k in range(0, directions.shape[1], _CHUNK)
        ]
    return torch.cat(columns, dim=1)


def hessian_columns(flat: FlatFit, actions: Tensor, directions: Tensor, prior: bool = False) -> Tensor:
    """``H @ directions`` for the Hessian ``H`` of the total NLL at ``theta`` (:func:`hessian_products`); with
    ``prior``, of the NLL plus the mechanism's prior penalty (the negative log posterior)."""

    def nll(theta: Tensor) -> Tensor:
        total = -flat.call(theta, actions).sum()
        return total + flat.call(theta, None) if prior else total

    return hessian_products(nll, flat.theta, directions)


def identified_information(
    result: FitResult,
    actions: Tensor,
    *,
    gauge: bool,
    basis_tolerance: float = 1e-9,
    flat_tolerance: float = 1e-9,
    negative_tolerance: float = 1e-4,
) -> tuple[FlatFit, Information]:
    """The Hessian and the per-episode scores of the total NLL of ``actions`` on the identified subspace of ``result``.

    Args:
        result: The fit.
        actions: The episodes it was fitted to, ``[E, T, N]``.
        gauge: Whether the rule is gauge-invariant (the identified quantities are then the gauge-fixed payoffs).
        basis_tolerance: Eigenvalues of ``G^T G`` below this times the largest span no identified direction.
        flat_tolerance: Hessian eigenvalues (in the basis) below this times the largest are dropped as flat,
            slightly negative ones included (the epsilon-mixed logit is not concave where a policy saturates).
        negative_tolerance: A Hessian eigenvalue below ``-negative_tolerance`` times the largest is refused.

    Returns:
        The flat fit and its :class:`Information`.

    Raises:
        StandardErrorsError: nothing is identified, or the Hessian is not positive semi-definite (not a maximum).
    """
    flat = flat_fit(result)
    basis = _identified_basis(flat, actions, gauge, basis_tolerance)
    reduced = basis.T @ hessian_columns(flat, actions, basis)
    reduced = (reduced + reduced.T) / 2
    values, vectors = torch.linalg.eigh(reduced)
    top = float(values.abs().max())
    if float(values.min()) < -negative_tolerance * top:
        raise StandardErrorsError(
            f"the Hessian of the NLL has a negative eigenvalue ({float(values.min()):.3g}, largest {top:.3g}) on the "
            "identified directions: the fit is not at a maximum of the likelihood. Fit to convergence (more epochs, "
            "select='last', no early stopping) or use diml_inverse.bootstrap"
        )
    keep = values > flat_tolerance * top
    basis, values = basis @ vectors[:, keep], values[keep]
    scores = jacrev(lambda theta: flat.call(theta, actions), chunk_size=_CHUNK)(flat.theta) @ basis  # [E, d]
    information = Information(
        basis=basis,
        hessian=values,
        meat=scores.T @ scores,
        n_gauge_directions=flat.theta.numel() - int(keep.numel()),
        n_flat_directions=int((~keep).sum()),
        smallest_eigenvalue=float(values.min() / top) if values.numel() else math.nan,
    )
    return flat, information


def has_prior(result: FitResult) -> bool:
    """Whether the fitted mechanism has a prior (``Mechanism.prior_penalty`` is not None)."""
    return result.mechanism.prior_penalty() is not None


def posterior_information(
    result: FitResult, actions: Tensor, *, negative_tolerance: float = 1e-4
) -> tuple[FlatFit, Information]:
    """The Laplace approximation at a MAP fit: the Hessian of the NLL of ``actions`` plus the model's prior penalty.

    A proper prior on every parameter (``"interaction"``, ``"interaction_totals"``, ``"additive_counts"``,
    ``"aggregate_counts"``) makes this Hessian positive definite: the prior pins the gauge and the unvisited contexts,
    so every direction is kept and its inverse is the posterior covariance. The returned :class:`Information` is in the
    Hessian's eigenbasis (all ``P`` directions); its ``meat`` holds the NLL's per-episode scores, for the sandwich of
    the penalised estimator.

    Raises:
        StandardErrorsError: the model has no prior, or the Hessian is not positive definite (not at a maximum).
    """
    if not has_prior(result):
        raise StandardErrorsError(
            f"the fitted {type(result.mechanism).__name__} has no prior (prior_penalty is None): there is no "
            "posterior; use posterior=False for the likelihood's standard errors"
        )
    flat = flat_fit(result)
    n_params = flat.theta.numel()
    hessian = hessian_columns(flat, actions, torch.eye(n_params, dtype=torch.float64), prior=True)
    values, vectors = torch.linalg.eigh((hessian + hessian.T) / 2)
    top = float(values.abs().max())
    if top <= 0 or float(values.min()) < -negative_tolerance * top:
        raise StandardErrorsError(
            f"the Hessian of the negative log posterior has a negative eigenvalue ({float(values.min()):.3g}, largest "
            f"{top:.3g}): the fit is not at a maximum. Fit to convergence (optimizer='lbfgs', more epochs) or use "
            "diml_inverse.bootstrap"
        )
    keep = values > 0
    vectors, values = vectors[:, keep], values[keep]
    scores = jacrev(lambda theta: flat.call(theta, actions), chunk_size=_CHUNK)(flat.theta) @ vectors  # [E, d]
    information = Information(
        basis=vectors,
        hessian=values,
        meat=scores.T @ scores,
        n_gauge_directions=0,
        n_flat_directions=int((~keep).sum()),
        smallest_eigenvalue=float(values.min() / top) if values.numel() else math.nan,
    )
    return flat, information
