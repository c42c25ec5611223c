"""Interaction (ANOVA) mechanism: own-action main effects plus interactions with the others, order by order.

A small game's payoff table is written as a sum over the subsets ``S`` of the other agents,

    u_i(a) = sum over S subset of others with |S| <= max_order of  theta_{i,S}[a_i, a_S],

so ``S = {}`` is agent ``i``'s main effect of its own action, ``|S| = 1`` its pairwise interactions (a polymatrix
game is exactly order 1), and ``|S| = N - 1`` a free residual table (with every order present, the family holds
every game). Its prior (:meth:`InteractionMechanism.prior_penalty`) is Gaussian, with scale
``prior_scale * prior_decay ** |S|``: higher-order interactions are shrunk harder, so the data decide how much
of the table is structure shared across joint actions. This is the ANOVA kernel of Gaussian-process
regression over discrete inputs, written as explicit parameters so that the fit stays a sum of gathers.

With ``prior_total`` set, each agent also has a *totals table* ``tau_i[a_i, s_-i]`` over its own action and the
others' total ``s_-i = sum_{j != i} a_j`` (actions read as levels ``0 .. A - 1``), with prior scale
``prior_scale * prior_total``. It pools the joint actions that have the same total, which makes *aggregative*
games (a threshold on total contribution, a price in total quantity) cheap to represent where the ANOVA terms
would need every high order, and it nests the model without it (a small ``prior_total`` shrinks it away).

The payoffs are linear in the parameters, so with logit-Q's linear filter (paper Eq. 2) the negative
log-likelihood plus the penalty is convex in them (up to the exploration mixture): a full-batch quasi-Newton
fit (``optimizer="lbfgs"``) reaches its optimum.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from mechgym.errors import ConfigurationError
from mechgym.mechanisms.base import Mechanism
from mechgym.mechanisms.tabular import MAX_TABULAR_JOINT_ACTIONS
from mechgym.validation import check_int, check_positive

__all__ = ["InteractionMechanism", "TotalsInteractionMechanism", "interaction_parameter_count", "n_totals"]


def interaction_parameter_count(
    n_agents: int, n_actions: int, max_order: int | None = None, totals: bool = False
) -> int:
    """Parameters of :class:`InteractionMechanism`: ``N * sum_k C(N-1, k) * A**(k+1)`` over orders ``k``, plus
    ``N * A * ((N - 1)(A - 1) + 1)`` with the totals tables (``totals``)."""
    top = n_agents - 1 if max_order is None else min(max_order, n_agents - 1)
    count = n_agents * sum(math.comb(n_agents - 1, k) * n_actions ** (k + 1) for k in range(top + 1))
    return count + (n_agents * n_actions * n_totals(n_agents, n_actions) if totals else 0)


def n_totals(n_agents: int, n_actions: int) -> int:
    """The values ``0 .. (N - 1)(A - 1)`` of the others' total ``s_-i = sum_{j != i} a_j``."""
    return (n_agents - 1) * (n_actions - 1) + 1


