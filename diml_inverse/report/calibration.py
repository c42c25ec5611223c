"""Calibration: the fit's one-step-ahead action probabilities against the observed action frequencies, by round.

At every round ``t >= 2`` of every episode the fitted learner, driven by the fitted mechanism's counterfactual
payoffs of the observed history (Eq. 1-3, or the assumed rule's dynamics), gives each agent a distribution
over actions. Averaged over episodes and agents it is the predicted action frequency of round ``t``; the
observed one is the share of agents that played each action. A calibrated fit puts the two curves on top of
each other (up to the sampling noise of ``E N`` draws per round), on held-out episodes especially.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diml_inverse.dynamics import Unroll, dynamics_for
from diml_inverse.result import FitResult
from mechgym.devices import device_of
from mechgym.errors import ConfigurationError
from mechgym.traces import TraceDataset

__all__ = ["Calibration", "calibration"]


@dataclass(frozen=True)
class Calibration:
    """Predicted and observed action frequencies of rounds ``2..T``, pooled over episodes and agents.

    Attributes:
        predicted: Mean fitted probability of each action, ``[T-1, A]`` (rows sum to 1).
        observed: Share of agent-episodes that played each action, ``[T-1, A]``.
        n_draws: Actions behind each row of ``observed`` (``E N`` per round).
        rounds_per_row: Rounds pooled in each row (1; more after :meth:`binned`).
        rounds: The (middle) round of each row, 1-based; ``None``: rows are rounds ``2..T``.
    """

    predicted: np.ndarray
    observed: np.ndarray
    n_draws: int
    rounds_per_row: int = 1
    rounds: np.ndarray | None = None

    @property
    def round_centres(self) -> np.ndarray:
        """The round of each row (the middle of a bin), 1-based."""
        return self.rounds if self.rounds is not None else np.arange(2, self.predicted.shape[0] + 2, dtype=float)

    def binned(self, min_draws: int = 300) -> Calibration:
        """Rounds pooled into consecutive bins of at least ``min_draws`` draws (or of one round), for plotting.

        Returns:
            A :class:`Calibration` with one row per bin (the last bin may be shorter) and ``n_draws`` per bin.
        """
        width = max(1, -(-min_draws // self.n_draws))  # ceil
        n_rows = self.predicted.shape[0]
        starts = range(0, n_rows, width)
        predicted = np.stack([self.predicted[k : k + width].mean(0) for k in starts])
        observed = np.stack([self.observed[k : k + width].mean(0) for k in starts])
        rounds = np.array([self.round_centres[k : k + width].mean() for k in starts])
        return Calibration(predicted, observed, self.n_draws * min(width, n_rows), width, rounds)

    @property
    def max_abs_error(self) -> float:
        """The largest ``|predicted - observed|`` over rounds and actions."""
        return float(np.abs(self.predicted - self.observed).max())

    @property
    def noise_floor(self) -> float:
        """What ``max_abs_error`` is expected to reach by sampling alone: two binomial SEs at the worst action."""
        p = self.predicted
        return float(2.0 * np.sqrt(p * (1.0 - p) / self.n_draws).max())


def calibration(result: FitResult, traces: TraceDataset, batch_size: int = 64) -> Calibration:
    """The :class:`Calibration` of ``result`` on ``traces`` (held-out episodes, or the training ones).

    Args:
        result: A fit; its learner (with any learned ``alpha``/``epsilon``) and ``Q(1)`` are used.
        traces: Episodes of the fit's game.
        batch_size: Episodes per evaluation.

    Raises:
        ConfigurationError: traces of another game size, or with fewer than 2 rounds.
    """
    mechanism = result.mechanism
    if (traces.n_agents, traces.n_actions) != (mechanism.n_agents, mechanism.n_actions) or traces.n_rounds < 2:
        raise ConfigurationError(
            f"calibration needs traces of {mechanism.n_agents} agents x {mechanism.n_actions} actions with at "
            f"least 2 rounds; got {traces.n_agents} x {traces.n_actions}, {traces.n_rounds} rounds"
        )
    log_probs = dynamics_for(result.learner).log_probs
    actions = traces.actions_tensor(device_of(mechanism))
    n_actions = mechanism.n_actions
    predicted = torch.zeros(traces.n_rounds - 1, n_actions, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, actions.shape[0], batch_size):
            batch = actions[start : start + batch_size]
            payoffs = mechanism.counterfactual_payoffs(batch[:, :-1])  # u(1..T-1), Eq. (1)
            for action in range(n_actions):  # log pi(t)(action), every round at once
                unroll = Unroll(payoffs, torch.full_like(batch[:, 1:], action), batch[:, :-1], q0=result.q0)
                predicted[:, action] += log_probs(result.learner, unroll).exp().double().sum(dim=(0, 2)).cpu()
    n_draws = traces.n_episodes * traces.n_agents
    next_actions = traces.actions_tensor()[:, 1:]
    observed = torch.nn.functional.one_hot(next_actions, n_actions).double().sum(dim=(0, 2)) / n_draws
    return Calibration((predicted / n_draws).numpy(), observed.numpy(), n_draws)
