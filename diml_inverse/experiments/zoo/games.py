"""The recovery zoo's mechanisms: ten families that are not the paper's E1–E4 games.

They are ordinary third-party mechanisms (subclasses of :class:`~mechgym.mechanisms.Mechanism` or
:class:`~mechgym.mechanisms.AnonymousMechanism`), registered with :func:`mechgym.register` by
:func:`diml_inverse.experiments.zoo.register_zoo`, so the zoo also exercises the plugin path. Every family draws its
random parameters from a ``torch.Generator`` seeded with ``seed`` (the game's ``mechanism_seed``), is batched in
torch (joint actions ``[..., N]`` to payoffs ``[..., N]``) and multiplies its payoffs by ``scale`` (weak to strong
incentives). The parameters are buffers: the game freezes the mechanism and ``fit`` never trains the truth.

Shapes: ``N`` agents, ``A`` actions, ``...`` any leading batch dimensions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mechgym.errors import ConfigurationError
from mechgym.mechanisms import AnonymousMechanism, Mechanism
from mechgym.validation import check_seed

__all__ = [
    "AntiCoordinationMechanism",
    "CoordinationMechanism",
    "ElFarolMechanism",
    "PluralityVotingMechanism",
    "PolymatrixMechanism",
    "PolynomialCongestionMechanism",
    "RandomNormalFormMechanism",
    "ShapleyCostSharingMechanism",
    "ThresholdParticipationMechanism",
    "ThresholdPublicGoodMechanism",
    "seeded_generator",
]


def seeded_generator(seed: int | None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (``None``: seed 0, so that every draw is reproducible)."""
    return torch.Generator().manual_seed(check_seed(0 if seed is None else seed, "the mechanism seed"))


def check_scale(scale: float) -> float:
    """``scale`` as a float, refusing what is not a finite positive number."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < float(scale) < float("inf"):
        raise ConfigurationError(f"scale must be a finite number > 0; got {scale!r}")
    return float(scale)


def uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    """``U(low, high)`` draws of ``shape`` from ``generator``."""
    return low + (high - low) * torch.rand(shape, generator=generator)


def others_matching(joint_actions: Tensor) -> Tensor:
    """How many *other* agents play the same action as each agent: ``[..., N]``."""
    return (joint_actions[..., :, None] == joint_actions[..., None, :]).sum(-1) - 1


def own_counts(joint_actions: Tensor, dtype: torch.dtype) -> Tensor:
    """Agents on each agent's own action, itself included: ``[..., N]``."""
    return (others_matching(joint_actions) + 1).to(dtype)


class ZooMechanism(Mechanism):
    """A non-anonymous zoo family: sizes, ``scale`` and ``config`` (subclasses set ``family`` and ``forward``)."""

    def __init__(self, n_agents: int, n_actions: int, scale: float) -> None:
        super().__init__(n_agents, n_actions)
        self.scale = check_scale(scale)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "scale": self.scale}

    def agent_index(self, joint_actions: Tensor) -> Tensor:
        """``arange(N)`` on the device of ``joint_actions`` (to index per-agent tables)."""
        return torch.arange(self.n_agents, device=joint_actions.device)


class RandomNormalFormMechanism(ZooMechanism):
    """A random normal-form game: ``u_i(a) = scale * G[a, i]`` with a Gaussian table ``G ~ N(0, 1)`` of
    ``A**N x N`` entries, one independent payoff per agent and joint action (no structure at all).
    """

    family = "zoo_random_normal_form"
    table: Tensor
    strides: Tensor

    def __init__(self, n_agents: int = 3, n_actions: int = 5, scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions, scale)
        if self.n_joint_actions > 1 << 16:
            raise ConfigurationError(f"a random normal-form table of {self.n_joint_actions} joint actions is too large")
        table = torch.randn(self.n_joint_actions, self.n_agents, generator=seeded_generator(seed))
        self.register_buffer("table", table)
        strides = self.n_actions ** torch.arange(self.n_agents - 1, -1, -1)
        self.register_buffer("strides", strides)

    def forward(self, joint_actions: Tensor) -> Tensor:
        index = (joint_actions * self.strides).sum(-1)
        return self.scale * self.table[index]


