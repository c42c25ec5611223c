"""Anonymous count mechanism: a neural payoff of one's own action and the others' action shares (E4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mechgym.mechanisms.base import AnonymousMechanism, rowwise_linear, seeded_init
from mechgym.validation import check_int

#: Hidden values per piece of counterfactual rows built with gradients on the CPU (``cache_rounds``): 2 MiB.
CACHE_ELEMENTS = 1 << 19


def default_anonymous_embed_dim(n_actions: int) -> int:
    """Reference embedding size of the anonymous count mechanism: ``min(32, max(12, A))``."""
    return min(32, max(12, n_actions))


class AnonymousCountMechanism(AnonymousMechanism):
    """``u_i = f(a_i, c_-i / (N - 1))`` with ``c_-i`` the others' action counts and ``f`` the MLP
    ``[Embedding(A, e) || shares] -> Linear(e + A, H)-ReLU-Linear(H, H)-ReLU-Linear(H, 1)``.

    With the defaults this is the paper's smallest E4 ground truth (40 agents x 10 actions, e=12, H=256).

    Counterfactual rows use the structure of the first layer: its pre-activation for an agent that
    played ``o`` and deviates to ``a`` is ``W_e e(a) + W_c c / (N-1) - W_c[:, o] / (N-1) + b``, a sum of
    a per-round, a per-own-action and a per-alternative term.

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        embed_dim: Embedding size ``e``; ``None`` for ``min(32, max(12, A))``.
        hidden: Hidden width ``H``.
        seed: Seed of the initialisation.
    """

    family = "anonymous"

    def __init__(
        self,
        n_agents: int = 40,
        n_actions: int = 10,
        embed_dim: int | None = None,
        hidden: int = 256,
        seed: int | None = 0,
    ) -> None:
        super().__init__(n_agents, n_actions)
        self.embed_dim = (
            check_int(embed_dim, "embed_dim", low=1)
            if embed_dim is not None
            else default_anonymous_embed_dim(self.n_actions)
        )
        self.hidden = check_int(hidden, "hidden", low=1)
        a, e, h = self.n_actions, self.embed_dim, self.hidden
        self.check_parameter_memory(a * e + (e + a + 1) * h + (h + 1) * h + h + 1)
        with seeded_init(seed):
            self.embedding = nn.Embedding(self.n_actions, self.embed_dim)
            self.layer1 = nn.Linear(self.embed_dim + self.n_actions, self.hidden)
            self.layer2 = nn.Linear(self.hidden, self.hidden)
            self.layer3 = nn.Linear(self.hidden, 1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "embed_dim": self.embed_dim, "hidden": self.hidden}

    def _head(self, pre_activation: Tensor) -> Tensor:
        if torch.is_grad_enabled() and pre_activation.requires_grad:  # a fit: one fused product for the output unit
            hidden = torch.relu(self.layer2(torch.relu(pre_activation)))
            return nn.functional.linear(hidden, self.layer3.weight, self.layer3.bias).squeeze(-1)
        # no graph (simulations, a frozen truth): in place, and a sum whose rounding is independent of the batch
        hidden = torch.relu_(self.layer2(torch.relu_(pre_activation)))
        return rowwise_linear(hidden, self.layer3.weight, self.layer3.bias).squeeze(-1)

    def cache_rounds(self) -> int:
        """Rounds per piece of rows with gradients: about :data:`CACHE_ELEMENTS` hidden values (2 MiB)."""
        return max(1, CACHE_ELEMENTS // (self.n_actions * self.n_actions * self.hidden))

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        shares = other_counts / (self.n_agents - 1)
        embedded = self.embedding(actions).expand(*shares.shape[:-1], self.embed_dim)
        return self._head(self.layer1(torch.cat([embedded, shares], dim=-1)))

    def counterfactual_rows(self, counts: Tensor) -> Tensor:
        e = self.embed_dim
        weight_embed, weight_counts = self.layer1.weight[:, :e], self.layer1.weight[:, e:]
        per_alternative = self.embedding.weight @ weight_embed.T + self.layer1.bias  # [A, H]
        per_round = rowwise_linear(counts / (self.n_agents - 1), weight_counts)  # [..., H]
        per_own = weight_counts.T / (self.n_agents - 1)  # [A, H]
        # (per_round - per_own) + per_alternative, as [..., own, 1, H] + [alt, H]: the backward pass then sums
        # the big [..., own, alt, H] gradient twice (over alt; over rounds and own), not three times
        pre = (per_round[..., None, :] - per_own)[..., :, None, :] + per_alternative  # [..., own, alt, H]
        return self._head(pre)
