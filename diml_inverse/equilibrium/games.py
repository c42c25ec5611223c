"""Games with differentiable payoffs for equilibrium inversion: the base class, Cournot and Bertrand.

A game holds its *known* parameters as tensors and marks an *unknown* one with ``None``. Every parameter
broadcasts over a batch of markets: a game of 500 markets is one object whose tensors have a leading
dimension of 500 (or broadcast to it), and every method below works on the whole batch at once.

What a game provides to :func:`~diml_inverse.equilibrium.inverse_nash` (Goktas et al. 2024, §3):

- ``regret(params, observed, deviation)``: the cumulative regret ``psi(x, y; theta) = sum_i u_i(y_i, x_-i) -
  u_i(x)`` of the observed profile ``x`` against a deviation ``y``, per market ``[*batch]``;
- ``best_response(params, observed)``: the deviation that maximises it (the max-oracle), so that
  ``regret(params, x, best_response(params, x))`` is the exploitability of ``x``;
- ``equilibrium(params)``: the equilibrium under given parameters (closed forms), to make data and to report
  what the recovered parameters predict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from mechgym.errors import ConfigurationError, suggest

__all__ = ["BertrandGame", "CournotGame", "EquilibriumGame", "as_parameter"]

#: The dtype of the economic games' tensors (exploitabilities near zero need the precision).
GAME_DTYPE = torch.float64


def as_parameter(value: Tensor | float | None, name: str) -> Tensor | None:
    """A known parameter as a float64 tensor (``None``, an unknown one, stays ``None``).

    Raises:
        ConfigurationError: for values that are not finite numbers.
    """
    if value is None:
        return None
    try:
        tensor = torch.as_tensor(value, dtype=GAME_DTYPE)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ConfigurationError(f"{name} must be a number or a tensor of numbers; got {value!r} ({error})") from None
    if not bool(torch.isfinite(tensor).all()):
        raise ConfigurationError(f"{name} must be finite; got {tensor}")
    return tensor


class EquilibriumGame:
    """A batch of games whose equilibria can be inverted (the interface of :func:`inverse_nash`).

    Subclasses set :attr:`parameter_names`, :attr:`event_dims` and :attr:`default_bounds` and implement the
    methods that raise ``NotImplementedError`` here.

    Attributes:
        parameters: The parameters by name: a float64 tensor when known, ``None`` when unknown.
    """

    parameter_names: ClassVar[tuple[str, ...]] = ()
    #: Trailing dimensions of each parameter that are not batch dimensions (``budgets``: 1).
    event_dims: ClassVar[Mapping[str, int]] = {}
    #: Projection box of each parameter while it is estimated.
    default_bounds: ClassVar[Mapping[str, tuple[float, float]]] = {}
    #: Whether :meth:`best_response` is exact (the max-oracle exists).
    has_best_response: ClassVar[bool] = True

    def __init__(self, **parameters: Tensor | float | None) -> None:
        self.parameters: dict[str, Tensor | None] = {n: as_parameter(v, n) for n, v in parameters.items()}

    def __repr__(self) -> str:
        def describe(value: Tensor | None) -> str:
            return "None" if value is None else f"tensor{list(value.shape)}"

        inner = ", ".join(f"{n}={describe(v)}" for n, v in self.parameters.items())
        return f"{type(self).__name__}({inner})"

    # -- parameters --------------------------------------------------------------------------------
    def unknown_names(self) -> tuple[str, ...]:
        """The parameters marked ``None``."""
        return tuple(n for n in self.parameter_names if self.parameters.get(n) is None)

    def check_unknown(self, unknown: Sequence[str] | str | None) -> tuple[str, ...]:
        """The parameters to estimate: ``unknown`` (a name or names) or, when ``None``, those marked ``None``.

        Raises:
            ConfigurationError: for an unknown name (with a did-you-mean) or an empty selection.
        """
        names = self.unknown_names() if unknown is None else ((unknown,) if isinstance(unknown, str) else unknown)
        for name in names:
            if name not in self.parameter_names:
                raise ConfigurationError(suggest(name, self.parameter_names, f"parameter of {type(self).__name__}"))
        if not names:
            raise ConfigurationError(
                f"nothing to estimate: {type(self).__name__} has every parameter known; mark one unknown with "
                "None in the constructor or name it in unknown=(...)"
            )
        return tuple(dict.fromkeys(names))

    def batch_shape(self, observed: Any) -> torch.Size:
        """The broadcast batch shape of the known parameters and the observation."""
        shapes = [self.observed_batch_shape(observed)]
        for name, value in self.parameters.items():
            if value is not None:
                shapes.append(value.shape[: value.dim() - self.event_dims.get(name, 0)])
        return torch.broadcast_shapes(*shapes)

    def event_shape(self, name: str, observed: Any) -> tuple[int, ...]:
        """The non-batch shape of parameter ``name`` (``()`` for a scalar per market)."""
        return ()

    def initial_value(self, name: str, observed: Any, batch: torch.Size) -> Tensor:
        """The starting guess of an estimated parameter: its known value, else the middle of its bounds."""
        known = self.parameters.get(name)
        shape = (*batch, *self.event_shape(name, observed))
        if known is not None:
            return known.expand(shape).clone()
        low, high = self.default_bounds.get(name, (0.0, 1.0))
        middle = (low + high) / 2 if high < float("inf") else low + 1.0
        return torch.full(shape, middle, dtype=GAME_DTYPE)

    def full_parameters(self, estimated: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The known parameters with the estimated ones put in."""
        merged = {n: v for n, v in self.parameters.items() if v is not None}
        merged.update(estimated)
        missing = [n for n in self.parameter_names if n not in merged]
        if missing:
            raise ConfigurationError(
                f"{type(self).__name__} needs {', '.join(missing)}: give a value or estimate it (unknown=...)"
            )
        return merged

    def canonical_parameters(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The estimated parameters as reported: what the game identifies (identity here)."""
        return dict(params)

    # -- the game (subclasses) ---------------------------------------------------------------------
    def check_observed(self, observed: Any) -> Any:
        """The observation as the game's tensors, validated."""
        raise NotImplementedError

    def observed_batch_shape(self, observed: Any) -> torch.Size:
        """The batch shape of a (checked) observation."""
        raise NotImplementedError

    def regret(self, params: Mapping[str, Tensor], observed: Any, deviation: Tensor) -> Tensor:
        """Cumulative regret ``sum_i u_i(y_i, x_-i) - u_i(x)`` per market, ``[*batch]``."""
        raise NotImplementedError

    def best_response(self, params: Mapping[str, Tensor], observed: Any) -> Tensor:
        """Each player's best deviation against the others' observed play (the max-oracle)."""
        raise NotImplementedError

    def initial_deviation(self, observed: Any) -> Tensor:
        """The deviation player's starting point for ``"gda"`` and ``"exploit-gd"``."""
        raise NotImplementedError

    def project_deviation(self, deviation: Tensor) -> Tensor:
        """The deviation projected on the strategy sets."""
        raise NotImplementedError

    def equilibrium(self, params: Mapping[str, Tensor]) -> Any:
        """The equilibrium under ``params`` (``None`` where the game has no closed form)."""
        return None


def _check_profile(observed: Any, n_players: int, what: str, low: float) -> Tensor:
    tensor = as_parameter(observed, f"the observed {what}")
    if tensor is None or tensor.dim() < 1 or tensor.shape[-1] != n_players:
        shape = None if tensor is None else list(tensor.shape)
        raise ConfigurationError(
            f"the observed {what} must have shape [..., {n_players}] (one per player); got {shape}"
        )
    if bool((tensor < low).any()):
        raise ConfigurationError(f"the observed {what} must be >= {low}; got a minimum of {float(tensor.min())}")
    return tensor


class _LinearDemandOligopoly(EquilibriumGame):
    """What Cournot and Bertrand share: linear demand in ``intercept`` and ``slope``, a unit ``cost``, and an
    observed profile ``[..., n_firms]`` of non-negative actions (:attr:`observed_name`)."""

    parameter_names: ClassVar[tuple[str, ...]] = ("intercept", "slope", "cost")
    default_bounds: ClassVar[Mapping[str, tuple[float, float]]] = {
        "intercept": (0.0, 200.0),
        "slope": (-20.0, -1e-3),
        "cost": (0.0, 100.0),
    }
    observed_name: ClassVar[str] = "actions"
    n_firms: int

    def check_observed(self, observed: Any) -> Tensor:
        return _check_profile(observed, self.n_firms, self.observed_name, 0.0)

    def observed_batch_shape(self, observed: Any) -> torch.Size:
        return observed.shape[:-1]


class CournotGame(_LinearDemandOligopoly):
    """Cournot oligopoly: inverse demand ``P(Q) = intercept + slope * Q`` (``slope < 0``), unit cost ``cost``.

    Firm ``i`` earns ``(P(q_i + Q_-i) - cost) q_i``; the symmetric equilibrium is
    ``q* = (intercept - cost) / (-slope (n_firms + 1))``. The observation is the quantities ``[*batch, n_firms]``.

    Args:
        intercept: ``a``, broadcast over markets (``None``: unknown).
        slope: ``b < 0`` (``None``: unknown).
        cost: ``c`` (``None``: unknown, the default).
        n_firms: Number of firms.
        min_quantity: Smallest quantity a deviation may choose (Goktas et al. project on ``q >= 0.01``).
    """

    observed_name: ClassVar[str] = "quantities"

    def __init__(
        self,
        intercept: Tensor | float | None,
        slope: Tensor | float | None,
        cost: Tensor | float | None = None,
        n_firms: int = 2,
        min_quantity: float = 0.01,
    ) -> None:
        super().__init__(intercept=intercept, slope=slope, cost=cost)
        self.n_firms = n_firms
        self.min_quantity = float(min_quantity)

    def profits(self, params: Mapping[str, Tensor], quantities: Tensor) -> Tensor:
        """Every firm's profit ``[*batch, n_firms]``."""
        price = params["intercept"][..., None] + params["slope"][..., None] * quantities.sum(-1, keepdim=True)
        return (price - params["cost"][..., None]) * quantities

    def regret(self, params: Mapping[str, Tensor], observed: Tensor, deviation: Tensor) -> Tensor:
        others = observed.sum(-1, keepdim=True) - observed
        price = params["intercept"][..., None] + params["slope"][..., None] * (deviation + others)
        deviating = (price - params["cost"][..., None]) * deviation
        return (deviating - self.profits(params, observed)).sum(-1)

    def best_response(self, params: Mapping[str, Tensor], observed: Tensor) -> Tensor:
        others = observed.sum(-1, keepdim=True) - observed
        a, b, c = (params[n][..., None] for n in self.parameter_names)
        return ((a - c + b * others) / (-2 * b)).clamp_min(self.min_quantity)

    def initial_deviation(self, observed: Tensor) -> Tensor:
        return observed.clone()

    def project_deviation(self, deviation: Tensor) -> Tensor:
        return deviation.clamp_min(self.min_quantity)

    def equilibrium(self, params: Mapping[str, Tensor]) -> Tensor:
        """The symmetric equilibrium quantities ``[*batch, n_firms]``."""
        a, b, c = (params[n] for n in self.parameter_names)
        q = ((a - c) / (-b * (self.n_firms + 1))).clamp_min(0.0)
        return q[..., None].expand(*q.shape, self.n_firms)


class BertrandGame(_LinearDemandOligopoly):
    """Bertrand oligopoly: demand ``D(p) = max(intercept + slope * p, 0)``, unit cost ``cost``.

    Firm ``i`` earns ``(p_i - cost) D(p_i) s_i`` with share ``s_i`` 1 when it is the cheapest, ``1/k`` when
    ``k`` firms tie at the lowest price, 0 otherwise; in equilibrium every firm prices at cost. The exact
    best response (:meth:`best_response`) undercuts the cheapest rival, or charges the monopoly price when that
    is lower, or prices above the rivals (profit 0) when undercutting loses money. Markets whose demand at the
    observed price is zero say nothing about the cost (every cost rationalises them).

    Args:
        intercept: ``a > 0`` (``None``: unknown).
        slope: ``b < 0`` (``None``: unknown).
        cost: ``c`` (``None``: unknown, the default).
        n_firms: Number of firms.
        undercut: How far below the cheapest rival an undercutting deviation prices, relative to that price.
    """

    observed_name: ClassVar[str] = "prices"

    def __init__(
        self,
        intercept: Tensor | float | None,
        slope: Tensor | float | None,
        cost: Tensor | float | None = None,
        n_firms: int = 2,
        undercut: float = 1e-9,
    ) -> None:
        super().__init__(intercept=intercept, slope=slope, cost=cost)
        self.n_firms = n_firms
        self.undercut = float(undercut)

    def _deviation_profit(self, params: Mapping[str, Tensor], observed: Tensor, prices: Tensor) -> Tensor:
        """Profit ``[*batch, n_firms]`` of firm ``i`` charging ``prices[..., i]`` while the others keep theirs."""
        n = self.n_firms
        eye = torch.eye(n, dtype=torch.bool, device=observed.device)
        rivals = observed[..., None, :].expand(*observed.shape, n).masked_fill(eye, float("inf"))  # [..., i, j]
        cheapest = rivals.min(-1).values
        ties = (rivals == prices[..., None]).sum(-1)
        share = torch.where(
            prices < cheapest,
            torch.ones_like(prices),
            torch.where(prices == cheapest, 1.0 / (1.0 + ties), torch.zeros_like(prices)),
        )
        a, b, c = (params[name][..., None] for name in self.parameter_names)
        demand = (a + b * prices).clamp_min(0.0)
        return (prices - c) * demand * share

    def regret(self, params: Mapping[str, Tensor], observed: Tensor, deviation: Tensor) -> Tensor:
        observed_profit = self._deviation_profit(params, observed, observed)
        return (self._deviation_profit(params, observed, deviation) - observed_profit).sum(-1)

    def best_response(self, params: Mapping[str, Tensor], observed: Tensor) -> Tensor:
        n = self.n_firms
        eye = torch.eye(n, dtype=torch.bool, device=observed.device)
        cheapest = observed[..., None, :].expand(*observed.shape, n).masked_fill(eye, float("inf")).min(-1).values
        a, b, c = (params[name][..., None] for name in self.parameter_names)
        monopoly = (b * c - a) / (2 * b)
        below = cheapest * (1 - self.undercut) - self.undercut
        candidate = torch.minimum(monopoly, below)
        profitable = (candidate - c) * (a + b * candidate).clamp_min(0.0) > 0
        return torch.where(profitable, candidate, cheapest * (1 + self.undercut) + 1.0)  # else price above them

    def initial_value(self, name: str, observed: Any, batch: torch.Size) -> Tensor:
        """An unknown cost starts at the cheapest observed price (Bertrand's equilibrium condition ``p* = c``).

        Where demand at that price is positive it is the one cost that rationalises the observation; where it
        is zero every cost from the choke price ``intercept / -slope`` up does, and this start keeps the one
        under which the price stays an equilibrium when demand shifts out. Other parameters start as the base
        class's guess.
        """
        if name == "cost" and self.parameters["cost"] is None:
            return observed.min(-1).values.expand(batch).clone()
        return super().initial_value(name, observed, batch)

    def initial_deviation(self, observed: Tensor) -> Tensor:
        return observed.clone()

    def project_deviation(self, deviation: Tensor) -> Tensor:
        return deviation.clamp_min(0.0)

    def equilibrium(self, params: Mapping[str, Tensor]) -> Tensor:
        """Every firm prices at cost: ``[*batch, n_firms]``."""
        c = params["cost"]
        return c[..., None].expand(*c.shape, self.n_firms).clone()
