"""Support: which counterfactual contexts the training traces visit, and which asked payoff differences lie off it.

The likelihood (Eq. 5) sees the mechanism only through the counterfactual payoffs ``u_i(., a_-i(t))`` of the
contexts ``(i, a_-i(t))`` that the recorded rounds ``t = 1..T-1`` visit (Eq. 1). At such a context every payoff
difference ``u_i(a, a_-i) - u_i(a', a_-i)`` is identified (Theorem 1); at a context no round visited, the
fitted value is the model's extrapolation, which no data checked. :class:`Support` counts the visits per agent
and flags queried joint actions whose context was never visited.

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents, ``A`` actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mechgym.errors import ConfigurationError
from mechgym.mechanisms import validate_joint_actions

__all__ = ["Support", "context_keys", "training_support"]


def context_keys(joint_actions: Tensor | np.ndarray, n_actions: int) -> np.ndarray:
    """An integer key per agent for the others' actions ``a_-i`` of each joint action, ``[..., N]``.

    Key ``[..., i]`` is ``a_-i`` read as a number in base ``A`` (agents in index order, ``i`` left out), so two
    joint actions share agent ``i``'s key exactly when the other agents played the same actions.

    Raises:
        ConfigurationError: ``A ** (N - 1)`` does not fit a 63-bit key (use contexts of anonymous counts there).
    """
    joint = np.asarray(joint_actions.cpu() if isinstance(joint_actions, Tensor) else joint_actions, dtype=np.int64)
    n_agents = joint.shape[-1]
    if n_agents > 1 and (n_agents - 1) * np.log2(max(n_actions, 2)) > 62:
        raise ConfigurationError(
            f"{n_agents} agents x {n_actions} actions have {n_actions}^{n_agents - 1} contexts per agent, too many "
            "to key exactly; the support analysis covers games with A^(N-1) < 2^62"
        )
    weights = n_actions ** np.arange(n_agents - 1, -1, -1, dtype=np.int64)  # base-A place values of all N agents
    full = (joint * weights).sum(-1, keepdims=True)  # the whole joint action as one number
    own = joint * weights
    # leaving agent i out: the digits above i move down one place
    above = full // (weights * n_actions) * (weights * n_actions)
    below = full - above - own
    return above // n_actions + below


@dataclass(frozen=True)
class Support:
    """The counterfactual contexts ``(i, a_-i)`` visited by the rounds that enter the likelihood.

    Attributes:
        n_agents: Agents ``N``.
        n_actions: Actions ``A``.
        visits: Per agent, a dict from context key (:func:`context_keys`) to the number of rounds that visited it.
        n_rounds_seen: Rounds counted (``E (T - 1)``).
    """

    n_agents: int
    n_actions: int
    visits: tuple[dict[int, int], ...]
    n_rounds_seen: int

    @property
    def n_contexts(self) -> int:
        """Contexts per agent, ``A ** (N - 1)``."""
        return int(self.n_actions ** (self.n_agents - 1))

    @property
    def n_visited(self) -> list[int]:
        """Distinct contexts visited, per agent."""
        return [len(agent) for agent in self.visits]

    def visit_counts(self, agent: int) -> np.ndarray:
        """How often each visited context of ``agent`` was visited, largest first."""
        return np.sort(np.fromiter(self.visits[agent].values(), dtype=np.int64))[::-1]

    def on_support(self, joint_actions: Tensor | np.ndarray) -> np.ndarray:
        """Whether agent ``i``'s context of each joint action was visited, bool ``[..., N]``.

        Raises:
            InvalidActionError: joint actions outside ``[0, A)`` or without the last axis ``N``.
        """
        joint = torch.as_tensor(np.asarray(joint_actions.cpu() if isinstance(joint_actions, Tensor) else joint_actions))
        validate_joint_actions(joint, self.n_agents, self.n_actions, "the support's game")
        keys = context_keys(joint, self.n_actions)
        flags = np.zeros(keys.shape, dtype=bool)
        for agent, seen in enumerate(self.visits):
            flags[..., agent] = np.isin(keys[..., agent], np.fromiter(seen, dtype=np.int64, count=len(seen)))
        return flags


def training_support(actions: Tensor | np.ndarray, n_actions: int) -> Support:
    """The :class:`Support` of traces ``[E, T, N]``: contexts of rounds ``1..T-1`` (the ones Eq. 1 evaluates).

    Raises:
        ConfigurationError: actions that are not ``[E, T, N]`` with ``T >= 2``, or too many contexts to key.
    """
    array = np.asarray(actions.cpu() if isinstance(actions, Tensor) else actions)
    if array.ndim != 3 or array.shape[1] < 2:
        raise ConfigurationError(f"the support needs actions [E, T, N] with T >= 2; got shape {array.shape}")
    keys = context_keys(array[:, :-1].reshape(-1, array.shape[2]), n_actions)
    visits = []
    for agent in range(array.shape[2]):
        values, counts = np.unique(keys[:, agent], return_counts=True)
        visits.append(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    return Support(array.shape[2], n_actions, tuple(visits), int(keys.shape[0]))
