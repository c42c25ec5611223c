"""Congestion mechanism: each action is a resource whose cost grows with its load (E2)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from mechgym.errors import ConfigurationError
from mechgym.mechanisms.base import AnonymousMechanism
from mechgym.validation import check_seed

Pricing = Literal["toll", "subsidy"]


class CongestionMechanism(AnonymousMechanism):
    """Payoff of agent i on resource ``a`` with load ``l`` (agents on ``a``, i included)::

        u_i = -(c1[a] * l + c2[a] * l**2) - tau[a] * l      (pricing="toll", default)
        u_i = -(c1[a] * l + c2[a] * l**2) + tau[a] * l      (pricing="subsidy", the published code's sign)

    ``c1 ~ U(0.1, 0.4)``, ``c2 ~ U(0.05, 0.15)``, ``tau ~ U(0, 0.2)`` per resource, drawn from ``seed``.
    All three are learnable parameters, so the class doubles as the structured model family.

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Number of resources ``A``.
        pricing: ``"toll"`` charges ``tau * load``; ``"subsidy"`` pays it (as the paper's published code did).
        seed: Seed of the parameter draw.
    """

    family = "congestion"

    def __init__(self, n_agents: int = 4, n_actions: int = 5, pricing: Pricing = "toll", seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions)
        if pricing not in ("toll", "subsidy"):
            raise ConfigurationError(f"pricing must be 'toll' or 'subsidy'; got {pricing!r}")
        self.pricing: Pricing = pricing
        generator = torch.Generator().manual_seed(check_seed(seed, "the mechanism seed")) if seed is not None else None
        draw = lambda low, high: low + (high - low) * torch.rand(self.n_actions, generator=generator)  # noqa: E731
        self.c1 = nn.Parameter(draw(0.1, 0.4))
        self.c2 = nn.Parameter(draw(0.05, 0.15))
        self.tau = nn.Parameter(draw(0.0, 0.2))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "pricing": self.pricing}

    def _resource_payoff(self, resource: Tensor, load: Tensor) -> Tensor:
        sign = -1.0 if self.pricing == "toll" else 1.0
        return -(self.c1[resource] * load + self.c2[resource] * load**2) + sign * self.tau[resource] * load

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        load = other_counts.gather(-1, actions[..., None]).squeeze(-1) + 1.0
        return self._resource_payoff(actions, load)

    def counterfactual_rows(self, counts: Tensor) -> Tensor:
        eye = torch.eye(self.n_actions, device=counts.device, dtype=counts.dtype)
        load = counts[..., None, :] - eye + 1.0  # [..., own, alt]
        return self._resource_payoff(torch.arange(self.n_actions, device=counts.device), load)
