"""The Laplace evidence of a fit's prior, and its second-order expansion to other priors without refitting.

``prior_selection="evidence"`` (:func:`~diml_inverse.full_batch.search_prior_by_evidence`) chooses a model's prior by
``log p(D) ~ -NLL(theta) - R(theta) - log det(H + P) / 2 + log det P / 2`` at the MAP (MacKay's evidence framework):
one Hessian ``H`` of the training NLL per trained prior (:func:`evidence_expansion`), then the evidence of many other
priors from it (:meth:`EvidenceExpansion.log_evidence`).

Structure makes this cheap without approximating anything (docs/results.md, "Choosing the prior by its evidence"):

* **Independent blocks.** A payoff parameter that only one agent's likelihood reads (the interaction model's, one
  table per agent) has no Hessian entry with another agent's, so ``H + P`` is block-diagonal: the connected
  components of the pattern of ``H`` and ``P`` are factorised one by one (blocks of one size batched), ``N**2``
  times fewer operations than the whole matrix for ``N`` agents. The Hessian-vector products themselves are
  shared: one product probes one parameter of every block at once (the blocks' rows do not overlap), and
  parameters no agent reads are not probed.
* **The payoff table.** A model with more parameters than table entries (the interaction model with all its
  orders) gets its Hessian by the chain rule through the table: one product per table entry of an agent.
* **Low rank.** Each block is kept as a square root ``R`` (``H_b = R R^T``), and the determinant and the Newton
  step of every prior tried are ``r x r`` (Sylvester's identity), ``r`` the block's rank.
* **Closed-form precisions.** A family that knows its prior's precision (``Mechanism.prior_precision``) gives it
  directly instead of ``P`` Hessian-vector products of the penalty for every prior tried; one whose precision is
  constant within labelled classes (``Mechanism.prior_classes``, the interaction model's orders) lets the ``r x r``
  matrices be precomputed per class.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor
from torch.func import functional_call, jacrev

from diml_inverse.result import FitResult
from diml_inverse.uncertainty.information import (
    FlatFit,
    StandardErrorsError,
    _Fitted,
    flat_fit,
    has_prior,
    hessian_columns,
    hessian_products,
    visited_contexts,
)
from mechgym.mechanisms import Mechanism, TabularMechanism
from mechgym.mechanisms.base import all_joint_actions

__all__ = ["EvidenceExpansion", "evidence_expansion", "laplace_log_evidence"]

#: Hessian eigenvalues below this times the largest are zero in the evidence (the float32 Hessian's resolution).
EVIDENCE_RESOLUTION = 1e-6
#: The grouped Hessian is kept when a random product agrees with it to this relative error (float32 products: ~1e-6).
_PROBE_TOLERANCE = 1e-4
_Item = TypeVar("_Item")


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


def _by_size(items: list[_Item], size: Callable[[_Item], int]) -> list[list[_Item]]:
    """``items`` grouped by ``size``, the groups in increasing size (each one batched factorisation)."""
    groups: dict[int, list[_Item]] = {}
    for item in items:
        groups.setdefault(size(item), []).append(item)
    return [group for _, group in sorted(groups.items())]


def _batches(blocks: list[Tensor]) -> list[Tensor]:
    """The blocks grouped by size, each group as one index tensor ``[B, s]``."""
    return [torch.stack(group) for group in _by_size(blocks, Tensor.numel)]


def _probe_groups(flat: FlatFit, actions: Tensor) -> list[Tensor] | None:
    """Parameters that Hessian-vector products may probe together: one index tensor per agent, the parameters that
    agent's counterfactual payoffs at its visited contexts read, when those sets are disjoint; else one group, the
    parameters any agent reads. ``None`` with learned learner quantities (every parameter is probed alone).
    Parameters no agent reads are in no group: their Hessian rows are zero (a payoff count the data never visit).

    A parameter is read where a random combination of the payoffs has a nonzero gradient in it, at the fit or at a
    perturbed point (so that a derivative that is zero only at the fit still counts). With independent learners,
    agent ``i``'s likelihood reads the mechanism only through its own payoffs, so two parameters read by different
    agents have a zero Hessian entry, and one product with a direction that sets one parameter of every group gives
    each group's column in that group's rows (:func:`_grouped_hessian` checks this with one random product).
    """
    if any(not name.startswith("mechanism.") for name in flat.names):
        return None
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(flat.theta.shape, generator=generator, dtype=flat.theta.dtype)
    points = (flat.theta, flat.theta + 0.1 * noise * (flat.theta.abs() + 1))
    owner = torch.full((flat.theta.numel(),), -1)
    shared = False
    for agent, contexts in enumerate(visited_contexts(actions, flat.module.mechanism.n_agents)):
        reads = torch.zeros(flat.theta.numel(), dtype=torch.bool)
        for point in points:
            pair = torch.func.vjp(lambda theta: flat.call(theta, contexts, agent), point)  # noqa: B023
            payoffs, pull = pair[0], pair[1]
            (gradient,) = pull(torch.randn(payoffs.shape, generator=generator, dtype=payoffs.dtype))
            reads |= gradient != 0
        shared = shared or bool((reads & (owner >= 0)).any())
        owner[reads & (owner < 0)] = agent
    if shared:
        return [(owner >= 0).nonzero()[:, 0]]
    return [(owner == agent).nonzero()[:, 0] for agent in range(int(owner.max()) + 1)]


def _hessian(flat: FlatFit, actions: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]] | None]:
    """The Hessian ``[P, P]`` of the total NLL: through the payoff table when the game has one with fewer entries
    than the model has parameters (:func:`_table_hessian`), else by :func:`_grouped_hessian`. With it, when the table
    route gives them, its square roots per agent: ``(parameters [s], R [s, r])`` with the block ``R R^T``, the
    float32 noise already removed (:func:`_table_hessian`); ``None``: the caller cleans the Hessian."""
    through_table = _table_hessian(flat, actions)
    return (_grouped_hessian(flat, actions), None) if through_table is None else through_table


def _table_hessian(flat: FlatFit, actions: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]] | None] | None:
    """The Hessian of ``NLL(T(theta))`` by the chain rule through the payoff table ``T`` ``[A**N, N]``:
    ``J^T H_T J + sum_k (dNLL/dT_k) d2T_k/dtheta2``, with ``H_T`` the Hessian of the free-table model (one product per
    table entry of an agent, fewer than the model's parameters when the model over-parametrises the table, as the
    interaction model with all its orders does), ``J^T H_T J`` formed agent by agent over the parameters that agent's
    entries read, and the second term zero for a model that is linear in its parameters
    (``Mechanism.linear_in_parameters``). ``None`` when the route does not apply or would not be cheaper."""
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

    exact = getattr(mechanism, "table_jacobian", None) if flat.names == ("mechanism.theta",) else None
    jacobian = exact(joint).to(flat.theta.dtype) if exact is not None else jacrev(table_of)(flat.theta)  # [A**N * N, P]
    table = TabularMechanism(mechanism.n_agents, mechanism.n_actions).to(flat.theta.dtype)
    free = FlatFit(
        _Fitted(table, flat.module.learner, None),
        ("mechanism.table",),
        (table.table.shape,),
        table_of(flat.theta).detach(),
    )
    table_hessian, groups = _free_table_hessian(free, actions)
    if groups is None:
        hessian = jacobian.T @ table_hessian @ jacobian
    else:  # H_T is block-diagonal over the agents' groups, and an agent's rows of J read that agent's parameters only
        hessian = torch.zeros(n_params, n_params, dtype=flat.theta.dtype)
        parts = []
        for group in groups:
            rows = jacobian[group]
            columns = rows.ne(0).any(0).nonzero()[:, 0]
            rows = rows[:, columns].double()
            block = table_hessian[group[:, None], group[None, :]].double()
            hessian[columns[:, None], columns[None, :]] += (rows.T @ block @ rows).to(hessian.dtype)
            parts.append((columns, rows, torch.linalg.eigh((block + block.T) / 2)))
    if not mechanism.linear_in_parameters:
        return hessian + _second_order_term(flat, free, actions, table_of), None
    if groups is None:
        return hessian, None
    covered = torch.cat([columns for columns, _, _ in parts])
    if covered.unique().numel() < covered.numel():  # agents share parameters: the blocks are not separate
        return hessian, None
    # float32 noise is removed where it arises, in H_T (J is exact): H = (J^T R_T)(J^T R_T)^T per agent
    top = max(float(values.abs().max()) for _, _, (values, _) in parts)
    roots = [
        (columns, rows.T @ _roots_of(values[None], vectors[None], EVIDENCE_RESOLUTION * top)[0])
        for columns, rows, (values, vectors) in parts
    ]
    return hessian, roots


#: The last free-table Hessian :func:`_table_hessian` made, with what it depends on: ``(table, actions, learner,
#: (Hessian, groups))``. ``model="auto"`` expands two nested families at the same payoff table (the interaction model's
#: fit, and its totals tables started from it), so the second reuses the first's Hessian-vector products.
_LAST_TABLE_HESSIAN: list[tuple[Tensor, Tensor, object, tuple[Tensor, list[Tensor] | None]]] = []
#: Free-table Hessians above this many entries are not kept (a float64 ``[A**N N, A**N N]``: 64 MiB at 2,896 entries).
_KEPT_TABLE_HESSIAN_ENTRIES = 1 << 23


def forget_table_hessians() -> None:
    """Drop the kept free-table Hessian (:func:`~diml_inverse.fit` does at its start and end, so that a fit never
    reuses another fit's, and a benchmark that repeats one fit times it whole)."""
    _LAST_TABLE_HESSIAN.clear()


def _free_table_hessian(free: FlatFit, actions: Tensor) -> tuple[Tensor, list[Tensor] | None]:
    """:func:`_grouped_hessian_and_groups` of the free table ``free``, reused when the last call had the same table
    values (bit for bit), actions and learner."""
    learner = free.module.learner
    for table, seen, seen_learner, kept in _LAST_TABLE_HESSIAN:
        if seen_learner == learner and torch.equal(table, free.theta) and torch.equal(seen, actions):
            return kept
    computed = _grouped_hessian_and_groups(free, actions)
    _LAST_TABLE_HESSIAN.clear()
    if free.theta.numel() ** 2 <= _KEPT_TABLE_HESSIAN_ENTRIES:
        _LAST_TABLE_HESSIAN.append((free.theta.clone(), actions.clone(), learner, computed))
    return computed


def _second_order_term(flat: FlatFit, free: FlatFit, actions: Tensor, table_of: Callable[[Tensor], Tensor]) -> Tensor:
    """``sum_k (dNLL/dT_k) d2T_k/dtheta2`` ``[P, P]``: the chain rule's term for a model that is not linear in its
    parameters. ``P`` Hessian-vector products of the weighted table alone (no unroll)."""
    weights = torch.func.grad(lambda values: -free.call(values, actions).sum())(free.theta)
    eye = torch.eye(flat.theta.numel(), dtype=flat.theta.dtype)
    return hessian_products(lambda theta: weights @ table_of(theta), flat.theta, eye)


def _grouped_hessian(flat: FlatFit, actions: Tensor) -> Tensor:
    """The Hessian ``[P, P]`` of the total NLL, with one Hessian-vector product per parameter of the largest probe
    group (:func:`_probe_groups`) instead of one per parameter, and one more with a random direction to check that
    the groups do not interact and that unread parameters have no curvature (else every parameter is probed)."""
    return _grouped_hessian_and_groups(flat, actions)[0]


def _grouped_hessian_and_groups(flat: FlatFit, actions: Tensor) -> tuple[Tensor, list[Tensor] | None]:
    """:func:`_grouped_hessian` and the groups it is block-diagonal over (``None``: every parameter was probed)."""
    n_params = flat.theta.numel()
    groups = _probe_groups(flat, actions)
    width = max((int(group.numel()) for group in groups or []), default=n_params)
    if groups is not None and width < n_params:
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
            return hessian, groups
    return hessian_columns(flat, actions, torch.eye(n_params, dtype=flat.theta.dtype)), None


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
    _components: list[tuple[Tensor, list[Tensor]]] = dataclasses.field(default_factory=list, repr=False)
    _sums: dict[tuple[str, int], tuple[Tensor, Tensor, Tensor]] = dataclasses.field(default_factory=dict, repr=False)

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

        block = hessian_products(penalty, theta, torch.eye(theta.numel(), dtype=torch.float64))
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
        classes = self._classes(mechanism, precision) if pieces is self._pieces else None
        for piece, (index, root, target) in enumerate(pieces):  # [B, s], [B, s, r], [B, s]
            # H_b = R R^T and P = L L^T: det(I + W W^T) = det(I + W^T W) with W = L^-1 R, and the Newton step's
            # (I + W W^T)^-1 u = u - W (I + W^T W)^-1 W^T u with u = L^-1 t: each prior costs r x r, not s x s
            finish: Callable[[Tensor], Tensor]
            if classes is not None:  # diagonal and constant per class: W^T W and W^T u as sums precomputed per class
                labels, values = classes
                if not bool((values > 0).all()):
                    return -math.inf
                grams, projections = self._class_sums(labels, piece)  # [B, K, r, r], [B, K, r]
                variance = values.reciprocal()  # [K]: the prior variances
                gram = _weighted_sum(grams, variance)  # [B, r, r]
                rhs = _weighted_sum(projections, variance)  # [B, r]
                per_parameter = variance[labels[index]]

                def finish(z: Tensor) -> Tensor:
                    return per_parameter * target - per_parameter * (root @ z[..., None])[..., 0]  # noqa: B023

            elif precision.dim() == 1:  # diagonal: L^-1 = diag(scale)
                diagonal = precision[index]
                if not bool((diagonal > 0).all()):
                    return -math.inf
                scale = diagonal.rsqrt()
                whitened_root, whitened_target = scale[..., None] * root, scale * target
                gram = whitened_root.transpose(-1, -2) @ whitened_root
                rhs = (whitened_root.transpose(-1, -2) @ whitened_target[..., None])[..., 0]

                def finish(z: Tensor) -> Tensor:
                    return scale * (whitened_target - (whitened_root @ z[..., None])[..., 0])  # noqa: B023

            else:  # L block by block over the precision's own components (a random walk per curve)
                found = [self._prior_factor(precision[block[:, None], block[None, :]]) for block in index]
                if any(factor is None for factor in found):
                    return -math.inf
                factors = [factor for factor in found if factor is not None]
                whitened_root = torch.stack([f.solve(r) for f, r in zip(factors, root, strict=True)])
                whitened_target = torch.stack([f.solve(t[:, None])[:, 0] for f, t in zip(factors, target, strict=True)])
                gram = whitened_root.transpose(-1, -2) @ whitened_root
                rhs = (whitened_root.transpose(-1, -2) @ whitened_target[..., None])[..., 0]

                def finish(z: Tensor) -> Tensor:
                    solved = whitened_target - (whitened_root @ z[..., None])[..., 0]  # noqa: B023
                    return torch.stack(
                        [f.solve(x[:, None], transpose=True)[:, 0] for f, x in zip(factors, solved, strict=True)]  # noqa: B023
                    )

            projected = rhs.new_zeros(rhs.shape)
            if root.shape[-1]:
                gram.diagonal(dim1=-2, dim2=-1).add_(1.0)
                gram_factor = torch.linalg.cholesky(gram)  # I + W^T W is positive definite
                log_det += float(gram_factor.diagonal(dim1=-2, dim2=-1).log().sum())
                projected = torch.cholesky_solve(rhs[..., None], gram_factor)[..., 0]
            block = finish(projected)
            if refit:
                step = block - theta_hat[index]
                curvature += float((root.transpose(-1, -2) @ step[..., None]).square().sum())
            theta[index] = block
        if not refit:
            theta = theta_hat
        nll = self.nll + float(self.gradient @ (theta - theta_hat)) + 0.5 * curvature
        penalty = 0.5 * float(theta @ (precision * theta if precision.dim() == 1 else precision @ theta))
        return -nll - penalty - log_det

    def _classes(self, mechanism: Mechanism, precision: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(labels [P], value per label [K])`` when ``mechanism`` labels its parameters by prior class
        (``Mechanism.prior_classes``) and ``precision`` is diagonal and constant within each label; else ``None``."""
        labels = mechanism.prior_classes() if precision.dim() == 1 else None
        if labels is None or labels.shape != precision.shape:
            return None
        labels = labels.cpu().long()
        values = torch.zeros(int(labels.max()) + 1, dtype=precision.dtype).scatter_(0, labels, precision)
        return (labels, values) if torch.equal(values[labels], precision) else None

    def _class_sums(self, labels: Tensor, piece: int) -> tuple[Tensor, Tensor]:
        """For piece ``piece`` of :attr:`_pieces`: per label ``k``, ``R_k^T R_k`` ``[B, K, r, r]`` and
        ``R_k^T t_k`` ``[B, K, r]`` over the parameters of that label (computed once per labelling)."""
        key = ("classes", piece)
        cached = self._sums.get(key)
        if cached is not None and torch.equal(cached[0], labels):
            return cached[1], cached[2]
        index, root, target = self._pieces[piece]
        n_classes, (size, _, rank) = int(labels.max()) + 1, root.shape
        grams = root.new_zeros(size, n_classes, rank, rank)
        projections = root.new_zeros(size, n_classes, rank)
        for b in range(size):
            for k in range(n_classes):
                rows = labels[index[b]] == k
                grams[b, k] = root[b, rows].T @ root[b, rows]
                projections[b, k] = root[b, rows].T @ target[b, rows]
        self._sums[key] = (labels, grams, projections)
        return grams, projections

    def _prior_factor(self, precision: Tensor) -> _ComponentFactor | None:
        """The Cholesky factor of a dense precision block over its own connected components (found once per pattern:
        the family's prior has the same pattern at every argument); ``None`` when it is not positive definite."""
        pattern = precision != 0
        components = next((found for known, found in self._components if torch.equal(known, pattern)), None)
        if components is None:
            components = _batches(connected_components(pattern))
            self._components.append((pattern, components))
        parts = []
        for local in components:
            factor, info = torch.linalg.cholesky_ex(precision[local[:, :, None], local[:, None, :]])
            if bool(info.any()):
                return None
            parts.append((local, factor))
        return _ComponentFactor(parts)

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


@dataclass(frozen=True)
class _ComponentFactor:
    """A block-diagonal Cholesky factor ``L`` (lower), as ``(local indices [C, m], factors [C, m, m])`` per size."""

    parts: list[tuple[Tensor, Tensor]]

    def solve(self, x: Tensor, transpose: bool = False) -> Tensor:
        """``L^-1 x`` (or ``L^-T x``) for ``x`` ``[s, k]``."""
        out = torch.empty_like(x)
        for local, factor in self.parts:
            out[local] = torch.linalg.solve_triangular(
                factor.transpose(-1, -2) if transpose else factor, x[local], upper=transpose
            )
        return out


def _weighted_sum(per_class: Tensor, weights: Tensor) -> Tensor:
    """``sum_k weights[k] * per_class[:, k]`` over the class axis 1, one in-place pass per class: an ``einsum`` over
    ``[B, K, r, r]`` first copies it with the class axis last, which costs several times as much."""
    out = per_class[:, 0] * weights[0]
    for k in range(1, per_class.shape[1]):
        out.add_(per_class[:, k], alpha=float(weights[k]))
    return out


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
    raw, factors = _hessian(single, actions)
    raw = raw.double()
    gradient, value = torch.func.grad_and_value(lambda theta: -flat.call(theta, actions).sum())(flat.theta)
    mechanism = torch.cat(
        [
            torch.full((math.prod(shape),), name.startswith("mechanism."))
            for name, shape in zip(flat.names, flat.shapes, strict=True)
        ]
    )
    expansion = EvidenceExpansion(flat, float(value), gradient.detach(), raw, mechanism, (torch.arange(len(raw)),))
    # the prior's coupling (a dense precision; a diagonal one couples nothing); with learner quantities there is no
    # evidence to take, and the Hessian's pattern alone makes the blocks
    precision = expansion._mechanism_precision(result.mechanism) if bool(mechanism.all()) else None
    coupling = precision if precision is not None and precision.dim() == 2 else None
    if factors is not None:
        blocks = [columns for columns, _ in factors]
        blocks += [index[None] for index in _uncovered(len(raw), blocks)]
        if coupling is not None and _couples(coupling, tuple(blocks)):
            factors = None
    if factors is not None:
        roots = _stacked_roots([*factors, *((block, raw.new_zeros(1, 0)) for block in blocks[len(factors) :])])
    else:
        pattern = raw != 0 if coupling is None else (raw != 0) | (coupling != 0)
        blocks = connected_components(pattern)
        decompositions = []
        for index in _batches(blocks):
            hessian = raw[index[:, :, None], index[:, None, :]]
            decompositions.append((index, *torch.linalg.eigh((hessian + hessian.transpose(-1, -2)) / 2)))
        top = max(float(values.abs().max()) for _, values, _ in decompositions)
        # eigenvalues below float32's resolution are zero (gauge and unvisited directions, where a nearly flat prior
        # must cancel exactly); negative ones come from the exploration mixture where a policy saturates
        roots = tuple(
            (index, _roots_of(values, vectors, EVIDENCE_RESOLUTION * top)) for index, values, vectors in decompositions
        )
    cleaned = torch.zeros_like(raw)
    for index, root in roots:
        cleaned[index[:, :, None], index[:, None, :]] = root @ root.transpose(-1, -2)
    return dataclasses.replace(expansion, hessian=cleaned, blocks=tuple(blocks), roots=roots)


def _uncovered(size: int, blocks: list[Tensor]) -> Tensor:
    """The indices in ``range(size)`` that none of ``blocks`` holds."""
    covered = torch.zeros(size, dtype=torch.bool)
    for block in blocks:
        covered[block] = True
    return (~covered).nonzero()[:, 0]


def _stacked_roots(factors: list[tuple[Tensor, Tensor]]) -> tuple[tuple[Tensor, Tensor], ...]:
    """Blocks ``(indices [s], R [s, r])`` grouped by size as ``(indices [B, s], R [B, s, r_max])`` (zero columns pad
    a smaller rank: they add nothing to ``R R^T``)."""
    stacked = []
    for group in _by_size(factors, lambda factor: int(factor[0].numel())):
        rank = max(int(root.shape[1]) for _, root in group)
        roots = [torch.nn.functional.pad(root.double(), (0, rank - root.shape[1])) for _, root in group]
        stacked.append((torch.stack([index for index, _ in group]), torch.stack(roots)))
    return tuple(stacked)


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