class PolymatrixMechanism(ZooMechanism):
    """A polymatrix (network) game: ``u_i(a) = scale * sum_j E[i, j] B[i, j, a_i, a_j] / deg(i)`` on a random
    undirected graph ``E`` (each edge with probability ``edge_probability``, plus a ring so no agent is isolated)
    with Gaussian bimatrices ``B ~ N(0, 1)``.
    """

    family = "zoo_polymatrix"
    weights: Tensor
    bimatrices: Tensor

    def __init__(
        self,
        n_agents: int = 4,
        n_actions: int = 4,
        edge_probability: float = 0.5,
        scale: float = 1.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(n_agents, n_actions, scale)
        generator = seeded_generator(seed)
        n = self.n_agents
        upper = torch.triu(torch.rand(n, n, generator=generator) < edge_probability, diagonal=1)
        ring = torch.zeros(n, n, dtype=torch.bool)
        ring[torch.arange(n), (torch.arange(n) + 1) % n] = True
        edges = upper | upper.T | ring | ring.T
        edges.fill_diagonal_(False)
        weights = edges.float() / edges.sum(-1, keepdim=True).float()
        self.register_buffer("weights", weights)  # [N, N], rows sum to 1
        self.register_buffer("bimatrices", torch.randn(n, n, self.n_actions, self.n_actions, generator=generator))

    def forward(self, joint_actions: Tensor) -> Tensor:
        i = self.agent_index(joint_actions)
        own = joint_actions[..., :, None]  # [..., N, 1]
        other = joint_actions[..., None, :]  # [..., 1, N]
        pair = self.bimatrices[i[:, None], i[None, :], own, other]  # [..., N, N]
        return self.scale * (self.weights * pair).sum(-1)


class CoordinationMechanism(ZooMechanism):
    """Coordination with heterogeneous tastes: ``u_i(a) = scale * w[i, a_i] * (others on a_i) / (N - 1)`` with
    ``w ~ U(0.5, 1.5)`` per agent and action.
    """

    family = "zoo_coordination"
    w: Tensor

    def __init__(self, n_agents: int = 3, n_actions: int = 4, scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions, scale)
        self.register_buffer("w", uniform(seeded_generator(seed), 0.5, 1.5, self.n_agents, self.n_actions))

    def forward(self, joint_actions: Tensor) -> Tensor:
        alike = others_matching(joint_actions).to(self.w.dtype) / (self.n_agents - 1)
        return self.scale * self.w[self.agent_index(joint_actions), joint_actions] * alike


class AntiCoordinationMechanism(ZooMechanism):
    """Anti-coordination: ``u_i(a) = scale * (b[i, a_i] - c[i] * (others on a_i) / (N - 1))`` with action values
    ``b ~ U(0, 0.5)`` and crowding aversions ``c ~ U(0.5, 1.5)`` per agent.
    """

    family = "zoo_anti_coordination"
    b: Tensor
    c: Tensor

    def __init__(self, n_agents: int = 4, n_actions: int = 3, scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions, scale)
        generator = seeded_generator(seed)
        self.register_buffer("b", uniform(generator, 0.0, 0.5, self.n_agents, self.n_actions))
        self.register_buffer("c", uniform(generator, 0.5, 1.5, self.n_agents))

    def forward(self, joint_actions: Tensor) -> Tensor:
        crowd = others_matching(joint_actions).to(self.b.dtype) / (self.n_agents - 1)
        return self.scale * (self.b[self.agent_index(joint_actions), joint_actions] - self.c * crowd)


class ShapleyCostSharingMechanism(ZooMechanism):
    """Shapley cost sharing of facility costs: each action opens (or joins) a facility of cost ``c[f]``, split
    equally among its users (the Shapley value of a fixed cost); agent ``i`` values facility ``f`` at ``v[i, f]``::

        u_i(a) = scale * (v[i, a_i] - c[a_i] / load(a_i)),   c ~ U(0.5, 2), v ~ U(0, 1).
    """

    family = "zoo_shapley_cost_sharing"
    cost: Tensor
    value: Tensor

    def __init__(self, n_agents: int = 4, n_actions: int = 4, scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions, scale)
        generator = seeded_generator(seed)
        self.register_buffer("cost", uniform(generator, 0.5, 2.0, self.n_actions))
        self.register_buffer("value", uniform(generator, 0.0, 1.0, self.n_agents, self.n_actions))

    def forward(self, joint_actions: Tensor) -> Tensor:
        load = own_counts(joint_actions, self.cost.dtype)
        value = self.value[self.agent_index(joint_actions), joint_actions]
        return self.scale * (value - self.cost[joint_actions] / load)


class PluralityVotingMechanism(ZooMechanism):
    """Plurality voting: each action is a vote for one of ``A`` options; the option with the most votes wins (ties
    broken by a seeded priority order), and a voter is paid ``scale * r[i, a_i]`` when its option wins, 0 otherwise
    (``r ~ U(0.5, 1.5)``: how much agent ``i`` cares for each option).
    """

    family = "zoo_plurality_voting"
    reward: Tensor
    priority: Tensor

    def __init__(self, n_agents: int = 4, n_actions: int = 3, scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions, scale)
        generator = seeded_generator(seed)
        self.register_buffer("reward", uniform(generator, 0.5, 1.5, self.n_agents, self.n_actions))
        # a tie-break in (0, 1): never outweighs one vote
        self.register_buffer("priority", (torch.randperm(self.n_actions, generator=generator) + 1.0) / (n_actions + 1))

    def forward(self, joint_actions: Tensor) -> Tensor:
        votes = torch.nn.functional.one_hot(joint_actions, self.n_actions).sum(-2).to(self.priority.dtype)
        winner = (votes + self.priority).argmax(-1, keepdim=True)  # [..., 1]
        won = (joint_actions == winner).to(self.reward.dtype)
        return self.scale * self.reward[self.agent_index(joint_actions), joint_actions] * won


class ThresholdParticipationMechanism(ZooMechanism):
    """Threshold participation: action ``k`` contributes ``k / (A - 1)`` at a private cost ``c[i] * k / (A - 1)``; the
    project succeeds when the contributions reach ``threshold`` and then pays each agent its value ``v[i]``::

        u_i(a) = scale * (v[i] * 1[sum_j a_j / (A - 1) >= threshold] - c[i] * a_i / (A - 1)),

    ``v ~ U(0.8, 1.6)``, ``c ~ U(0.2, 0.6)``, ``threshold ~ U(0.3, 0.6) * N``.
    """

    family = "zoo_threshold_participation"
    value: Tensor
    cost: Tensor
    threshold: Tensor

    def __init__(self, n_agents: int = 4, n_actions: int = 3, scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions, scale)
        generator = seeded_generator(seed)
        self.register_buffer("value", uniform(generator, 0.8, 1.6, self.n_agents))
        self.register_buffer("cost", uniform(generator, 0.2, 0.6, self.n_agents))
        self.register_buffer("threshold", uniform(generator, 0.3, 0.6) * self.n_agents)

    def forward(self, joint_actions: Tensor) -> Tensor:
        effort = joint_actions.to(self.value.dtype) / (self.n_actions - 1)
        # a whole number of steps (A - 1 per unit), compared exactly
        success = (joint_actions.sum(-1, keepdim=True) >= self.threshold * (self.n_actions - 1)).to(effort.dtype)
        return self.scale * (self.value * success - self.cost * effort)


# -- anonymous games (20-100 agents) ------------------------------------------------------------------------------
class ZooAnonymousMechanism(AnonymousMechanism):
    """An anonymous zoo family: sizes, ``scale`` and ``config`` (subclasses write ``payoff_from_counts``)."""

    def __init__(self, n_agents: int, n_actions: int, scale: float) -> None:
        super().__init__(n_agents, n_actions)
        self.scale = check_scale(scale)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "scale": self.scale}


