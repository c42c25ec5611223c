"""Aggregate count mechanism: the additive count model plus free curves in a weighted total of the others' actions.

    u_i = main[a_i] + sum_b curves[a_i, b, c_-i[b]] + totals[a_i, s_-i],    s_-i = sum_b v[b] c_-i[b],

with ``v`` the actions' values (non-negative integers; by default ``v[b] = b``, the action's index, as when actions
are contribution levels or quantities). The ``totals`` curves make the model represent *aggregative* games exactly:
payoffs that depend on one's own action and a total of the others' actions (a threshold on total contribution, a
price falling in total quantity, a contest's total effort), which a sum of one-count curves can only approximate.
The additive curves stay, so the model nests :class:`~mechgym.mechanisms.AdditiveCountMechanism` (a game whose
payoff depends on the counts themselves, such as congestion). Where both describe the same payoff (two actions, so
the total is one count), the prior shares it between them.

The prior extends the additive model's (:meth:`AggregateCountMechanism.prior_penalty`): each totals curve has the
same random walk along the total, the same second-difference term and level prior, with every standard deviation
times ``prior_total``. Payoffs are linear in the parameters, so the fit is convex for logit-Q.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mechgym.errors import ConfigurationError
from mechgym.mechanisms.additive_counts import AdditiveCountMechanism
from mechgym.validation import check_positive

__all__ = ["AggregateCountMechanism", "aggregate_parameter_count"]


def aggregate_parameter_count(n_agents: int, n_actions: int, largest_value: int | None = None) -> int:
    """Parameters of an :class:`AggregateCountMechanism`: ``A`` main effects, ``A * A * N`` count curves and ``A``
    totals curves of ``largest_value * (N - 1) + 1`` values (``largest_value`` of the action values; ``A - 1`` by
    default)."""
    largest = n_actions - 1 if largest_value is None else largest_value
    return n_actions + n_actions * n_actions * n_agents + n_actions * (largest * (n_agents - 1) + 1)


class AggregateCountMechanism(AdditiveCountMechanism):
    """``u_i = main[a_i] + sum_b curves[a_i, b, c_-i[b]] + totals[a_i, sum_b v[b] c_-i[b]]`` (see the module
    docstring).

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        prior_step: Prior standard deviation of a curve's change from one count (or total) to the next.
        prior_scale: Prior standard deviation of the main effects and of the curves' values.
        prior_cross: Factor on the additive cross curves' standard deviations (see ``AdditiveCountMechanism``).
        prior_curvature: Prior standard deviation of a curve's second difference; ``None`` for none.
        prior_total: Factor on every standard deviation of the totals curves (below 1 shrinks them towards zero,
            above 1 lets them move more than the additive curves).
        action_values: The value ``v[b] >= 0`` that action ``b`` adds to the total, whole numbers (``A`` of them);
            ``None`` for ``0, 1, ..., A - 1``.
        seed: Unused (the parameters start at zero); accepted so that every model family takes a seed.

    Raises:
        ConfigurationError: a prior scale that is not a finite positive number; action values that are not ``A``
            non-negative whole numbers with one above zero; a game whose curves cannot fit in memory.
    """

    family = "aggregate_counts"
    linear_in_parameters = True
    values: Tensor

    def __init__(
        self,
        n_agents: int = 40,
        n_actions: int = 10,
        prior_step: float = 0.1,
        prior_scale: float = 3.0,
        prior_cross: float = 1.0,
        prior_curvature: float | None = None,
        prior_total: float = 1.0,
        action_values: Sequence[int] | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(n_agents, n_actions, prior_step, prior_scale, prior_cross, prior_curvature, seed)
        self.prior_total = check_positive(prior_total, "prior_total")
        values = list(range(self.n_actions)) if action_values is None else list(action_values)
        if (
            len(values) != self.n_actions
            or not all(isinstance(v, int | float) and float(v) == int(v) and v >= 0 for v in values)
            or max(values) <= 0
        ):
            raise ConfigurationError(
                f"action_values must be {self.n_actions} non-negative whole numbers, one of them above zero "
                f"(the value each action adds to the total); got {action_values!r}"
            )
        self.action_values = [int(v) for v in values]
        self.n_totals = max(self.action_values) * (self.n_agents - 1) + 1  # totals 0 .. max(v) (N - 1)
        self.check_parameter_memory(aggregate_parameter_count(self.n_agents, self.n_actions, max(self.action_values)))
        self.register_buffer("values", torch.tensor(self.action_values, dtype=torch.float32), persistent=False)
        self.totals = nn.Parameter(torch.zeros(self.n_actions, self.n_totals))  # [own action, total of the others]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "prior_total": self.prior_total, "action_values": list(self.action_values)}

    def _total_index(self, other_counts: Tensor) -> Tensor:
        totals = (other_counts * self.values.to(other_counts.dtype)).sum(-1)
        return totals.round().long().clamp_(0, self.n_totals - 1)

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        index = self._total_index(other_counts)
        shape = torch.broadcast_shapes(actions.shape, index.shape)
        return (
            super().payoff_from_counts(actions, other_counts) + self.totals[actions.expand(shape), index.expand(shape)]
        )

    def counterfactual_rows(self, counts: Tensor) -> Tensor:
        """The additive rows plus ``totals[a, S - v[o]]``, with ``S = sum_b v[b] c[b]`` over all agents: an agent
        that played ``o`` sees the others' total ``S - v[o]``."""
        rows = super().counterfactual_rows(counts)  # [..., A(o), A(a)]
        total = (counts * self.values.to(counts.dtype)).sum(-1, keepdim=True) - self.values.to(counts.dtype)
        index = total.round().long().clamp_(0, self.n_totals - 1)  # [..., A(o)]
        own = torch.arange(self.n_actions, device=counts.device)
        return rows + self.totals[own, index[..., None]]  # totals[a, index[o]] at [..., o, a]

    def prior_penalty(self) -> Tensor:
        """The additive model's penalty plus the same random walk, second differences and levels on ``totals``,
        every standard deviation times ``prior_total``."""
        return super().prior_penalty() + 0.5 * self.curve_penalty(self.totals) / self.prior_total**2

    def prior_precision(self) -> Tensor:
        """``[P, P]`` over ``(main, curves, totals)`` flattened: the additive model's, then one block per totals
        curve, ``(D1^T D1 / prior_step**2 + D2^T D2 / prior_curvature**2 + I / prior_scale**2) / prior_total**2``."""
        curve = self.curve_precision(self.n_totals) / self.prior_total**2
        return torch.block_diag(super().prior_precision(), *([curve] * self.n_actions))
