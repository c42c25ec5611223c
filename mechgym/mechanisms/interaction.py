"""Interaction (ANOVA) mechanism: own-action main effects plus interactions with the others, order by order.

A small game's payoff table is written as a sum over the subsets ``S`` of the other agents,

    u_i(a) = sum over S subset of others with |S| <= max_order of  theta_{i,S}[a_i, a_S],

so ``S = {}`` is agent ``i``'s main effect of its own action, ``|S| = 1`` its pairwise interactions (a polymatrix
game is exactly order 1), and ``|S| = N - 1`` a free residual table (with every order present, the family holds
every game). Its prior (:meth:`InteractionMechanism.prior_penalty`) is Gaussian, with scale
``prior_scale * prior_decay ** |S|``: higher-order interactions are shrunk harder, so the data decide how much
of the table is structure shared across joint actions. This is the ANOVA kernel of Gaussian-process
regression over discrete inputs, written as explicit parameters so that the fit stays a sum of gathers.

The payoffs are linear in the parameters, so with logit-Q's linear filter (paper Eq. 2) the negative
log-likelihood plus the penalty is convex in them (up to the exploration mixture): a full-batch quasi-Newton
fit (``optimizer="lbfgs"``) reaches its optimum.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from mechgym.errors import ConfigurationError
from mechgym.mechanisms.base import Mechanism
from mechgym.mechanisms.tabular import MAX_TABULAR_JOINT_ACTIONS
from mechgym.validation import check_int, check_positive

__all__ = ["InteractionMechanism", "interaction_parameter_count"]


def interaction_parameter_count(n_agents: int, n_actions: int, max_order: int | None = None) -> int:
    """Parameters of :class:`InteractionMechanism`: ``N * sum_k C(N-1, k) * A**(k+1)`` over orders ``k``."""
    top = n_agents - 1 if max_order is None else min(max_order, n_agents - 1)
    return n_agents * sum(math.comb(n_agents - 1, k) * n_actions ** (k + 1) for k in range(top + 1))


class InteractionMechanism(Mechanism):
    """``u_i(a) = sum_{S subset of others, |S| <= max_order} theta_{i,S}[a_i, a_S]`` (see the module docstring).

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        max_order: Highest interaction order ``|S|`` (``None``: ``N - 1``, every game is representable).
        prior_scale: Prior standard deviation of the main effects (order 0), in payoff units.
        prior_decay: Factor of the prior standard deviation per order: order ``k`` has
            ``prior_scale * prior_decay ** k``.
        seed: Unused (the parameters start at zero); accepted so that every model family takes a seed.

    Raises:
        ConfigurationError: a game too large for a table, a ``max_order`` out of ``[0, N - 1]``, or a prior
            scale or decay that is not a finite positive number.
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
        self.check_parameter_memory(interaction_parameter_count(n, a, self.max_order))
        strides, offsets, owners, orders = [], [], [], []
        start = 0
        for agent in range(n):
            others = [j for j in range(n) if j != agent]
            for order in range(self.max_order + 1):
                for subset in itertools.combinations(others, order):
                    stride = torch.zeros(n, dtype=torch.long)
                    for position, member in enumerate((agent, *subset)):
                        stride[member] = a ** (order - position)
                    strides.append(stride)
                    offsets.append(start)
                    owners.append(agent)
                    size = a ** (order + 1)
                    orders.append(torch.full((size,), order))
                    start += size
        self.register_buffer("_strides", torch.stack(strides), persistent=False)  # [C, N]
        self.register_buffer("_offsets", torch.tensor(offsets), persistent=False)  # [C]
        self.register_buffer("_owners", torch.nn.functional.one_hot(torch.tensor(owners), n).float(), persistent=False)
        order_of = torch.cat(orders)
        self.register_buffer("_orders", order_of, persistent=False)  # [P]
        precision = (self.prior_scale * self.prior_decay ** order_of.double()) ** -2
        self.register_buffer("_precision", precision.float(), persistent=False)  # [P]
        self.theta = nn.Parameter(torch.zeros(start))

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "max_order": self.max_order,
            "prior_scale": self.prior_scale,
            "prior_decay": self.prior_decay,
        }

    def forward(self, joint_actions: Tensor) -> Tensor:
        index = joint_actions @ self._strides.T + self._offsets  # [..., C]
        return self.theta[index] @ self._owners.to(self.theta.dtype)  # [..., N]

    def _use_table(self, joint_actions: Tensor) -> bool:
        return True

    def prior_penalty(self) -> Tensor:
        """The negative log prior up to a constant: ``0.5 * sum_k theta_k**2 / sigma_k**2``."""
        return 0.5 * (self._precision.to(self.theta.dtype) * self.theta.square()).sum()

    def prior_classes(self) -> Tensor:
        """``[P]``: each parameter's interaction order (its prior precision depends on nothing else)."""
        return self._orders

    def prior_precision(self) -> Tensor:
        """``[P]``: ``1 / sigma_k**2``, the diagonal of the prior's precision (independent parameters)."""
        return self._precision.to(self.theta.dtype)