def own_action_count(actions: Tensor, other_counts: Tensor) -> Tensor:
    """The others on one's own action: ``other_counts[..., actions]``, shape of ``actions`` broadcast."""
    shape = torch.broadcast_shapes(actions.shape, other_counts.shape[:-1])
    index = actions.expand(shape)[..., None]
    return other_counts.expand(*shape, other_counts.shape[-1]).gather(-1, index).squeeze(-1)


class ElFarolMechanism(ZooAnonymousMechanism):
    """El Farol / minority: action 0 stays home (payoff 0); action ``k >= 1`` goes to bar ``k``, which is fun
    (``+g[k]``) when the share of the others there is below its capacity ``cap[k]`` and crowded (``-h[k]``)
    otherwise::

        u_i = scale * (g[a] * 1[c_-i[a] / (N - 1) < cap[a]] - h[a] * 1[c_-i[a] / (N - 1) >= cap[a]]),  a = a_i >= 1

    ``g ~ U(0.5, 1.5)``, ``h ~ U(0.5, 1.5)``, ``cap ~ U(0.2, 0.6) / (A - 1)`` per bar.
    """

    family = "zoo_el_farol"
    good: Tensor
    bad: Tensor
    capacity: Tensor

    def __init__(self, n_agents: int = 50, n_actions: int = 3, scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions, scale)
        generator = seeded_generator(seed)
        home = torch.zeros(1)
        bars = self.n_actions - 1
        self.register_buffer("good", torch.cat([home, uniform(generator, 0.5, 1.5, bars)]))
        self.register_buffer("bad", torch.cat([home, uniform(generator, 0.5, 1.5, bars)]))
        # capacities in agents (of the N - 1 others), so the comparison is exact on counts
        capacity = torch.cat([torch.full((1,), float(n_agents)), uniform(generator, 0.2, 0.6, bars) / max(bars, 1)])
        self.register_buffer("capacity", capacity * (self.n_agents - 1))

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        crowd = own_action_count(actions, other_counts)
        fun = crowd < self.capacity[actions]
        return self.scale * torch.where(fun, self.good[actions], -self.bad[actions])


