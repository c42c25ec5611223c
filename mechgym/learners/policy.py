"""Per-agent policies: any :class:`Learner` playing one agent's seat in a PettingZoo loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mechgym.errors import NonFinitePolicyError
from mechgym.learners.base import Learner
from mechgym.random import sample_categorical, uniform
from mechgym.validation import COUNTER_LIMIT, check_int, check_seed


class LearnerPolicy:
    """One agent running a learning rule, drawing from the same counter-based numbers as :func:`mechgym.rollout`.

    Args:
        learner: The learning rule.
        n_actions: Actions available to the agent.
        agent_index: The agent's position ``i`` in ``possible_agents``.
        seed: The rollout seed.
        episode: Episode index (the draw of round ``t`` is ``uniforms(seed, episode, t, agent_index)``).

    Example:
        >>> policies = {a: LearnerPolicy(LogitQ(), 6, i, seed=0) for i, a in enumerate(env.possible_agents)}
        >>> actions = {a: p.act() for a, p in policies.items()}
        >>> _, _, _, _, infos = env.step(actions)
        >>> for a, p in policies.items(): p.observe(infos[a]["counterfactual_payoffs"], actions[a])
    """

    def __init__(self, learner: Learner, n_actions: int, agent_index: int, seed: int, episode: int = 0) -> None:
        self.learner = learner
        self.n_actions = check_int(n_actions, "n_actions", low=2)
        self.agent_index = check_int(agent_index, "agent_index", low=0, high=COUNTER_LIMIT)
        self.seed = check_seed(seed)
        self.reset(episode)

    def reset(self, episode: int) -> None:
        """Start a new episode: the initial state and round 0."""
        self.episode = check_int(episode, "episode", low=0, high=COUNTER_LIMIT)
        self.round = 0
        self.state = self.learner.initial_state((), self.n_actions)

    def probabilities(self) -> np.ndarray:
        """Current choice probabilities ``[A]``."""
        return self.learner.policy(self.state).numpy()

    def act(self, observation: Any = None) -> int:
        """Draw this round's action (the observation is not used by stateless-game learners)."""
        u = torch.tensor(uniform(self.seed, self.episode, self.round, self.agent_index), dtype=torch.float32)
        probabilities = self.learner.policy(self.state)
        if not bool(torch.isfinite(probabilities).all()):
            raise NonFinitePolicyError(
                f"the choice probabilities of agent {self.agent_index} ({self.learner!r}) are not finite in episode "
                f"{self.episode}, round {self.round}: payoffs times the learner's sensitivity overflowed or the "
                "mechanism returned NaN. Scale the payoffs down, use a smaller beta/eta, or check the mechanism"
            )
        return int(sample_categorical(probabilities, u))

    def observe(self, counterfactual_payoffs: Any, action: int) -> None:
        """Update from this round's counterfactual payoffs ``[A]`` and own action; advance the round."""
        payoffs = torch.as_tensor(np.asarray(counterfactual_payoffs), dtype=self.state.dtype)
        self.state = self.learner.update(self.state, payoffs, torch.tensor(int(action)))
        self.round += 1