@functools.lru_cache(maxsize=64)
def _layout(n: int, a: int, max_order: int, totals: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The index layout of an interaction model, on the CPU: ``(strides [C, N], offsets [C], owners [C, N] one-hot,
    orders [P])`` over its ``C`` terms (each agent's subsets of the others up to ``max_order``, then its totals
    table) and ``P`` parameters (``max_order + 1`` marks the totals tables). Cached: the prior search builds the
    same model many times (the evidence's surrogate, one model per prior tried)."""
    cpu = torch.device("cpu")
    strides, offsets, owners, orders = [], [], [], []
    start = 0
    for agent in range(n):
        others = [j for j in range(n) if j != agent]
        for order in range(max_order + 1):
            for subset in itertools.combinations(others, order):
                stride = torch.zeros(n, dtype=torch.long, device=cpu)
                for position, member in enumerate((agent, *subset)):
                    stride[member] = a ** (order - position)
                strides.append(stride)
                offsets.append(start)
                owners.append(agent)
                size = a ** (order + 1)
                orders.append(torch.full((size,), order, device=cpu))
                start += size
        if totals:  # index a_i * n_totals + sum_{j != i} a_j
            stride = torch.ones(n, dtype=torch.long, device=cpu)
            stride[agent] = n_totals(n, a)
            strides.append(stride)
            offsets.append(start)
            owners.append(agent)
            size = a * n_totals(n, a)
            orders.append(torch.full((size,), max_order + 1, device=cpu))
            start += size
    one_hot = torch.nn.functional.one_hot(torch.tensor(owners, device=cpu), n).float()
    return torch.stack(strides), torch.tensor(offsets, device=cpu), one_hot, torch.cat(orders)


class InteractionMechanism(Mechanism):
    """``u_i(a) = sum_{S subset of others, |S| <= max_order} theta_{i,S}[a_i, a_S]`` (see the module docstring).

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        max_order: Highest interaction order ``|S|`` (``None``: ``N - 1``, every game is representable).
        prior_scale: Prior standard deviation of the main effects (order 0), in payoff units.
        prior_decay: Factor of the prior standard deviation per order: order ``k`` has
            ``prior_scale * prior_decay ** k``.
        prior_total: Factor of the prior standard deviation of the totals tables, ``prior_scale * prior_total``;
            ``None`` (the default): no totals tables. Ignored with fewer than three agents (there the others'
            total is one agent's action, which the pairwise terms already hold).
        seed: Unused (the parameters start at zero); accepted so that every model family takes a seed.

    Raises:
        ConfigurationError: a game too large for a table, a ``max_order`` out of ``[0, N - 1]``, or a prior
            scale, decay or total that is not a finite positive number.
    """

    family = "interaction"
    linear_in_parameters = True
    max_table_size = MAX_TABULAR_JOINT_ACTIONS
    _strides: Tensor
    _offsets: Tensor
    _owners: Tensor
    _precision: Tensor
    _orders: Tensor

    def __init__(
        self,
        n_agents: int = 3,
        n_actions: int = 3,
        max_order: int | None = None,
        prior_scale: float = 1.0,
        prior_decay: float = 0.5,
        prior_total: float | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(n_agents, n_actions)
        if self.n_joint_actions > MAX_TABULAR_JOINT_ACTIONS:
            raise ConfigurationError(
                f"an interaction mechanism over {n_actions}**{n_agents} joint actions is too large "
                f"(limit {MAX_TABULAR_JOINT_ACTIONS}); use a neural or anonymous model instead"
            )
        n, a = self.n_agents, self.n_actions
        self.max_order = n - 1 if max_order is None else check_int(max_order, "max_order", low=0, high=n)
        self.prior_scale = check_positive(prior_scale, "prior_scale")
        self.prior_decay = check_positive(prior_decay, "prior_decay")
        self.prior_total = None if prior_total is None else check_positive(prior_total, "prior_total")
        totals = self.prior_total is not None and n >= 3
        self.check_parameter_memory(interaction_parameter_count(n, a, self.max_order, totals))
        strides, offsets, owners, order_of = (
            tensor.to(torch.empty(()).device, copy=True) for tensor in _layout(n, a, self.max_order, totals)
        )  # copies on the default device (``meta`` for a skeleton): the cached tensors are never handed out
        self.register_buffer("_strides", strides, persistent=False)  # [C, N]
        self.register_buffer("_offsets", offsets, persistent=False)  # [C]
        self.register_buffer("_owners", owners, persistent=False)  # [C, N]
        self.register_buffer("_orders", order_of, persistent=False)  # [P]
        start = order_of.shape[0]
        scale = self.prior_scale * self.prior_decay ** order_of.double()
        if self.prior_total is not None and totals:
            scale[order_of == self.max_order + 1] = self.prior_scale * self.prior_total
        precision = scale**-2
        self.register_buffer("_precision", precision.float(), persistent=False)  # [P]
        self.theta = nn.Parameter(torch.zeros(start))

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "max_order": self.max_order,
            "prior_scale": self.prior_scale,
            "prior_decay": self.prior_decay,
            "prior_total": self.prior_total,
        }

    def forward(self, joint_actions: Tensor) -> Tensor:
        return self.theta[self._term_index(joint_actions)] @ self._owners.to(self.theta.dtype)  # [..., N]

    def _term_index(self, joint_actions: Tensor) -> Tensor:
        """``[..., C]``: the entry of ``theta`` each term reads at each joint action."""
        return joint_actions @ self._strides.T + self._offsets

    def _use_table(self, joint_actions: Tensor) -> bool:
        return True

    def table_jacobian(self, joint_actions: Tensor) -> Tensor:
        """``d payoffs / d theta`` ``[J * N, P]`` at the joint actions ``[J, N]``, with the payoffs flattened row by
        row (``forward(joint_actions).reshape(-1)``): each payoff is a sum of entries of ``theta``, so the Jacobian
        is a 0/1 count of the entries each payoff reads, the same at every ``theta``."""
        index = self._term_index(joint_actions)  # [J, C]
        agent = self._owners.argmax(-1)  # [C]: each term belongs to one agent
        rows = torch.arange(joint_actions.shape[0], device=index.device)[:, None] * self.n_agents + agent
        jacobian = torch.zeros(
            joint_actions.shape[0] * self.n_agents, self.theta.numel(), dtype=self.theta.dtype, device=index.device
        )
        return jacobian.index_put_((rows.reshape(-1), index.reshape(-1)), torch.ones((), dtype=jacobian.dtype), True)

    def prior_penalty(self) -> Tensor:
        """The negative log prior up to a constant: ``0.5 * sum_k theta_k**2 / sigma_k**2``."""
        return 0.5 * (self._precision.to(self.theta.dtype) * self.theta.square()).sum()

    def prior_classes(self) -> Tensor:
        """``[P]``: each parameter's interaction order, ``max_order + 1`` for the totals tables (its prior precision
        depends on nothing else)."""
        return self._orders

    def prior_precision(self) -> Tensor:
        """``[P]``: ``1 / sigma_k**2``, the diagonal of the prior's precision (independent parameters)."""
        return self._precision.to(self.theta.dtype)


class TotalsInteractionMechanism(InteractionMechanism):
    """The interaction model with its totals tables on (``prior_total`` a number; the model name
    ``"interaction_totals"``): ``u_i(a) = sum_S theta_{i,S}[a_i, a_S] + tau_i[a_i, sum_{j != i} a_j]``.

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        max_order: Highest interaction order ``|S|`` (``None``: ``N - 1``).
        prior_scale: Prior standard deviation of the main effects.
        prior_decay: Factor of the prior standard deviation per order.
        prior_total: Factor of the totals tables' prior standard deviation, ``prior_scale * prior_total``.
        seed: Unused (the parameters start at zero).

    Raises:
        ConfigurationError: as :class:`InteractionMechanism`.
    """

    family = "interaction_totals"

    def __init__(
        self,
        n_agents: int = 3,
        n_actions: int = 3,
        max_order: int | None = None,
        prior_scale: float = 1.0,
        prior_decay: float = 0.5,
        prior_total: float = 1.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            n_agents, n_actions, max_order, prior_scale, prior_decay, check_positive(prior_total, "prior_total"), seed
        )

    def starting_from(self, base: InteractionMechanism) -> TotalsInteractionMechanism | None:
        """This model with ``base``'s prior scale and decay and its fitted ANOVA parameters, the totals tables at
        zero: the same payoffs as ``base``, where a fit of this model can start. ``None`` when the two do not have
        the same agents, actions and orders."""
        if (base.n_agents, base.n_actions, base.max_order) != (self.n_agents, self.n_actions, self.max_order):
            return None
        started = TotalsInteractionMechanism(
            **{**self.config(), "prior_scale": base.prior_scale, "prior_decay": base.prior_decay}
        )
        anova = started.prior_classes() <= started.max_order
        if int(anova.sum()) != base.theta.numel():  # base has its own totals tables
            return None
        with torch.no_grad():
            started.theta[anova] = base.theta.detach().to(started.theta)
        return started
