"""Q-learning with bandit feedback: only the played action's score moves, towards the realised payoff.

An agent that sees only its own payoff ``r(t) = u(a(t), a_-i(t))`` (not the counterfactual payoffs of the
actions it did not play) updates the score of the action it played::

    Q(1) = q0,    Q_a(t+1) = Q_a(t) + alpha 1[a = a(t)] (r(t) - Q_a(t))                 (B1)
    pi(t) = (1 - epsilon) softmax(beta Q(t)) + epsilon / A                                 (B2)

(B2) is the logit policy of paper Eq. (3). Unlike logit-Q (Eq. 2) the state is not a fixed filter of the
counterfactual payoffs: which score moves depends on the agent's own action. Given the observed actions it
is a time-varying linear filter of the realised payoffs (see :mod:`diml_inverse.dynamics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from mechgym.learners.base import register_learner
from mechgym.learners.logit_q import LogitChoiceLearner


def bandit_q_update(q: Tensor, realised_payoffs: Tensor, actions: Tensor, alpha: float | Tensor) -> Tensor:
    """Eq. (B1): move the played action's score ``alpha`` of the way to the realised payoff.

    Args:
        q: Scores ``[..., A]``.
        realised_payoffs: ``r(t)``, ``[...]``.
        actions: Played actions ``a(t)``, integers ``[...]``.
        alpha: Learning rate.

    Returns:
        ``Q(t+1)``, ``[..., A]``; the scores of the actions not played are returned unchanged.
    """
    played = torch.nn.functional.one_hot(actions.long(), q.shape[-1]).bool()
    return torch.where(played, q + alpha * (realised_payoffs[..., None] - q), q)


@register_learner
@dataclass(frozen=True)
class BanditQ(LogitChoiceLearner):
    """Bandit-feedback Q-learning: the played action's score follows the realised payoff; logit policy.

    ``Q(1) = q0``; after each round ``Q_a <- Q_a + alpha (r - Q_a)`` for the played action ``a`` only, with
    ``r`` its realised payoff (B1); actions are drawn from ``(1 - epsilon) softmax(beta Q) + epsilon / A``
    (B2). :meth:`update` reads only the entry of the counterfactual payoffs at the played action, so the
    learner never uses information a bandit agent does not have.

    Args:
        alpha: Learning rate in (0, 1].
        beta: Inverse temperature, > 0.
        epsilon: Uniform exploration in [0, 1].
        q0: Initial score of every action (optimistic values > typical payoffs encourage trying every action).
    """

    name: ClassVar[str] = "bandit_q"
    feedback: ClassVar[Literal["full", "bandit"]] = "bandit"

    def update(self, state: Tensor, counterfactual_payoffs: Tensor, actions: Tensor) -> Tensor:
        actions = actions.long()
        realised = counterfactual_payoffs.gather(-1, actions[..., None]).squeeze(-1)  # r(t) = u(a(t), a_-i(t))
        return bandit_q_update(state, realised, actions, self.alpha)
