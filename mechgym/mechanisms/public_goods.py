"""Public-goods mechanism: contributions feed a shared benefit with diminishing returns (E3)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mechgym.mechanisms.base import AnonymousMechanism, rowwise_linear, seeded_init
from mechgym.validation import check_int


class PublicGoodsMechanism(AnonymousMechanism):
    """Contribution levels ``x_a`` evenly spaced in [0, 1]; with ``S`` the sum of all agents' levels::

        u_i = scale * (1 - exp(-k * S)) - cost * x_i**2 + subsidy(S, x_i)

    where ``subsidy`` is ``Linear(2, H)-tanh-Linear(H, 1)`` (default init under ``seed``). ``k``, ``scale``,
    ``cost`` and the subsidy network are learnable, so the class doubles as the structured model family.

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Number of contribution levels ``A``.
        k: Benefit curvature.
        scale: Benefit scale.
        cost: Quadratic contribution cost.
        hidden: Width ``H`` of the subsidy network.
        seed: Seed of the subsidy network's initialisation.
    """

    family = "public_goods"
    levels: Tensor

    def __init__(
        self,
        n_agents: int = 3,
        n_actions: int = 7,
        k: float = 2.0,
        scale: float = 1.0,
        cost: float = 0.8,
        hidden: int = 64,
        seed: int | None = 0,
    ) -> None:
        super().__init__(n_agents, n_actions)
        self.hidden = check_int(hidden, "hidden", low=1)
        self.k = nn.Parameter(torch.tensor(float(k)))
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.cost = nn.Parameter(torch.tensor(float(cost)))
        with seeded_init(seed):
            self.subsidy_hidden = nn.Linear(2, self.hidden)
            self.subsidy_out = nn.Linear(self.hidden, 1)
        self.register_buffer("levels", torch.linspace(0.0, 1.0, self.n_actions), persistent=False)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden": self.hidden}

    def _payoff(self, level: Tensor, total: Tensor) -> Tensor:
        benefit = self.scale * (1.0 - torch.exp(-self.k * total))
        hidden = torch.tanh(self.subsidy_hidden(torch.stack(torch.broadcast_tensors(total, level), dim=-1)))
        subsidy = rowwise_linear(hidden, self.subsidy_out.weight, self.subsidy_out.bias).squeeze(-1)
        return benefit - self.cost * level**2 + subsidy

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        level = self.levels[actions]
        return self._payoff(level, level + rowwise_linear(other_counts, self.levels[None]).squeeze(-1))

    def counterfactual_rows(self, counts: Tensor) -> Tensor:
        total = rowwise_linear(counts, self.levels[None]).squeeze(-1)  # [...]
        # agent that played o and now plays a: total - x_o + x_a
        total_cf = total[..., None, None] - self.levels[:, None] + self.levels  # [..., own, alt]
        return self._payoff(self.levels.expand_as(total_cf), total_cf)
