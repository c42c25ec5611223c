"""Additive count mechanism: an anonymous payoff as a sum of free curves in the others' counts of each action.

    u_i = main[a_i] + sum_b curves[a_i, b, c_-i[b]],

with ``c_-i[b]`` the number of other agents on action ``b`` (``0 .. N - 1``). Each curve is a free table over
the counts, so a payoff that changes abruptly (a bar that is fun below its capacity, a threshold) or steeply (a
quartic latency) is representable exactly when it depends on one count, and approximated additively otherwise.
The prior (:meth:`AdditiveCountMechanism.prior_penalty`) is a Gaussian random walk along each curve (step
``prior_step``) with a weak Gaussian prior on the levels (``prior_scale``): counts the data never visit are
filled in from their neighbours, and the curves' common levels, which behaviour does not identify, are pinned.
With ``prior_curvature``, the prior also penalises a curve's second differences (the change of its step from one
count to the next, standard deviation ``prior_curvature``): an integrated random walk, as in P-splines, which fills
unvisited counts by continuing the neighbouring slope instead of holding the last value (a latency that keeps
rising past the counts the data visit). ``None`` leaves the second differences free. The *cross* curves
(``b != a_i``: how the others' use of another action moves one's payoff) have every standard deviation times
``prior_cross``; below 1 it says "one's payoff mostly depends on how many share one's action",
as in congestion, and shrinks the ``A * (A - 1)`` cross curves that such games leave unidentified.
Payoffs are linear in the parameters: the fit is convex for logit-Q (see :mod:`mechgym.mechanisms.interaction`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mechgym.mechanisms.base import AnonymousMechanism
from mechgym.validation import check_positive

__all__ = ["AdditiveCountMechanism"]


class AdditiveCountMechanism(AnonymousMechanism):
    """``u_i = main[a_i] + sum_b curves[a_i, b, c_-i[b]]`` (see the module docstring).

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        prior_step: Prior standard deviation of a curve's change from one count to the next (payoff units).
        prior_scale: Prior standard deviation of the main effects and of the curves' values.
        prior_cross: Factor on the standard deviations for the cross curves (counted action != own action).
        prior_curvature: Prior standard deviation of a curve's second difference (payoff units); ``None`` for no
            second-difference term (a first-order random walk only).
        seed: Unused (the parameters start at zero); accepted so that every model family takes a seed.

    Raises:
        ConfigurationError: a prior scale that is not a finite positive number; a game whose curves
            (``A * A * N`` values) cannot fit in memory.
    """

    family = "additive_counts"
    linear_in_parameters = True

    def __init__(
        self,
        n_agents: int = 40,
        n_actions: int = 10,
        prior_step: float = 0.1,
        prior_scale: float = 3.0,
        prior_cross: float = 1.0,
        prior_curvature: float | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(n_agents, n_actions)
        self.prior_step = check_positive(prior_step, "prior_step")
        self.prior_scale = check_positive(prior_scale, "prior_scale")
        self.prior_cross = check_positive(prior_cross, "prior_cross")
        self.prior_curvature = None if prior_curvature is None else check_positive(prior_curvature, "prior_curvature")
        a, n = self.n_actions, self.n_agents
        self.check_parameter_memory(a + a * a * n)
        self.main = nn.Parameter(torch.zeros(a))
        self.curves = nn.Parameter(torch.zeros(a, a, n))  # [own action, counted action, count of the others]

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "prior_step": self.prior_step,
            "prior_scale": self.prior_scale,
            "prior_cross": self.prior_cross,
            "prior_curvature": self.prior_curvature,
        }

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        index = other_counts.round().long().clamp_(0, self.n_agents - 1)  # [..., A]
        shape = torch.broadcast_shapes(actions.shape, index.shape[:-1])
        own = actions.expand(shape)
        curves = self.curves[own]  # [..., A(b), N]
        values = curves.gather(-1, index.expand(*shape, self.n_actions)[..., None]).squeeze(-1)  # [..., A(b)]
        return self.main[own] + values.sum(-1)

    def counterfactual_rows(self, counts: Tensor) -> Tensor:
        """``F[..., o, a] = main[a] + sum_b curves[a, b, c[b]] + curves[a, o, c[o] - 1] - curves[a, o, c[o]]``.

        An agent that played ``o`` sees the others' counts ``c - onehot(o)``: only its own action's curve moves,
        so a round costs ``A x A`` lookups at two counts instead of ``A x A x A``.
        """
        a = self.n_actions
        index = counts.round().long()
        own, counted = torch.arange(a, device=counts.device)[:, None], torch.arange(a, device=counts.device)
        at_count = self.curves[own, counted, index.clamp(0, self.n_agents - 1)[..., None, :]]  # [..., A(a), A(b)]
        below = self.curves[own, counted, (index - 1).clamp(0, self.n_agents - 1)[..., None, :]]
        totals = self.main + at_count.sum(-1)  # [..., A(a)]
        return totals[..., None, :] + (below - at_count).transpose(-1, -2)  # [..., A(o), A(a)]

    def prior_penalty(self) -> Tensor:
        """``0.5 * (|w diff(curves)|**2 / prior_step**2 + |w diff(curves, 2)|**2 / prior_curvature**2
        + (|main|**2 + |w curves|**2) / prior_scale**2)``, the second term only with a ``prior_curvature``.

        ``w`` is 1 on the own curves (``curves[a, a]``) and ``1 / prior_cross`` on the cross curves.
        """
        own = torch.eye(self.n_actions, dtype=torch.bool, device=self.curves.device)[..., None]  # [A, A, 1]
        weight = torch.where(own, 1.0, self.prior_cross**-2).to(self.curves.dtype)
        return 0.5 * (self.curve_penalty(self.curves, weight) + self.main.square().sum() / self.prior_scale**2)

    def curve_penalty(self, curves: Tensor, weight: Tensor | float = 1.0) -> Tensor:
        """``sum w**2 (diff(c)**2 / prior_step**2 + diff(c, 2)**2 / prior_curvature**2 + c**2 / prior_scale**2)`` over
        the curves ``c`` along the last axis (``weight`` is ``w**2``, broadcast; no second-difference term without a
        ``prior_curvature``): twice the prior penalty of curves whose precision is :meth:`curve_precision`."""
        terms = (curves.diff(dim=-1).square() * weight).sum() / self.prior_step**2
        terms = terms + (curves.square() * weight).sum() / self.prior_scale**2
        if self.prior_curvature is not None:
            terms = terms + (curves.diff(n=2, dim=-1).square() * weight).sum() / self.prior_curvature**2
        return terms

    def prior_precision(self) -> Tensor:
        """``[P, P]`` over ``(main, curves)`` flattened: ``I / prior_scale**2`` on the main effects and, on each curve,
        ``w**2 (D1^T D1 / prior_step**2 + D2^T D2 / prior_curvature**2 + I / prior_scale**2)``, with ``D1`` and
        ``D2`` the first- and second-difference matrices (tri- and pentadiagonal products; no ``D2`` term without a
        ``prior_curvature``).
        """
        a = self.n_actions
        dtype, device = self.curves.dtype, self.curves.device
        curve = self.curve_precision(self.n_agents)
        own = torch.eye(a, dtype=torch.bool, device=device).reshape(-1)
        weights = torch.where(own, 1.0, self.prior_cross**-2).to(dtype)  # [A * A]
        blocks = [torch.eye(a, dtype=dtype, device=device) / self.prior_scale**2, *(w * curve for w in weights)]
        return torch.block_diag(*blocks)

    def curve_precision(self, length: int) -> Tensor:
        """``D1^T D1 / prior_step**2 + D2^T D2 / prior_curvature**2 + I / prior_scale**2`` ``[length, length]``: the
        prior precision of one curve of ``length`` values (no ``D2`` term without a ``prior_curvature``)."""
        identity = torch.eye(length, dtype=self.curves.dtype, device=self.curves.device)
        first = identity.diff(dim=0)  # [length - 1, length]: the rows of D1
        curve = first.T @ first / self.prior_step**2 + identity / self.prior_scale**2
        if self.prior_curvature is not None:
            second = identity.diff(n=2, dim=0)  # [length - 2, length]
            curve = curve + second.T @ second / self.prior_curvature**2
        return curve
