"""Finite games from any mechgym mechanism: mixed profiles, expected payoffs, Nash regret and logit responses.

The observation is a batch of mixed profiles ``sigma`` ``[*batch, N, A]`` (each agent's empirical action
frequencies, e.g. over the last rounds of each episode: :func:`empirical_profiles`). The unknowns are the
mechanism's parameters (all of them by default), shared by every profile of the batch: many observed profiles
of one game. Payoffs come from the mechanism's one payoff implementation, evaluated on every joint action.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from diml_inverse.equilibrium.games import EquilibriumGame
from mechgym.errors import ConfigurationError, suggest
from mechgym.mechanisms import Mechanism, all_joint_actions

__all__ = ["FiniteGame", "empirical_profiles", "expected_payoffs", "project_simplex"]

#: The largest number of joint actions :class:`FiniteGame` enumerates.
MAX_JOINT_ACTIONS = 1 << 16


def expected_payoffs(table: Tensor, profiles: Tensor) -> Tensor:
    """``u_i(a, sigma_-i)``: each agent's expected payoff of each action against the others' mixtures.

    Args:
        table: Payoffs of every joint action ``[A**N, N]`` (the order of ``all_joint_actions``).
        profiles: Mixed profiles ``[*batch, N, A]``.

    Returns:
        ``[*batch, N, A]``.
    """
    n, a = profiles.shape[-2], profiles.shape[-1]
    letters = string.ascii_lowercase[:n]
    grid = table.reshape(*([a] * n), n).to(profiles.dtype)
    rows = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        spec = f"{letters},{','.join('Z' + letters[j] for j in others)}->Z{letters[i]}"
        flat = profiles.reshape(-1, n, a)
        rows.append(torch.einsum(spec, grid[..., i], *(flat[:, j] for j in others)))
    return torch.stack(rows, dim=-2).reshape(profiles.shape)


def project_simplex(values: Tensor) -> Tensor:
    """Euclidean projection of each last-dimension row on the probability simplex."""
    sorted_values = values.sort(dim=-1, descending=True).values
    cumulative = sorted_values.cumsum(-1) - 1
    index = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
    support = (sorted_values - cumulative / index > 0).sum(-1, keepdim=True)
    threshold = cumulative.gather(-1, support - 1) / support.to(values.dtype)
    return (values - threshold).clamp_min(0.0)


def empirical_profiles(actions: Tensor, n_actions: int, last_rounds: int | None = None, pooled: bool = False) -> Tensor:
    """Each agent's action frequencies over the last rounds of each episode.

    Args:
        actions: Joint actions ``[E, T, N]``.
        n_actions: ``A``.
        last_rounds: Use the last this many rounds (default: all).
        pooled: Pool the episodes into one profile (``[1, N, A]``) instead of one per episode (``[E, N, A]``).

    Returns:
        Counts divided by their total per agent, float64.
    """
    counts = empirical_counts(actions, n_actions, last_rounds, pooled)
    return counts / counts.sum(-1, keepdim=True)


def empirical_counts(actions: Tensor, n_actions: int, last_rounds: int | None = None, pooled: bool = False) -> Tensor:
    """The action counts behind :func:`empirical_profiles`: ``[E or 1, N, A]``, float64.

    Raises:
        ConfigurationError: for actions not of shape ``[E, T, N]`` or ``last_rounds`` out of ``[1, T]``.
    """
    if actions.dim() != 3:
        raise ConfigurationError(f"actions must have shape [E, T, N]; got {list(actions.shape)}")
    rounds = actions.shape[1]
    last = rounds if last_rounds is None else last_rounds
    if not 1 <= last <= rounds:
        raise ConfigurationError(f"last_rounds must be in [1, {rounds}] (the rounds recorded); got {last_rounds}")
    window = actions[:, rounds - last :].long()
    counts = torch.nn.functional.one_hot(window, n_actions).sum(1).double()  # [E, N, A]
    return counts.sum(0, keepdim=True) if pooled else counts


class FiniteGame(EquilibriumGame):
    """A finite normal-form game given by a mechgym mechanism, its parameters partly unknown.

    Args:
        mechanism: Any :class:`~mechgym.mechanisms.Mechanism` (a tabular table, a structured family, a network)
            with at most :data:`MAX_JOINT_ACTIONS` joint actions. It is copied; its current parameter values
            are the known values and the starting guess of the unknown ones.
        unknown: Names of the mechanism's parameters to estimate (default: every parameter).
        normalize: Divide the Nash regret by the payoffs' scale (the root mean square of the payoff
            differences over every joint action), so that exploitability cannot be driven to zero by shrinking
            every payoff to zero (the zero mechanism makes every profile an equilibrium). Nash behaviour
            identifies payoffs only up to a positive scale.
    """

    has_best_response = True

    def __init__(self, mechanism: Mechanism, unknown: Sequence[str] | None = None, normalize: bool = True) -> None:
        if not isinstance(mechanism, Mechanism):
            raise ConfigurationError(f"FiniteGame needs a mechgym Mechanism; got {type(mechanism).__name__}")
        if mechanism.n_joint_actions > MAX_JOINT_ACTIONS:
            raise ConfigurationError(
                f"{type(mechanism).__name__} has {mechanism.n_actions}**{mechanism.n_agents} joint actions; "
                f"FiniteGame enumerates at most {MAX_JOINT_ACTIONS}"
            )
        self.mechanism = copy.deepcopy(mechanism).double()
        for parameter in self.mechanism.parameters():
            parameter.requires_grad_(False)
        values = {name: p.detach().clone() for name, p in self.mechanism.named_parameters()}
        names = tuple(values) if unknown is None else tuple(unknown)
        for name in names:
            if name not in values:
                raise ConfigurationError(suggest(name, values, f"parameter of {type(mechanism).__name__}"))
        self.parameter_names = tuple(values)  # type: ignore[misc]  # per instance: the mechanism's parameters
        self.event_dims = {name: value.dim() for name, value in values.items()}  # type: ignore[misc]
        self.default_bounds = {name: (-float("inf"), float("inf")) for name in values}  # type: ignore[misc]
        self.parameters = dict(values)
        self.unknown = names
        self.normalize = normalize
        self.n_agents, self.n_actions = mechanism.n_agents, mechanism.n_actions
        self._joint = all_joint_actions(self.n_agents, self.n_actions)

    def unknown_names(self) -> tuple[str, ...]:
        return self.unknown

    def initial_value(self, name: str, observed: Any, batch: torch.Size) -> Tensor:
        """The mechanism's current value (parameters are shared by the whole batch, never expanded)."""
        value = self.parameters[name]
        if value is None:
            raise ConfigurationError(f"parameter {name!r} has no value to start from")
        return value.clone()

    def batch_shape(self, observed: Any) -> torch.Size:
        return torch.Size(observed.shape[:-2])

    def check_observed(self, observed: Any) -> Tensor:
        profiles = torch.as_tensor(observed, dtype=torch.float64)
        expected = (self.n_agents, self.n_actions)
        if profiles.dim() < 2 or tuple(profiles.shape[-2:]) != expected:
            raise ConfigurationError(
                f"mixed profiles must have shape [..., {expected[0]}, {expected[1]}] (agents x actions); got "
                f"{list(profiles.shape)}"
            )
        if bool((profiles < 0).any()) or not bool(torch.allclose(profiles.sum(-1), torch.ones(()).double())):
            raise ConfigurationError("mixed profiles must be non-negative and sum to one over each agent's actions")
        return profiles

    def observed_batch_shape(self, observed: Any) -> torch.Size:
        return torch.Size(observed.shape[:-2])

    # -- payoffs ---------------------------------------------------------------------------------
    def payoff_table(self, params: Mapping[str, Tensor]) -> Tensor:
        """Payoffs of every joint action ``[A**N, N]`` under ``params`` (differentiable in them)."""
        return functional_call(self.mechanism, dict(params), (self._joint,))

    def payoff_scale(self, table: Tensor) -> Tensor:
        """Root mean square of the payoff differences ``u_i(a, a_-i) - mean_a' u_i(a', a_-i)``."""
        n, a = self.n_agents, self.n_actions
        grid = table.reshape(*([a] * n), n)
        squares = [(grid[..., i] - grid[..., i].mean(dim=i, keepdim=True)) ** 2 for i in range(n)]
        return torch.stack([s.mean() for s in squares]).mean().sqrt()

    def expected_payoffs(self, params: Mapping[str, Tensor], profiles: Tensor) -> Tensor:
        """``u_i(a, sigma_-i)`` ``[*batch, N, A]``."""
        return expected_payoffs(self.payoff_table(params), profiles)

    def regret(self, params: Mapping[str, Tensor], observed: Tensor, deviation: Tensor) -> Tensor:
        table = self.payoff_table(params)
        values = expected_payoffs(table, observed)
        regret = ((deviation - observed) * values).sum((-1, -2))
        return regret / self.payoff_scale(table).clamp_min(1e-12) if self.normalize else regret

    def best_response(self, params: Mapping[str, Tensor], observed: Tensor) -> Tensor:
        values = self.expected_payoffs(params, observed)
        return torch.nn.functional.one_hot(values.argmax(-1), self.n_actions).to(observed.dtype)

    def initial_deviation(self, observed: Tensor) -> Tensor:
        return observed.clone()

    def project_deviation(self, deviation: Tensor) -> Tensor:
        return project_simplex(deviation)

    def fitted_mechanism(self, params: Mapping[str, Tensor]) -> Mechanism:
        """A float32 copy of the mechanism holding ``params`` (a model :func:`diml_inverse.metrics` can score)."""
        fitted = copy.deepcopy(self.mechanism)
        with torch.no_grad():
            for name, parameter in fitted.named_parameters():
                if name in params:
                    parameter.copy_(params[name].detach())
        return fitted.float()