class ThresholdPublicGoodMechanism(ZooAnonymousMechanism):
    """A threshold public good: action ``k`` contributes ``k / (A - 1)`` at cost ``cost * k / (A - 1)``; when the
    total reaches ``threshold`` every agent gets ``benefit``::

        u_i = scale * (benefit * 1[total >= threshold] - cost * a_i / (A - 1)),

    ``benefit ~ U(0.8, 1.2)``, ``cost ~ U(0.3, 0.7)``, ``threshold ~ U(0.3, 0.6) * N`` (in contribution units).
    """

    family = "zoo_threshold_public_good"
    benefit: Tensor
    cost: Tensor
    threshold_steps: Tensor
    levels: Tensor

    def __init__(self, n_agents: int = 30, n_actions: int = 4, scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(n_agents, n_actions, scale)
        generator = seeded_generator(seed)
        self.register_buffer("benefit", uniform(generator, 0.8, 1.2))
        self.register_buffer("cost", uniform(generator, 0.3, 0.7))
        # in whole contribution steps (A - 1 per unit), so the comparison is exact
        steps = torch.ceil(uniform(generator, 0.3, 0.6) * self.n_agents * (self.n_actions - 1))
        self.register_buffer("threshold_steps", steps)
        self.register_buffer("levels", torch.arange(self.n_actions, dtype=torch.float32))

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        others = (other_counts * self.levels).sum(-1)  # contribution steps of the others
        total = others + self.levels[actions]
        success = (total >= self.threshold_steps).to(others.dtype)
        return self.scale * (self.benefit * success - self.cost * self.levels[actions] / (self.n_actions - 1))


class PolynomialCongestionMechanism(ZooAnonymousMechanism):
    """Congestion with BPR latency: route ``a`` with load ``l`` (agents on it, oneself included) costs::

        u_i = -scale * t0[a] * (1 + 0.15 * (l / capacity[a]) ** power),

    ``t0 ~ U(0.5, 1.5)``, ``capacity ~ U(1, 2) * N / A``, ``power = 4`` (the Bureau of Public Roads' curve).
    """

    family = "zoo_polynomial_congestion"
    free_flow: Tensor
    capacity: Tensor

    def __init__(
        self, n_agents: int = 60, n_actions: int = 5, power: float = 4.0, scale: float = 1.0, seed: int | None = 0
    ) -> None:
        super().__init__(n_agents, n_actions, scale)
        self.power = check_scale(power)
        generator = seeded_generator(seed)
        self.register_buffer("free_flow", uniform(generator, 0.5, 1.5, self.n_actions))
        capacity = uniform(generator, 1.0, 2.0, self.n_actions) * self.n_agents / self.n_actions
        self.register_buffer("capacity", capacity)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "power": self.power}

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        load = own_action_count(actions, other_counts) + 1.0
        ratio = load / self.capacity[actions]
        return -self.scale * self.free_flow[actions] * (1.0 + 0.15 * ratio**self.power)
