"""The logit-Q likelihood (paper Eq. 5) computed step by step, as Algorithm 1 and the published code do.

:func:`step_by_step_log_likelihood` is Algorithm 1 of the paper written out literally, as the published
experiment code does it: a loop over rounds and agents, one mechanism call per (round, agent) on the
``A`` counterfactual joint actions of that agent (batched over episodes only), the logit-Q update (Eq. 2)
and the policy (Eq. 3) written from their formulas. It is the ground truth that the parallel likelihood
of :mod:`diml_inverse.likelihood` is checked against, and the baseline its benchmark is timed against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechgym.mechanisms import Mechanism


def step_by_step_log_likelihood(
    mechanism: Mechanism,
    actions: Tensor,
    alpha: Tensor | float,
    beta: Tensor | float,
    epsilon: Tensor | float,
    q0: Tensor | float = 0.0,
    first_agents: int | None = None,
) -> Tensor:
    """Eq. (5) term by term: ``[E, T-1, N]`` log-probabilities of ``actions[:, 1:]``.

    Nothing is validated (use :func:`diml_inverse.log_likelihood` for checked input); parameters given as
    tensors are differentiated through, as in the parallel form.

    Args:
        mechanism: The mechanism ``M_theta``; called through ``forward`` only.
        actions: Joint actions ``[E, T, N]`` (``torch.long``, ``T >= 2``).
        alpha: Learning rate (Eq. 2).
        beta: Inverse temperature (Eq. 3).
        epsilon: Exploration (Eq. 3).
        q0: Initial scores ``Q_i(1)``, broadcastable to ``[E, N, A]``; a number takes the payoffs' dtype.
        first_agents: Only agents ``0 .. first_agents-1`` (``None``: all). Exact: an agent's terms depend on
            the others only through their observed actions (the benchmarks time large games this way).

    Returns:
        ``out[e, t-1, i] = log pi_i(t+1)(a_i(t+1))`` for ``t = 1 .. T-1`` (1-indexed rounds), ``i`` over the
        agents computed.
    """
    n_episodes, n_rounds, n_agents = actions.shape
    n_actions = mechanism.n_actions
    alternatives = torch.arange(n_actions, device=actions.device)
    computed = n_agents if first_agents is None else min(first_agents, n_agents)
    q: list[Tensor] = []  # Q_i(t), [E, A] each, set from q0 in the first round (in the payoffs' dtype)
    rounds = []
    for t in range(n_rounds - 1):
        terms = []
        for i in range(computed):
            # line 8: evaluate M(a'_i, a_-i(t)) for all a'_i in one call, read agent i's payoff
            joint = actions[:, t, None, :].repeat(1, n_actions, 1)  # [E, A, N]
            joint[:, :, i] = alternatives
            u = mechanism(joint)[..., i]  # [E, A]
            if t == 0:
                initial = q0 if isinstance(q0, Tensor) else torch.tensor(q0, dtype=u.dtype, device=u.device)
                q.append(initial.expand(n_episodes, n_agents, n_actions)[:, i])
            # line 9: Eq. (2)
            q[i] = (1 - alpha) * q[i] + alpha * u
            # line 10: Eq. (3)
            pi = (1 - epsilon) * torch.softmax(beta * q[i], dim=-1) + epsilon / n_actions
            # line 11: log pi_i(t+1)(a_i(t+1))
            terms.append(torch.log(pi.gather(-1, actions[:, t + 1, i, None]).squeeze(-1)))
        rounds.append(torch.stack(terms, dim=-1))
    return torch.stack(rounds, dim=1)
