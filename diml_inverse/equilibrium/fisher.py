"""Fisher markets: buyers with budgets spend them on goods in fixed supply; the exploitability is the EG gap.

A competitive equilibrium of a Fisher market with homogeneous (degree-1) utilities is the solution of the
Eisenberg–Gale program ``max sum_i b_i log u_i(x_i)`` subject to ``sum_i x_ij <= s_j``, with the prices its
multipliers. Its Lagrangian dual minus its primal at observed allocations ``x`` and prices ``p``,

``gap = sum_j p_j s_j + sum_i max_{y_i >= 0} [b_i log u_i(y_i) - p . y_i] - sum_i b_i log u_i(x_i)``,

is zero exactly at an equilibrium, convex in the budgets and a max over each buyer's deviation demand ``y_i``:
the exploitability of Goktas et al. (§5). The inner max has a closed form, ``b_i log b_i - b_i + b_i log
e_i(p)`` with ``e_i(p)`` the most utility a dollar buys: ``max_j v_ij / p_j`` (linear) or
``prod_j (v_ij / p_j)^v_ij`` (Cobb-Douglas, valuations normalised to sum to one).

Identification: utilities are invariant to scaling a buyer's valuations, so valuations are reported
normalised to sum to one per buyer. Budgets are always identified (``b_i = p . x_i``). Cobb-Douglas
valuations are identified too (``v_ij = p_j x_ij / b_i``, the spending shares); linear valuations are not:
an equilibrium shows only which goods give each buyer the most utility per dollar (inequalities).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor

from diml_inverse.equilibrium.games import GAME_DTYPE, EquilibriumGame, as_parameter
from mechgym.errors import ConfigurationError
from mechgym.validation import check_int

__all__ = ["FisherMarket", "FisherObservation", "Utility"]

Utility = Literal["linear", "cobb-douglas"]
#: Allocations and prices below this count as zero inside logarithms.
_FLOOR = 1e-12


class FisherObservation(NamedTuple):
    """An observed market outcome.

    Attributes:
        allocations: ``x`` ``[*batch, n_buyers, n_goods]``, non-negative.
        prices: ``p`` ``[*batch, n_goods]``, positive.
    """

    allocations: Tensor
    prices: Tensor


class FisherMarket(EquilibriumGame):
    """A batch of Fisher markets, ``n_buyers`` x ``n_goods``.

    Args:
        valuations: ``v`` ``[*batch, n_buyers, n_goods]``, positive (``None``: unknown).
        budgets: ``b`` ``[*batch, n_buyers]``, positive (``None``: unknown).
        supplies: ``s`` ``[*batch, n_goods]`` (default: one unit of each good).
        utility: ``"linear"`` (``u_i = v_i . x_i``) or ``"cobb-douglas"`` (``u_i = prod_j x_ij^v_ij``).
        n_buyers: Buyers (needed when both valuations and budgets are unknown).
        n_goods: Goods (likewise).
    """

    parameter_names: ClassVar[tuple[str, ...]] = ("valuations", "budgets", "supplies")
    event_dims: ClassVar[Mapping[str, int]] = {"valuations": 2, "budgets": 1, "supplies": 1}
    default_bounds: ClassVar[Mapping[str, tuple[float, float]]] = {
        "valuations": (1e-3, 1.0),
        "budgets": (1e-3, 100.0),
        "supplies": (1e-3, 100.0),
    }

    def __init__(
        self,
        valuations: Tensor | float | None,
        budgets: Tensor | float | None = None,
        supplies: Tensor | float | None = 1.0,
        utility: Utility = "linear",
        n_buyers: int | None = None,
        n_goods: int | None = None,
    ) -> None:
        super().__init__(valuations=valuations, budgets=budgets, supplies=supplies)
        if utility not in ("linear", "cobb-douglas"):
            raise ConfigurationError(f"utility must be 'linear' or 'cobb-douglas'; got {utility!r}")
        self.utility: Utility = utility
        v, b = self.parameters["valuations"], self.parameters["budgets"]
        if v is not None and v.dim() >= 2:
            n_buyers, n_goods = v.shape[-2], v.shape[-1]
        elif b is not None and b.dim() >= 1:
            n_buyers = b.shape[-1]
        if n_buyers is None or n_goods is None:
            raise ConfigurationError(
                "give valuations of shape [..., n_buyers, n_goods], or n_buyers and n_goods (and budgets "
                "[..., n_buyers]) when the valuations are unknown"
            )
        self.n_buyers = check_int(n_buyers, "n_buyers", low=1)
        self.n_goods = check_int(n_goods, "n_goods", low=1)
        supplies_value = self.parameters["supplies"]
        if supplies_value is not None and supplies_value.dim() == 0:  # one number: every good's supply
            self.parameters["supplies"] = supplies_value.expand(self.n_goods).clone()
        if v is not None and (v.dim() < 2 or bool((v <= 0).any())):
            raise ConfigurationError("valuations must be positive, of shape [..., n_buyers, n_goods]")
        if b is not None and (b.dim() < 1 or b.shape[-1] != self.n_buyers or bool((b <= 0).any())):
            raise ConfigurationError(f"budgets must be positive, of shape [..., {self.n_buyers}]")

    def event_shape(self, name: str, observed: Any) -> tuple[int, ...]:
        return {
            "valuations": (self.n_buyers, self.n_goods),
            "budgets": (self.n_buyers,),
            "supplies": (self.n_goods,),
        }[name]

    def initial_value(self, name: str, observed: Any, batch: torch.Size) -> Tensor:
        if name == "valuations" and self.parameters["valuations"] is None:  # even valuations: no good preferred
            return torch.full((*batch, self.n_buyers, self.n_goods), 1.0 / self.n_goods, dtype=GAME_DTYPE)
        return super().initial_value(name, observed, batch)

    def check_observed(self, observed: Any) -> FisherObservation:
        if not isinstance(observed, tuple) or len(observed) != 2:
            raise ConfigurationError("a Fisher market's observation is (allocations, prices), a FisherObservation")
        x = as_parameter(observed[0], "the observed allocations")
        p = as_parameter(observed[1], "the observed prices")
        if x is None or p is None:
            raise ConfigurationError("a Fisher market's observation needs both allocations and prices")
        if x.dim() < 2 or x.shape[-2:] != (self.n_buyers, self.n_goods) or bool((x < 0).any()):
            raise ConfigurationError(
                f"allocations must be non-negative, of shape [..., {self.n_buyers}, {self.n_goods}]; got "
                f"{list(x.shape)}"
            )
        if p.shape[-1:] != (self.n_goods,) or bool((p <= 0).any()):
            raise ConfigurationError(f"prices must be positive, of shape [..., {self.n_goods}]; got {list(p.shape)}")
        return FisherObservation(x, p)

    def observed_batch_shape(self, observed: Any) -> torch.Size:
        return torch.broadcast_shapes(observed.allocations.shape[:-2], observed.prices.shape[:-1])

    # -- the EG program ----------------------------------------------------------------------------
    def normalised_valuations(self, valuations: Tensor) -> Tensor:
        """Valuations scaled to sum to one per buyer (what equilibrium behaviour identifies)."""
        return valuations / valuations.sum(-1, keepdim=True)

    def canonical_parameters(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Valuations normalised to sum to one per buyer (their scale is not identified)."""
        out = dict(params)
        if "valuations" in out:
            out["valuations"] = self.normalised_valuations(out["valuations"])
        return out

    def log_utility(self, valuations: Tensor, allocations: Tensor) -> Tensor:
        """``log u_i(x_i)`` ``[*batch, n_buyers]`` (with normalised valuations)."""
        v = self.normalised_valuations(valuations)
        if self.utility == "linear":
            return torch.log((v * allocations).sum(-1).clamp_min(_FLOOR))
        return (v * torch.log(allocations.clamp_min(_FLOOR))).sum(-1)

    def log_bang_per_buck(self, valuations: Tensor, prices: Tensor) -> Tensor:
        """``log e_i(p)``, the log of the most utility one dollar buys, ``[*batch, n_buyers]``."""
        v = self.normalised_valuations(valuations)
        ratio = torch.log(v.clamp_min(_FLOOR)) - torch.log(prices[..., None, :])
        if self.utility == "linear":
            return ratio.max(-1).values
        return (v * ratio).sum(-1)

    def regret(self, params: Mapping[str, Tensor], observed: Any, deviation: Tensor) -> Tensor:
        b, v, s = params["budgets"], params["valuations"], params["supplies"]
        x, p = observed
        deviating = b * self.log_utility(v, deviation) - (p[..., None, :] * deviation).sum(-1)
        return (p * s).sum(-1) + deviating.sum(-1) - (b * self.log_utility(v, x)).sum(-1)

    def best_response(self, params: Mapping[str, Tensor], observed: Any) -> Tensor:
        """Each buyer's demand at the observed prices: ``[*batch, n_buyers, n_goods]``."""
        b, v = params["budgets"], self.normalised_valuations(params["valuations"])
        p = observed.prices[..., None, :]
        if self.utility == "cobb-douglas":
            return b[..., None] * v / p
        ratio = v / p
        best = (ratio == ratio.max(-1, keepdim=True).values).to(ratio.dtype)
        return b[..., None] * best / (best * p).sum(-1, keepdim=True)  # the budget on the best goods

    def exploitability(self, params: Mapping[str, Tensor], observed: Any) -> Tensor:
        """The EG duality gap in closed form ``[*batch]`` (equal to the regret at :meth:`best_response`)."""
        b, v, s = params["budgets"], params["valuations"], params["supplies"]
        x, p = observed
        dual = (p * s).sum(-1) + (b * torch.log(b) - b + b * self.log_bang_per_buck(v, p)).sum(-1)
        return dual - (b * self.log_utility(v, x)).sum(-1)

    def initial_deviation(self, observed: Any) -> Tensor:
        return observed.allocations.clone()

    def project_deviation(self, deviation: Tensor) -> Tensor:
        return deviation.clamp_min(0.0)

    def equilibrium(self, params: Mapping[str, Tensor], n_iterations: int = 3000) -> FisherObservation:
        """The competitive equilibrium: closed form (Cobb-Douglas) or proportional response (linear).

        Args:
            params: ``valuations``, ``budgets`` and ``supplies``.
            n_iterations: Proportional-response steps for linear utilities (converges to the equilibrium).
        """
        b, s = params["budgets"], params["supplies"]
        v = self.normalised_valuations(params["valuations"])
        b, v, s = torch.broadcast_tensors(b[..., None], v, s[..., None, :])
        if self.utility == "cobb-douglas":
            bids = b * v
        else:
            bids = b / self.n_goods * torch.ones_like(v)
            for _ in range(n_iterations):
                prices = bids.sum(-2, keepdim=True)
                gains = v * bids * s / prices  # utility bought from each good
                bids = b * gains / gains.sum(-1, keepdim=True).clamp_min(_FLOOR)
        prices = bids.sum(-2)
        return FisherObservation(bids * s / prices[..., None, :], prices)
