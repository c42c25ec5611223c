"""A toy third-party game, registered for the whole session by tests/conftest.py.

It goes through :func:`mechgym.registration.register` as a user's game would, so every test parametrised over
``registered_ids()`` (tests/test_conformance.py, tests/test_ecosystem.py, tests/mechgym/test_single_agent.py)
shows that such games are picked up like the built-in ones, whatever order the files are collected in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechgym import registration
from mechgym.env import MechanismGameEnv, RenderMode
from mechgym.mechanisms import AnonymousMechanism

TOY_ID = "testns/Toy-v0"


class MinorityMechanism(AnonymousMechanism):
    """A minority game: ``u_i = bonus[a_i] - (share of the others on a_i)``."""

    family = "test_minority"

    def __init__(self, n_agents: int = 3, n_actions: int = 2) -> None:
        super().__init__(n_agents, n_actions)
        self.register_buffer("bonus", torch.linspace(0.0, 0.5, self.n_actions))

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        crowd = other_counts.gather(-1, actions[..., None]).squeeze(-1) / (self.n_agents - 1)
        return self.bonus[actions] - crowd


def make_toy_env(
    n_agents: int = 3,
    n_actions: int = 2,
    n_rounds: int = 8,
    counterfactual_info: bool = True,
    render_mode: RenderMode | None = None,
) -> MechanismGameEnv:
    """The toy game's entry point."""
    mechanism = MinorityMechanism(n_agents, n_actions).freeze()
    return MechanismGameEnv(mechanism, n_rounds, counterfactual_info=counterfactual_info, render_mode=render_mode)


def register_toy_game() -> None:
    """Register :data:`TOY_ID` (once per session, before collection)."""
    registration.register(TOY_ID, make_toy_env, {"n_agents": 3, "n_actions": 2, "n_rounds": 8})
