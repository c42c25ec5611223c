"""The Laplace evidence of a fit's prior, and its second-order expansion to other priors without refitting.

``prior_selection="evidence"`` (:func:`~diml_inverse.full_batch.search_prior_by_evidence`) chooses a model's prior by
``log p(D) ~ -NLL(theta) - R(theta) - log det(H + P) / 2 + log det P / 2`` at the MAP (MacKay's evidence framework):
one Hessian ``H`` of the training NLL per trained prior (:func:`evidence_expansion`), then the evidence of many other
priors from it (:meth:`EvidenceExpansion.log_evidence`).

Two structures make this cheap without approximating anything:

* **Independent blocks.** A payoff parameter that only one agent's likelihood reads (the interaction model's, one
  table per agent) has no Hessian entry with another agent's, so ``H + P`` is block-diagonal: the connected
  components of the pattern of ``H`` and ``P`` are factorised one by one (blocks of one size batched), ``N**3`` times
  fewer operations than the whole matrix for ``N`` agents. The Hessian-vector products themselves are shared:
  one product probes one parameter of every block at once (the blocks' rows do not overlap).
* **Closed-form precisions.** A family that knows its prior's precision (``Mechanism.prior_precision``) gives it
  directly instead of ``P`` Hessian-vector products of the penalty for every prior tried.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, jacrev, jvp, vmap
from torch.func import grad as grad_of

from diml_inverse.result import FitResult
from diml_inverse.uncertainty.information import (
    FlatFit,
    StandardErrorsError,
    _Fitted,
    flat_fit,
    has_prior,
    hessian_columns,
    visited_contexts,
)
from mechgym.mechanisms import Mechanism, TabularMechanism
from mechgym.mechanisms.base import all_joint_actions

__all__ = ["EvidenceExpansion", "evidence_expansion", "laplace_log_evidence"]

#: Hessian eigenvalues below this times the largest are zero in the evidence (the float32 Hessian's resolution).
EVIDENCE_RESOLUTION = 1e-6
#: The grouped Hessian is kept when a random product agrees with it to this relative error (float32 products: ~1e-6).
_PROBE_TOLERANCE = 1e-4


def connected_components(pattern: Tensor) -> list[Tensor]:
    """The connected components of the graph whose adjacency is the boolean ``pattern`` ``[P, P]`` (made
    symmetric), as sorted index tensors ordered by their smallest index (label propagation with pointer jumping)."""
    size = pattern.shape[0]
    adjacency = pattern | pattern.T
    labels = torch.arange(size)
    while True:
        spread = torch.where(adjacency, labels[None, :], size).amin(dim=1).clamp_max(labels)
        spread = spread[spread]  # pointer jumping: a long chain (a random-walk curve) settles in log steps
        if torch.equal(spread, labels):
            break
        labels = spread
    roots = labels.unique()
    return [(labels == root).nonzero()[:, 0] for root in roots]


def _batches(blocks: list[Tensor]) -> list[Tensor]:
    """The blocks grouped by size, each group as one index tensor ``[B, s]`` (one batched factorisation)."""
    sizes: dict[int, list[Tensor]] = {}
    for block in blocks:
        sizes.setdefault(int(block.numel()), []).append(block)
    return [torch.stack(group) for _, group in sorted(sizes.items())]


def _probe_groups(flat: FlatFit, actions: Tensor) -> list[Tensor] | None:
    """Parameters that Hessian-vector products may probe together: one index tensor per agent, the parameters that
    agent's counterfactual payoffs read (their Jacobian at its visited contexts, at the fit and at a perturbed point,
    so that a derivative that is zero only at the fit still counts), when those sets are disjoint; ``None``
    otherwise (learned learner quantities, parameters shared between agents). Parameters no agent reads are in no
    group: their Hessian rows are zero.

    With independent learners, agent ``i``'s likelihood reads the mechanism only through its own payoffs, so two
    parameters read by different agents have a zero Hessian entry, and one product with a direction that sets one
    parameter of every group gives each group's column in that group's rows (:func:`_hessian` checks this).
    """
    if any(not name.startswith("mechanism.") for name in flat.names):
        return None
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(flat.theta.shape, generator=generator, dtype=flat.theta.dtype)
    points = (flat.theta, flat.theta + 0.1 * noise * (flat.theta.abs() + 1))
    owner = torch.full((flat.theta.numel(),), -1)
    for agent, contexts in enumerate(visited_contexts(actions, flat.module.mechanism.n_agents)):
        reads = torch.zeros(flat.theta.numel(), dtype=torch.bool)
        for point in points:
            jacobian = torch.func.jacrev(lambda theta: flat.call(theta, contexts, agent))(point)  # noqa: B023
            reads |= (jacobian != 0).reshape(-1, flat.theta.numel()).any(0)
        if bool((reads & (owner >= 0)).any()):
            return None  # shared between agents
        owner[reads] = agent
    return [(owner == agent).nonzero()[:, 0] for agent in range(int(owner.max()) + 1)]


def _hessian(flat: FlatFit, actions: Tensor) -> Tensor:
    """The Hessian ``[P, P]`` of the total NLL: through the payoff table when the game has one with fewer entries
    than the model has parameters (:func:`_table_hessian`), else by :func:`_grouped_hessian`."""
    through_table = _table_hessian(flat, actions)
    return _grouped_hessian(flat, actions) if through_table is None else through_table


def _table_hessian(flat: FlatFit, actions: Tensor) -> Tensor | None:
    """The Hessian of ``NLL(T(theta))`` by the chain rule through the payoff table ``T`` ``[A**N, N]``:
    ``J^T H_T J + sum_k (dNLL/dT_k) d2T_k/dtheta2``, with ``H_T`` the Hessian of the free-table model (one product per
    table entry of an agent, fewer than the model's parameters when the model over-parametrises the table, as the
    interaction model with all its orders does) and the second term zero when ``T`` is linear in ``theta`` (its
    Jacobian the same at a perturbed point). ``None`` when the route does not apply or would not be cheaper."""
    mechanism = flat.module.mechanism
    n_params = flat.theta.numel()
    n_entries = mechanism.n_joint_actions * mechanism.n_agents
    if (
        any(not name.startswith("mechanism.") for name in flat.names)
        or mechanism.n_joint_actions > mechanism.max_table_size
        or n_entries >= n_params
    ):
        return None
    joint = all_joint_actions(mechanism.n_agents, mechanism.n_actions)

    def table_of(theta: Tensor) -> Tensor:
        params = {name.removeprefix("mechanism."): value for name, value in flat.params(theta).items()}
        return functional_call(mechanism, params, (joint,)).reshape(-1)

    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(flat.theta.shape, generator=generator, dtype=flat.theta.dtype)
    jacobian = jacrev(table_of)(flat.theta)  # [A**N * N, P]
    linear = torch.equal(jacobian, jacrev(table_of)(flat.theta + 0.1 * noise * (flat.theta.abs() + 1)))
    table = TabularMechanism(mechanism.n_agents, mechanism.n_actions).to(flat.theta.dtype)
    free = FlatFit(
        _Fitted(table, flat.module.learner, None),
        ("mechanism.table",),
        (table.table.shape,),
        table_of(flat.theta).detach(),
    )
    table_hessian = _grouped_hessian(free, actions)
    hessian = jacobian.T @ table_hessian @ jacobian
    if not linear:
        weights = torch.func.grad(lambda values: -free.call(values, actions).sum())(free.theta)

        def weighted(theta: Tensor) -> Tensor:
            return weights @ table_of(theta)

        def product(v: Tensor) -> Tensor:
            return jvp(grad_of(weighted), (flat.theta,), (v,))[1]

        eye = torch.eye(n_params, dtype=flat.theta.dtype)
        hessian += torch.cat(
            [vmap(product, in_dims=1, out_dims=1)(eye[:, k : k + 64]) for k in range(0, n_params, 64)], 1
        )
    return hessian


def _grouped_hessian(flat: FlatFit, actions: Tensor) -> Tensor:
    """The Hessian ``[P, P]`` of the total NLL, with one Hessian-vector product per parameter of the largest probe
    group (:func:`_probe_groups`) instead of one per parameter, and one more with a random direction to check that
    the groups do not interact (else every parameter is probed alone)."""
    n_params = flat.theta.numel()
    groups = _probe_groups(flat, actions)
    if groups is not None and len(groups) > 1:
        width = max(int(group.numel()) for group in groups)
        generator = torch.Generator().manual_seed(1)
        check = torch.randn(n_params, 1, generator=generator, dtype=flat.theta.dtype)
        directions = torch.zeros(n_params, width + 1, dtype=flat.theta.dtype)
        for group in groups:
            directions[group, torch.arange(group.numel())] = 1.0
        directions[:, width:] = check
        columns = hessian_columns(flat, actions, directions)  # column k holds every group's k-th column
        hessian = torch.zeros(n_params, n_params, dtype=flat.theta.dtype)
        for group in groups:
            hessian[group[:, None], group[None, :]] = columns[group][:, : group.numel()]
        exact, assembled = columns[:, width], (hessian @ check)[:, 0]
        if float((exact - assembled).norm()) <= _PROBE_TOLERANCE * float(exact.norm()) + 1e-30:
            return hessian
    return hessian_columns(flat, actions, torch.eye(n_params, dtype=flat.theta.dtype))


@dataclass(frozen=True, eq=False)
class EvidenceExpansion:
    """The training NLL of a MAP fit to second order, ``NLL(theta) ~ nll + g^T d + d^T H d / 2`` with
    ``d = theta - theta_hat``, from which :meth:`log_evidence` gives the Laplace evidence under *any* Gaussian prior
    on the same parameters without refitting (see :func:`evidence_expansion`).

    Attributes:
        flat: The fit as a flat float64 vector (its module holds the fitted learner quantities).
        nll: The training NLL at ``theta_hat`` (summed over the episodes).
        gradient: ``g``, its gradient ``[P]`` (about minus the prior's at a converged MAP fit).
        hessian: ``H``, its Hessian ``[P, P]`` (float64; computed in float32, relative error ~1e-7), made positive
            semi-definite.
        mechanism: ``[P]``, True for the mechanism's parameters (the ones with a prior; learned learner quantities
            have a flat prior, the same for every candidate).
        blocks: The parameters in groups that neither ``H`` nor the fit's prior precision couples (the connected
            components of their pattern); the evidence factorises over them.
        roots: Per size of :attr:`blocks`: their indices ``[B, s]`` and square roots ``R`` ``[B, s, r]`` of their
            Hessians (``H_b = R R^T``; ``r`` the largest rank in the group); empty: computed from :attr:`hessian`.
    """

    flat: FlatFit
    nll: float
    gradient: Tensor
    hessian: Tensor
    mechanism: Tensor
    blocks: tuple[Tensor, ...]
    roots: tuple[tuple[Tensor, Tensor], ...] = ()

    def prior_precision(self, mechanism: Mechanism) -> Tensor:
        """``[P, P]``: the Hessian of ``mechanism``'s prior penalty on the expansion's parameters (zero on the learner
        quantities). ``mechanism`` has the fit's parameter layout (the family with other prior arguments)."""
        precision = torch.zeros_like(self.hessian)
        index = self.mechanism.nonzero()[:, 0]
        block = self._mechanism_precision(mechanism)
        precision[index[:, None], index[None, :]] = torch.diag(block) if block.dim() == 1 else block
        return precision

    def _mechanism_precision(self, mechanism: Mechanism) -> Tensor:
        """The precision on the mechanism's parameters: ``Mechanism.prior_precision`` when the family gives it in
        closed form (``[P_m]`` when diagonal, else ``[P_m, P_m]``), else by forward-over-reverse differentiation."""
        names = [name for name in self.flat.names if name.startswith("mechanism.")]
        every = [f"mechanism.{name}" for name, _ in mechanism.named_parameters()]
        closed = mechanism.prior_precision() if names == every else None
        if closed is not None:
            return closed.detach().cpu().double()
        module = _Fitted(copy.deepcopy(mechanism).cpu().double(), self.flat.module.learner, None)
        theta = self.flat.theta[self.mechanism]

        def penalty(values: Tensor) -> Tensor:
            params, start = {}, 0
            for name in names:
                shape = self.flat.shapes[self.flat.names.index(name)]
                params[name] = values[start : start + math.prod(shape)].reshape(shape)
                start += math.prod(shape)
            return functional_call(module, params, (None, None))

        size = int(self.mechanism.sum())
        block = vmap(lambda v: jvp(grad_of(penalty), (theta,), (v,))[1])(torch.eye(size, dtype=torch.float64))
        return (block + block.T) / 2

    def log_evidence(self, mechanism: Mechanism, refit: bool = True) -> float:
        """The Laplace log evidence of the training episodes under ``mechanism``'s prior, up to a constant common to
        every prior: ``-(NLL + R)(theta_1) - log det(I + L^-1 H L^-T) / 2``, where ``P = L L^T`` is the prior's
        precision, ``R = theta^T P theta / 2`` and the determinant is ``det(H + P) / det P``, computed whitened so
        that a flat prior in directions the data do not see cancels exactly; block by block over :attr:`blocks`.

        With ``refit`` (for another prior), ``theta_1 = theta_hat + (H + P)^-1 (H theta_hat - g) - theta_hat`` is the
        MAP of the quadratic model: a prediction that is good within a factor of a few of the fit's own prior and
        wrong far from it (where the step leaves the quadratic region). Without, ``theta_1 = theta_hat``: the
        Laplace evidence of the fit itself, at its own prior. ``-inf`` where the prior is not proper.

        Raises:
            StandardErrorsError: the fit has learned learner quantities (they have no prior).
        """
        if not bool(self.mechanism.all()):
            raise StandardErrorsError(
                "the evidence needs a prior on every fitted quantity; learned learner quantities (learn_q0, "
                "learn_alpha, learn_epsilon) have none"
            )
        precision = self._mechanism_precision(mechanism)  # every parameter is the mechanism's
        pieces = self._pieces
        if precision.dim() == 2 and _couples(precision, self.blocks):  # this prior's pattern joins blocks: one block
            whole = torch.arange(len(self.gradient))[None]
            pieces = self._pieces_of(((whole, _square_roots(self.hessian[None], 0.0)),))
        theta_hat = self.flat.theta
        theta = torch.empty_like(theta_hat)
        log_det, curvature = 0.0, 0.0
        for index, root, target in pieces:  # [B, s], [B, s, r], [B, s]
            if precision.dim() == 1:  # diagonal: L^-1 = diag(scale)
                diagonal = precision[index]
                if not bool((diagonal > 0).all()):
                    return -math.inf
                scale = diagonal.rsqrt()
                whitened_root, whitened_target = scale[..., None] * root, scale * target
            else:
                factor, info = torch.linalg.cholesky_ex(precision[index[:, :, None], index[:, None, :]])
                if bool(info.any()):
                    return -math.inf
                whitened_root = torch.linalg.solve_triangular(factor, root, upper=False)
                whitened_target = torch.linalg.solve_triangular(factor, target[..., None], upper=False)[..., 0]
            # det(I + W W^T) = det(I + W^T W) and (I + W W^T)^-1 u = u - W (I + W^T W)^-1 W^T u, W = L^-1 R: r x r
            solved = whitened_target
            if root.shape[-1]:
                gram = whitened_root.transpose(-1, -2) @ whitened_root
                gram.diagonal(dim1=-2, dim2=-1).add_(1.0)
                gram_factor = torch.linalg.cholesky(gram)  # I + W^T W is positive definite
                log_det += float(gram_factor.diagonal(dim1=-2, dim2=-1).log().sum())
                projected = torch.cholesky_solve(
                    whitened_root.transpose(-1, -2) @ whitened_target[..., None], gram_factor
                )
                solved = whitened_target - (whitened_root @ projected)[..., 0]
            if precision.dim() == 1:
                block = scale * solved
            else:
                block = torch.linalg.solve_triangular(factor.transpose(-1, -2), solved[..., None], upper=True)[..., 0]
            if refit:
                step = block - theta_hat[index]
                curvature += float((root.transpose(-1, -2) @ step[..., None]).square().sum())
            theta[index] = block
        if not refit:
            theta = theta_hat
        nll = self.nll + float(self.gradient @ (theta - theta_hat)) + 0.5 * curvature
        penalty = 0.5 * float(theta @ (precision * theta if precision.dim() == 1 else precision @ theta))
        return -nll - penalty - log_det

    @functools.cached_property
    def _pieces(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per size of :attr:`blocks`: their indices ``[B, s]``, Hessian square roots ``[B, s, r]`` and the Newton
        targets ``H theta_hat - g`` ``[B, s]`` (gathered once for every prior the search tries)."""
        roots = self.roots or tuple(
            (index, _square_roots(self.hessian[index[:, :, None], index[:, None, :]], 0.0))
            for index in _batches(list(self.blocks))
        )
        return self._pieces_of(roots)

    def _pieces_of(self, roots: tuple[tuple[Tensor, Tensor], ...]) -> list[tuple[Tensor, Tensor, Tensor]]:
        target = self.hessian @ self.flat.theta - self.gradient
        return [(index, root, target[index]) for index, root in roots]


def _square_roots(hessians: Tensor, threshold: float) -> Tensor:
    """``R`` ``[B, s, r]`` with ``R R^T`` the positive part of each symmetric ``hessians[b]`` above ``threshold``
    (:func:`_roots_of` its eigendecomposition)."""
    values, vectors = torch.linalg.eigh((hessians + hessians.transpose(-1, -2)) / 2)
    return _roots_of(values, vectors, threshold)


def _roots_of(values: Tensor, vectors: Tensor, threshold: float) -> Tensor:
    """``R`` ``[B, s, r]`` from eigenvalues ``[B, s]`` (ascending) and eigenvectors ``[B, s, s]``: eigenvalues at or
    below ``threshold`` are zero, ``r`` is the largest count of the others."""
    values = torch.where(values > threshold, values, torch.zeros_like(values))
    rank = int((values > 0).sum(-1).max()) if values.numel() else 0
    top = slice(values.shape[-1] - rank, None)
    return vectors[..., top] * values[..., None, top].sqrt()


def _couples(precision: Tensor, blocks: tuple[Tensor, ...]) -> bool:
    """Whether ``precision`` ``[P, P]`` has a nonzero entry between two of ``blocks``."""
    label = torch.empty(precision.shape[0], dtype=torch.long)
    for k, block in enumerate(blocks):
        label[block] = k
    rows, columns = precision.nonzero(as_tuple=True)
    return bool((label[rows] != label[columns]).any())


def evidence_expansion(result: FitResult, actions: Tensor) -> EvidenceExpansion:
    """The :class:`EvidenceExpansion` of a MAP fit on its training ``actions`` ``[E, T, N]``: one Hessian of the
    NLL (Hessian-vector products in float32, one per parameter of the largest agent's group: half the time of
    float64, the log determinant moves by ~1e-4 nats), its gradient and value. Per block, the Hessian's eigenvalues
    below ``1e-6`` of the largest (over all blocks) are set to zero: the float32 noise in the directions the data
    do not see (the gauge, unvisited contexts), and the negative ones the exploration mixture gives where a policy
    saturates (strong payoffs make the NLL non-convex there), so every proper prior has a finite evidence.

    Raises:
        StandardErrorsError: the model has no prior.
    """
    if not has_prior(result):
        raise StandardErrorsError(
            f"the fitted {type(result.mechanism).__name__} has no prior (prior_penalty is None): it has no evidence"
        )
    flat = flat_fit(result)
    single = FlatFit(copy.deepcopy(flat.module).float(), flat.names, flat.shapes, flat.theta.float())
    raw = _hessian(single, actions).double()
    gradient, value = torch.func.grad_and_value(lambda theta: -flat.call(theta, actions).sum())(flat.theta)
    mechanism = torch.cat(
        [
            torch.full((math.prod(shape),), name.startswith("mechanism."))
            for name, shape in zip(flat.names, flat.shapes, strict=True)
        ]
    )
    expansion = EvidenceExpansion(flat, float(value), gradient.detach(), raw, mechanism, (torch.arange(len(raw)),))
    pattern = raw != 0
    if bool(mechanism.all()):
        pattern |= expansion.prior_precision(result.mechanism) != 0
    blocks = connected_components(pattern)
    decompositions = []
    for index in _batches(blocks):
        hessian = raw[index[:, :, None], index[:, None, :]]
        decompositions.append((index, *torch.linalg.eigh((hessian + hessian.transpose(-1, -2)) / 2)))
    top = max(float(values.abs().max()) for _, values, _ in decompositions)
    # eigenvalues below float32's resolution are zero (gauge and unvisited directions, where a nearly flat prior must
    # cancel exactly); negative ones come from the exploration mixture where a policy saturates (NLL not convex)
    roots = tuple(
        (index, _roots_of(values, vectors, EVIDENCE_RESOLUTION * top)) for index, values, vectors in decompositions
    )
    cleaned = torch.zeros_like(raw)
    for index, root in roots:
        cleaned[index[:, :, None], index[:, None, :]] = root @ root.transpose(-1, -2)
    return dataclasses.replace(expansion, hessian=cleaned, blocks=tuple(blocks), roots=roots)


def laplace_log_evidence(result: FitResult, actions: Tensor) -> float:
    """The Laplace approximation of the log marginal likelihood of ``actions`` under ``result``'s model and prior.

    ``log p(D) ~ -NLL(theta) - R(theta) - 0.5 log det H + 0.5 log det P`` at the MAP ``theta``, where ``R`` is the
    model's prior penalty (a Gaussian's negative log density up to its constant), ``P`` its Hessian (the prior
    precision, constant for a Gaussian prior) and ``H`` the Hessian of ``NLL + R``. Constants that do not depend on
    the prior (``2 pi`` factors, the flat prior of learned learner quantities) are dropped, so the value compares
    priors of one model family on the same data: the larger, the better the prior explains the data (MacKay's
    evidence; it needs no held-out episodes). ``-inf`` where a Hessian is not positive definite.

    Raises:
        StandardErrorsError: the model has no prior.
    """
    return evidence_expansion(result, actions).log_evidence(result.mechanism, refit=False)
