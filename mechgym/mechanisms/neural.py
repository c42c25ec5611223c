"""Neural joint mechanism: an unstructured MLP from the whole joint action to every agent's payoff (E1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mechgym.mechanisms.base import Mechanism, seeded_init
from mechgym.validation import check_int


def default_embed_dim(n_actions: int) -> int:
    """Reference embedding size of the neural joint mechanism: ``min(24, max(6, A))``."""
    return min(24, max(6, n_actions))


class NeuralJointMechanism(Mechanism):
    """Per-agent action embeddings, concatenated, then ``Linear(N*d, H)-tanh-Linear(H, H)-tanh-Linear(H, N)``.

    With the defaults this is the paper's E1 ground truth (3 agents x 6 actions, d=6, H=128), built with
    PyTorch's default initialisation under ``seed``.

    Args:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        embed_dim: Embedding size ``d``; ``None`` for ``min(24, max(6, A))``.
        hidden: Hidden width ``H``.
        seed: Seed of the initialisation (``None``: torch's global generator).
    """

    family = "neural"
    _offsets: Tensor

    def __init__(
        self,
        n_agents: int = 3,
        n_actions: int = 6,
        embed_dim: int | None = None,
        hidden: int = 128,
        seed: int | None = 0,
    ) -> None:
        super().__init__(n_agents, n_actions)
        self.embed_dim = (
            check_int(embed_dim, "embed_dim", low=1) if embed_dim is not None else default_embed_dim(self.n_actions)
        )
        self.hidden = check_int(hidden, "hidden", low=1)
        n, a, d, h = self.n_agents, self.n_actions, self.embed_dim, self.hidden
        self.check_parameter_memory(n * a * d + (n * d + 1) * h + (h + 1) * h + (h + 1) * n)
        with seeded_init(seed):
            # one table holds every agent's embeddings: row i*A + a is agent i's embedding of action a
            self.embedding = nn.Embedding(self.n_agents * self.n_actions, self.embed_dim)
            self.layer1 = nn.Linear(self.n_agents * self.embed_dim, self.hidden)
            self.layer2 = nn.Linear(self.hidden, self.hidden)
            self.layer3 = nn.Linear(self.hidden, self.n_agents)
        self.register_buffer("_offsets", torch.arange(self.n_agents) * self.n_actions, persistent=False)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "embed_dim": self.embed_dim, "hidden": self.hidden}

    def forward(self, joint_actions: Tensor) -> Tensor:
        # the embedding lookup as an index_select: the same values, and a faster backward (an index_add)
        rows = (joint_actions + self._offsets).reshape(-1)
        embedded = self.embedding.weight.index_select(0, rows).view(*joint_actions.shape, self.embed_dim)  # [..., N, d]
        hidden = torch.tanh(self.layer1(embedded.flatten(-2)))
        return self.layer3(torch.tanh(self.layer2(hidden)))

    def _structured_counterfactual_payoffs(self, joint_actions: Tensor, agents: Tensor | None = None) -> Tensor:
        """The first layer is a sum of per-agent terms, so a deviation swaps one term."""
        n, a, d = self.n_agents, self.n_actions, self.embed_dim
        weight = self.layer1.weight.view(self.hidden, n, d)
        # contribution[i, a, :] = W_i @ embedding(agent i, action a)
        contribution = torch.einsum("hnd,nad->nah", weight, self.embedding.weight.view(n, a, d))
        everyone = torch.arange(n, device=joint_actions.device)
        agents = everyone if agents is None else agents
        played = contribution[everyone, joint_actions]  # [..., N, H]
        pre = self.layer1.bias + played.sum(-2)  # [..., H]
        pre_cf = pre[..., None, None, :] - played[..., agents, None, :] + contribution[agents]  # [..., K, A, H]
        hidden = torch.tanh(self.layer2(torch.tanh(pre_cf)))
        # only agent i's output unit is needed for row i
        return (hidden * self.layer3.weight[agents][:, None, :]).sum(-1) + self.layer3.bias[agents][:, None]
