"""Counterfactual payoffs read from a payoff table ``[A**N, N]``: flat indices, and the index of traces made once.

A small game's counterfactual payoffs (paper Eq. 1) are entries of its payoff table: ``u_i(a, a_-i)`` is
``table[index of (a, a_-i), i]``. :func:`gather_counterfactuals` reads them for any joint actions;
:func:`table_index` computes where those of traces sit once, and :meth:`TableIndex.gather` reads them at the cost
of two ``index_select`` calls (a fit reads the same training episodes every epoch).

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents (``K`` of them), ``A`` actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mechgym.constants import constant_tensors

__all__ = ["TableIndex", "gather_counterfactuals", "gather_table", "table_index"]


def gather_counterfactuals(
    table: Tensor, joint_actions: Tensor, n_actions: int, agents: Tensor | None = None
) -> Tensor:
    """Counterfactual payoffs ``[..., N, A]`` read from a payoff table ``[A**N, N]``.

    Entry ``[..., i, a]`` is ``table[index of (a, a_-i), i]``; with ``agents`` (LongTensor ``[K]``) only those
    agents' rows are returned, ``[..., K, A]``. Traces ``[E, T, N]`` get ``[E, T, K, A]`` laid out round-major,
    ``[T, A, E, K]`` in memory (a permuted view): the layout of the likelihood's filter and policy, which then
    need no copy in either pass.
    """
    return gather_table(table, joint_actions, n_actions, agents, with_realised=False)[0]


def gather_table(
    table: Tensor, joint_actions: Tensor, n_actions: int, agents: Tensor | None, *, with_realised: bool
) -> tuple[Tensor, Tensor]:
    """:func:`gather_counterfactuals` and, if ``with_realised``, the realised payoffs ``table[index of a, i]``
    ``[..., K]`` (else an empty tensor)."""
    counterfactual, realised = _flat_indices(joint_actions, n_actions, agents, with_realised)
    return _read(table, counterfactual, realised)


def _flat_indices(
    joint_actions: Tensor, n_actions: int, agents: Tensor | None, with_realised: bool
) -> tuple[Tensor, Tensor]:
    """Flat table indices of the counterfactual payoffs ``[..., K, A]`` (traces: a round-major view) and of the
    realised ones ``[..., K]`` (empty unless ``with_realised``)."""
    n_agents = joint_actions.shape[-1]
    strides, offsets, everyone, everyone_rows = _table_offsets(n_agents, n_actions, joint_actions.device)
    # flat index of (a, a_-i) and agent i: (index of a) * N + (a - a_i) * stride_i * N + i, where the last two
    # terms depend only on (i, a_i, a): one row of the small [N * A, A] table of offsets per (agent, own action)
    scaled_index = (joint_actions * strides).sum(-1, keepdim=True)  # [..., 1]: index * N
    own = joint_actions if agents is None else joint_actions[..., agents]
    agent_index = everyone if agents is None else agents
    rows = own + (everyone_rows if agents is None else agents * n_actions)  # [..., K]: row of (i, a_i)
    row_offsets = offsets.index_select(0, rows.reshape(-1)).view(*rows.shape, n_actions)  # [..., K, A]
    if joint_actions.dim() == 3:  # traces [E, T, N]: round-major [T, A, E, K] in memory, the likelihood's layout
        n_episodes, n_rounds, n_rows = rows.shape
        round_major = torch.empty(n_rounds, n_actions, n_episodes, n_rows, dtype=rows.dtype, device=rows.device)
        counterfactual = round_major.permute(2, 0, 3, 1)
        torch.add(scaled_index[..., None], row_offsets, out=counterfactual)
    else:
        counterfactual = scaled_index[..., None] + row_offsets
    realised = scaled_index + agent_index if with_realised else scaled_index.new_empty(0)
    return counterfactual, realised


def _read(table: Tensor, counterfactual: Tensor, realised: Tensor) -> tuple[Tensor, Tensor]:
    """``table`` read at flat indices (a round-major view keeps its layout)."""
    flat_table = table.reshape(-1)
    round_major = counterfactual.dim() == 4 and counterfactual.permute(1, 3, 0, 2).is_contiguous()
    memory = counterfactual.permute(1, 3, 0, 2) if round_major else counterfactual.contiguous()
    # index_select, not advanced indexing: the same values, and a backward (index_add) twice as fast on the CPU
    payoffs = flat_table.index_select(0, memory.reshape(-1)).view(memory.shape)
    payoffs = payoffs.permute(2, 0, 3, 1) if round_major else payoffs
    return payoffs, flat_table.index_select(0, realised.reshape(-1)).view(realised.shape)


@dataclass(frozen=True)
class TableIndex:
    """Where the counterfactual and realised payoffs of traces sit in a payoff table (flat indices), made once.

    Attributes:
        counterfactual: ``[E, T, K, A]`` indices of ``u_i(a, a_-i(t))``, a round-major view (``[T, A, E, K]`` in
            memory), int32 where the table allows it.
        realised: ``[E, T, K]`` indices of ``M(a(t))_i``.
    """

    counterfactual: Tensor
    realised: Tensor

    def select(self, episodes: Tensor | None = None, agents: Tensor | None = None) -> TableIndex:
        """The index of some episodes (LongTensor ``[E']``) and agents (``[K']``, positions among the ``K``)."""
        memory, realised = self.counterfactual.permute(1, 3, 0, 2), self.realised  # [T, A, E, K]: selected in place
        if episodes is not None:
            memory, realised = memory.index_select(2, episodes), realised.index_select(0, episodes)
        if agents is not None:
            memory, realised = memory.index_select(3, agents), realised.index_select(2, agents)
        return TableIndex(memory.permute(2, 0, 3, 1), realised)

    def gather(self, table: Tensor) -> tuple[Tensor, Tensor]:
        """The counterfactual payoffs ``[E, T, K, A]`` (round-major) and the realised ones ``[E, T, K]``."""
        return _read(table, self.counterfactual, self.realised)


def table_index(traces: Tensor, n_actions: int) -> TableIndex:
    """The :class:`TableIndex` of joint actions ``traces [E, T, N]`` in a table of ``A**N`` joint actions."""
    n_agents = traces.shape[-1]
    with torch.no_grad():
        counterfactual, realised = _flat_indices(traces, n_actions, None, with_realised=True)
    if n_actions**n_agents * n_agents < 2**31:  # half the memory, and index_select takes either
        counterfactual = counterfactual.permute(1, 3, 0, 2).to(torch.int32).permute(2, 0, 3, 1)
        realised = realised.to(torch.int32)
    return TableIndex(counterfactual, realised)


@constant_tensors(maxsize=32)
def _table_offsets(n_agents: int, n_actions: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(N * strides [N], offsets [N * A, A], agents [N], A * agents [N])`` of :func:`gather_counterfactuals`,
    made once per size and device.

    ``offsets[i * A + o, a] = (a - o) * stride_i * N + i`` with ``stride_i = A**(N - 1 - i)``.
    """
    strides = n_actions ** torch.arange(n_agents - 1, -1, -1, device=device)
    agents = torch.arange(n_agents, device=device)[:, None, None]
    actions = torch.arange(n_actions, device=device)
    change = actions[None, None, :] - actions[None, :, None]  # [1, A(o), A(a)]: a - o
    offsets = change * strides[:, None, None] * n_agents + agents  # [N, A, A]
    everyone = agents.reshape(n_agents)
    return strides * n_agents, offsets.reshape(n_agents * n_actions, n_actions), everyone, everyone * n_actions
