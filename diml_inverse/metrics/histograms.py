"""Joint-action histograms and the plug-in KL between them (the counterfactual metric's statistics).

:func:`joint_action_histogram` bins pooled joint actions exactly (small games), by action-count vector
(anonymous games), by pooled action (population shares) or by the published script's index-sum hash;
:func:`empirical_kl` is the plug-in ``KL(p || q)`` of two datasets' histograms on the union of their
supports, with the reference's ``1e-12`` floor. :mod:`diml_inverse.metrics` re-exports all of them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mechgym.errors import ConfigurationError, InvalidActionError
from mechgym.mechanisms import action_counts, validate_joint_actions

__all__ = [
    "KL_FLOOR",
    "MAX_JOINT_HISTOGRAM_SIZE",
    "HistogramKind",
    "empirical_kl",
    "histogram_kl",
    "joint_action_histogram",
    "resolve_kind",
]

HistogramKind = Literal["auto", "joint", "counts", "actions", "index_sum"]

#: ``kind="auto"`` bins by exact joint action when ``A**N`` is at most this, else by action-count vector.
MAX_JOINT_HISTOGRAM_SIZE = 1 << 20
#: Floor on the fitted histogram's probabilities inside the KL's logarithm (as in the reference).
KL_FLOOR = 1e-12


def resolve_kind(kind: str, n_agents: int, n_actions: int) -> str:
    """The binning ``kind`` means for a game of ``n_agents x n_actions`` (``"auto"`` resolved), or a clear error."""
    if kind not in ("auto", "joint", "counts", "actions", "index_sum"):
        raise ConfigurationError(f"kind must be 'auto', 'joint', 'counts', 'actions' or 'index_sum'; got {kind!r}")
    if kind == "auto":
        return "joint" if n_actions**n_agents <= MAX_JOINT_HISTOGRAM_SIZE else "counts"
    if kind == "joint" and n_actions**n_agents >= 1 << 63:
        raise ConfigurationError(
            f"kind='joint' needs A**N < 2**63 to index joint actions; got {n_actions}**{n_agents}. Use kind='counts'"
        )
    return kind


def _histogram_keys(actions: Tensor, n_actions: int, kind: str) -> Tensor:
    """The bin of every pooled joint action ``[M, N]``: ``[M, 1]`` (joint index, index sum) or ``[M, A]``."""
    n_agents = actions.shape[-1]
    if kind == "joint":
        strides = n_actions ** torch.arange(n_agents - 1, -1, -1, device=actions.device)
        return (actions * strides).sum(-1, keepdim=True)
    if kind == "counts":
        return action_counts(actions, n_actions, torch.long)
    if kind == "actions":
        return actions.reshape(-1, 1)
    return actions.sum(-1, keepdim=True)  # "index_sum": the reference script's flawed hash


def _pooled(actions: Tensor, n_actions: int, name: str) -> Tensor:
    if not isinstance(actions, Tensor) or actions.dim() < 2:
        shape = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
        raise InvalidActionError(
            f"{name} must be an integer tensor [..., N] of joint actions (e.g. [E, T, N]); got {shape}"
        )
    validate_joint_actions(actions, actions.shape[-1], n_actions, where=name)
    return actions.reshape(-1, actions.shape[-1]).long()


def joint_action_histogram(actions: Tensor, n_actions: int, kind: HistogramKind = "auto") -> tuple[Tensor, Tensor]:
    """Histogram of every joint action pooled over episodes and time.

    Kinds:
        ``"joint"``: exact joint actions (a ``bincount`` of the joint-action index when ``A**N`` is at most
        :data:`MAX_JOINT_HISTOGRAM_SIZE`). ``"counts"``: the action-count vector ``[A]`` of each joint action
        (the bins of an anonymous game). ``"actions"``: every agent's action pooled, i.e. the population's
        action shares (``[A]`` bins; a low-dimensional summary for games so large that almost every count
        vector is seen once, where the ``"counts"`` KL saturates at ``log(1 / floor) - log(samples)``).
        ``"index_sum"``: the sum of the action indices, the reference script's large-game hash, which merges
        different count vectors (paper-compatible, not a histogram of profiles; use only to compare with its
        figures). ``"auto"``: ``"joint"`` when ``A**N`` is at
        most :data:`MAX_JOINT_HISTOGRAM_SIZE`, else ``"counts"``.

    Args:
        actions: Joint actions LongTensor ``[..., N]`` (e.g. ``[E, T, N]``).
        n_actions: ``A``.
        kind: The binning.

    Returns:
        ``(support, counts)``: the non-empty bins in ascending order, labelled by a LongTensor ``[K, D]``
        (``D = N``: the joint actions for ``"joint"``; ``D = A``: count vectors; ``D = 1``: actions or index
        sums), and their counts ``[K]`` (summing to the number of pooled joint actions, times ``N`` for
        ``"actions"``).

    Raises:
        InvalidActionError: actions of the wrong shape, dtype or range.
        ConfigurationError: an unknown ``kind``.
    """
    pooled = _pooled(actions, n_actions, "actions")
    n_agents = pooled.shape[-1]
    binning = resolve_kind(kind, n_agents, n_actions)
    keys = _histogram_keys(pooled, n_actions, binning)
    if binning == "joint" and n_actions**n_agents <= MAX_JOINT_HISTOGRAM_SIZE:
        dense = torch.bincount(keys[:, 0], minlength=n_actions**n_agents)
        index = dense.nonzero()[:, 0]
        counts = dense[index]
    else:
        support, counts = torch.unique(keys, dim=0, return_counts=True)
        if binning != "joint":
            return support, counts
        index = support[:, 0]
    strides = n_actions ** torch.arange(n_agents - 1, -1, -1, device=index.device)
    return (index[:, None] // strides) % n_actions, counts


def histogram_kl(p_counts: Tensor, q_counts: Tensor, floor: float = KL_FLOOR) -> float:
    """``KL(p || q) = sum_{p > 0} p log(p / max(q, floor))`` of two histograms on a common support.

    Args:
        p_counts: Counts (or unnormalised weights) ``[K]`` of the reference distribution (the truth).
        q_counts: Counts ``[K]`` on the same bins (the fit); normalised separately.
        floor: Lower bound on ``q`` inside the logarithm, so bins the fit never visits cost
            ``p log(p / floor)`` instead of infinity (the reference's 1e-12).

    Raises:
        ConfigurationError: shapes differ, a histogram is empty or negative, or ``floor <= 0``.
    """
    if p_counts.shape != q_counts.shape or p_counts.dim() != 1:
        raise ConfigurationError(
            f"histograms must be 1-D on the same bins; got shapes {tuple(p_counts.shape)} and {tuple(q_counts.shape)}"
        )
    if not floor > 0:
        raise ConfigurationError(f"floor must be > 0; got {floor}")
    p, q = p_counts.double(), q_counts.to(p_counts.device).double()
    if bool((p < 0).any() | (q < 0).any()) or not (p.sum() > 0 and q.sum() > 0):
        raise ConfigurationError("histograms must be non-negative with a positive total")
    p, q = p / p.sum(), q / q.sum()
    visited = p > 0
    terms = p * (torch.log(torch.where(visited, p, 1.0)) - torch.log(q.clamp(min=floor)))
    return float(torch.where(visited, terms, 0.0).sum().detach().cpu())


def empirical_kl(
    p_actions: Tensor, q_actions: Tensor, n_actions: int, kind: HistogramKind = "auto", floor: float = KL_FLOOR
) -> float:
    """Plug-in ``KL(p || q)`` of the pooled joint-action histograms of two datasets (see :func:`histogram_kl`).

    Both histograms are built on the union of their supports (a ``bincount`` over joint-action indices for
    small games, ``torch.unique`` over the concatenated bin labels otherwise), with the binning of
    :func:`joint_action_histogram`.

    Args:
        p_actions: Reference joint actions ``[..., N]`` (the truth's simulation).
        q_actions: Joint actions ``[..., N]`` of the other dataset (moved to ``p_actions``' device).
        n_actions: ``A``.
        kind: The binning (``"auto"``, ``"joint"``, ``"counts"``, ``"actions"`` or the flawed
            ``"index_sum"``).
        floor: Lower bound on ``q`` inside the logarithm.

    Raises:
        InvalidActionError: malformed actions or different numbers of agents.
        ConfigurationError: an unknown ``kind`` or a bad ``floor``.
    """
    p_pooled = _pooled(p_actions, n_actions, "p_actions")
    q_pooled = _pooled(q_actions, n_actions, "q_actions").to(p_pooled.device)
    n_agents = p_pooled.shape[-1]
    if q_pooled.shape[-1] != n_agents:
        raise InvalidActionError(
            f"both datasets must have the same number of agents; got {n_agents} and {q_pooled.shape[-1]}"
        )
    binning = resolve_kind(kind, n_agents, n_actions)
    p_keys, q_keys = _histogram_keys(p_pooled, n_actions, binning), _histogram_keys(q_pooled, n_actions, binning)
    if binning == "joint" and n_actions**n_agents <= MAX_JOINT_HISTOGRAM_SIZE:
        size = n_actions**n_agents
        p_bins, q_bins, n_bins = p_keys[:, 0], q_keys[:, 0], size
    else:
        _, inverse = torch.unique(torch.cat([p_keys, q_keys]), dim=0, return_inverse=True)
        p_bins, q_bins = inverse[: p_keys.shape[0]], inverse[p_keys.shape[0] :]
        n_bins = int(inverse.max()) + 1
    return histogram_kl(torch.bincount(p_bins, minlength=n_bins), torch.bincount(q_bins, minlength=n_bins), floor=floor)
