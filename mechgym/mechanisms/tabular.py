"""Tabular mechanism: a free payoff table over all ``A**N`` joint actions (the Tabular MLE baseline)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from mechgym.errors import ConfigurationError
from mechgym.mechanisms.base import Mechanism
from mechgym.validation import check_seed

#: The largest table :class:`TabularMechanism` will allocate.
MAX_TABULAR_JOINT_ACTIONS = 1 << 20


class TabularMechanism(Mechanism):
    """``M(a) = U[index(a)]`` with a table ``U`` of shape ``[A**N, N]``.

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        init: ``"zeros"`` (the Tabular MLE baseline) or ``"normal"`` (standard normal entries).
        seed: Seed of the ``"normal"`` initialisation.
    """

    family = "tabular"
    linear_in_parameters = True
    _strides: Tensor
    max_table_size = MAX_TABULAR_JOINT_ACTIONS

    def __init__(
        self, n_agents: int = 3, n_actions: int = 6, init: Literal["zeros", "normal"] = "zeros", seed: int | None = 0
    ) -> None:
        super().__init__(n_agents, n_actions)
        if self.n_joint_actions > MAX_TABULAR_JOINT_ACTIONS:
            raise ConfigurationError(
                f"a tabular mechanism over {n_actions}**{n_agents} joint actions is too large "
                f"(limit {MAX_TABULAR_JOINT_ACTIONS}); use a neural or anonymous model instead"
            )
        if init not in ("zeros", "normal"):
            raise ConfigurationError(f"init must be 'zeros' or 'normal'; got {init!r}")
        self.init = init
        shape = (self.n_joint_actions, self.n_agents)
        if init == "zeros":
            table = torch.zeros(shape)
        else:
            generator = (
                torch.Generator().manual_seed(check_seed(seed, "the mechanism seed")) if seed is not None else None
            )
            table = torch.randn(shape, generator=generator)
        self.table = nn.Parameter(table)
        strides = self.n_actions ** torch.arange(self.n_agents - 1, -1, -1)
        self.register_buffer("_strides", strides, persistent=False)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "init": self.init}

    def forward(self, joint_actions: Tensor) -> Tensor:
        return self.table[(joint_actions * self._strides).sum(-1)]

    def payoff_table(self) -> Tensor:
        return self.table

    def _use_table(self, joint_actions: Tensor) -> bool:
        return True
