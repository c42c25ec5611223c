"""``inverse_qre``: maximum-likelihood payoffs and logit precision of play that is not exactly rational.

A logit quantal response equilibrium (McKelvey & Palfrey 1995) with precision ``lam`` is a mixed profile with
``sigma_i = softmax(lam u_i(., sigma_-i))`` for every agent (mixed here with uniform exploration ``epsilon``,
as logit-Q learners play). Two estimators from pooled action counts ``n_i(a)``:

- **fixed point** (payoffs known, ``lam`` unknown): the likelihood ``sum n_i(a) log sigma_i(a; lam)`` along the
  principal branch of the QRE correspondence, traced from ``lam = 0`` (uniform play) by predictor-corrector
  continuation, maximised over ``lam`` (the estimator of Gambit's ``logit_estimate``);
- **plug-in** (payoffs partly or wholly unknown): the pseudo-likelihood of each agent's logit response to the
  others' *empirical* frequencies, ``sum n_i(a) log softmax(lam u_i(., sigma_hat_-i; theta))(a)``, maximised over
  the unknown payoff parameters ``theta`` (and ``lam`` when part of the payoffs is known, which fixes their
  scale). It is consistent as the counts grow, since at a QRE the empirical frequencies approach ``sigma``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.func import jacrev

from diml_inverse.equilibrium.finite import FiniteGame, expected_payoffs
from diml_inverse.equilibrium.result import InverseResult
from mechgym.errors import ConfigurationError
from mechgym.validation import check_int

__all__ = ["inverse_qre", "logit_responses", "qre_profile"]


def logit_responses(values: Tensor, lam: Tensor | float, epsilon: float = 0.0) -> Tensor:
    """``(1 - epsilon) softmax(lam values) + epsilon / A`` over the last dimension."""
    probabilities = torch.softmax(values * lam, dim=-1)
    return (1 - epsilon) * probabilities + epsilon / values.shape[-1]


def _check_counts(game: FiniteGame, counts: Any) -> Tensor:
    tensor = torch.as_tensor(counts, dtype=torch.float64)
    if tensor.dim() == 2:
        tensor = tensor[None]
    expected = (game.n_agents, game.n_actions)
    if tensor.dim() != 3 or tuple(tensor.shape[-2:]) != expected:
        raise ConfigurationError(
            f"action counts must have shape [N, A] or [B, N, A] with N, A = {expected}; got {list(tensor.shape)}"
        )
    if not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()):
        raise ConfigurationError("action counts must be finite and non-negative")
    if bool((tensor.sum(-1) <= 0).any()):
        raise ConfigurationError("every agent of every profile needs at least one observed action")
    return tensor


class _Branch:
    """The principal QRE branch of a game with known payoffs, in reduced logits ``w`` ``[N, A-1]``."""

    def __init__(self, table: Tensor, n_agents: int, n_actions: int, epsilon: float) -> None:
        self.table, self.n, self.a, self.epsilon = table, n_agents, n_actions, epsilon

    def profile(self, w: Tensor) -> Tensor:
        logits = torch.cat([w, torch.zeros(self.n, 1, dtype=w.dtype)], dim=-1)
        return logit_responses(logits, 1.0, self.epsilon)

    def residual(self, w: Tensor, lam: float) -> Tensor:
        values = expected_payoffs(self.table, self.profile(w)[None])[0]
        return (w - lam * (values[:, :-1] - values[:, -1:])).reshape(-1)

    def solve(self, w: Tensor, lam: float, steps: int = 30, tol: float = 1e-12) -> Tensor | None:
        """Newton's method from ``w``; ``None`` when it does not converge."""
        size = self.n * (self.a - 1)
        for _ in range(steps):
            residual = self.residual(w, lam)
            if float(residual.abs().max()) < tol:
                return w
            jacobian = jacrev(lambda x: self.residual(x, lam))(w).reshape(size, size)
            try:
                step = torch.linalg.solve(jacobian, residual)
            except RuntimeError:
                return None
            w = w - step.reshape(w.shape)
            if not bool(torch.isfinite(w).all()):
                return None
        return w if float(self.residual(w, lam).abs().max()) < 1e-9 else None


def qre_profile(
    game: FiniteGame, lam: float, epsilon: float = 0.0, first_step: float = 0.03, max_accel: float = 1.1
) -> Tensor:
    """The logit QRE at precision ``lam`` on the principal branch (traced from uniform play): ``[N, A]``."""
    branch = _Branch(game.payoff_table(game.parameters).detach(), game.n_agents, game.n_actions, epsilon)  # type: ignore[arg-type]
    _, points = _trace(branch, lam, None, first_step, max_accel, stop_at=lam)
    return branch.profile(points[-1][1])


def _trace(
    branch: _Branch,
    lam_max: float,
    loglik: Callable[[Tensor], float] | None,
    first_step: float,
    max_accel: float,
    stop_at: float | None = None,
) -> tuple[list[float], list[tuple[float, Tensor]]]:
    w = torch.zeros(branch.n, branch.a - 1, dtype=torch.float64)
    lam, step = 0.0, first_step
    values = [loglik(branch.profile(w)) if loglik else math.nan]
    points = [(0.0, w)]
    while lam < lam_max and step > 1e-12:
        target = min(lam + step, lam_max)
        solved = branch.solve(w, target)
        if solved is None:
            step /= 2
            continue
        lam, w = target, solved
        points.append((lam, w))
        values.append(loglik(branch.profile(w)) if loglik else math.nan)
        step *= max_accel
    if stop_at is not None and lam < stop_at:
        raise ConfigurationError(f"the QRE branch could not be followed to lam={stop_at} (stopped at {lam:.4g})")
    return values, points


def _estimate_lam(
    game: FiniteGame, counts: Tensor, epsilon: float, lam_max: float | None, tol: float
) -> tuple[float, Tensor, list[float], list[float]]:
    table = game.payoff_table(game.parameters).detach()  # type: ignore[arg-type]
    branch = _Branch(table, game.n_agents, game.n_actions, epsilon)
    pooled = counts.sum(0)

    def loglik(profile: Tensor) -> float:
        return float((pooled * torch.log(profile)).sum())

    scale = float(game.payoff_scale(table))
    limit = lam_max if lam_max is not None else 1e3 / max(scale, 1e-12)
    values, points = _trace(branch, limit, loglik, 0.03 / max(scale, 1e-12), 1.1)
    best = max(range(len(values)), key=values.__getitem__)
    low = points[max(best - 1, 0)][0]
    high = points[min(best + 1, len(points) - 1)][0]
    start = points[best][1]
    ratio = (math.sqrt(5) - 1) / 2
    cache: dict[float, tuple[float, Tensor]] = {}

    def at(lam: float) -> tuple[float, Tensor]:
        if lam not in cache:
            solved = branch.solve(start, lam)
            w = start if solved is None else solved
            cache[lam] = (loglik(branch.profile(w)) if solved is not None else -math.inf, w)
        return cache[lam]

    left, right = high - ratio * (high - low), low + ratio * (high - low)
    while high - low > tol:  # golden-section search of the maximum between the neighbours of the best point
        if at(left)[0] >= at(right)[0]:
            high, right = right, left
            left = high - ratio * (high - low)
        else:
            low, left = left, right
            right = low + ratio * (high - low)
    lam = (low + high) / 2
    value, w = at(lam)
    return lam, branch.profile(w), [p[0] for p in points], [*values, value]


def _plug_in(
    game: FiniteGame, counts: Tensor, lam: float | None, epsilon: float, iterations: int, l2: float
) -> tuple[dict[str, Tensor], Tensor, list[float], Tensor]:
    theta = {name: game.initial_value(name, None, torch.Size()).requires_grad_(True) for name in game.unknown}
    log_lam = torch.zeros((), dtype=torch.float64, requires_grad=lam is None)
    profiles = counts / counts.sum(-1, keepdim=True)
    total = counts.sum()
    trace: list[float] = []

    def nll() -> Tensor:
        params = game.full_parameters(theta)
        precision = log_lam.exp() if lam is None else torch.tensor(lam, dtype=torch.float64)
        values = expected_payoffs(game.payoff_table(params), profiles)
        log_probs = torch.log(logit_responses(values, precision, epsilon))
        penalty = sum((value**2).sum() for value in theta.values())
        return -(counts * log_probs).sum() / total + l2 * penalty

    variables = [*theta.values(), *([log_lam] if lam is None else [])]
    optimizer = torch.optim.LBFGS(variables, max_iter=iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-10)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nll()
        loss.backward()
        trace.append(float(loss.detach()))
        return loss

    optimizer.step(closure)
    estimated = {name: value.detach() for name, value in theta.items()}
    precision = log_lam.detach().exp() if lam is None else torch.tensor(float(lam), dtype=torch.float64)
    values = expected_payoffs(game.payoff_table(game.full_parameters(estimated)), profiles)
    return estimated, precision, trace, logit_responses(values, precision, epsilon).detach()


def inverse_qre(
    game: FiniteGame,
    counts: Any,
    *,
    lam: float | None = 1.0,
    epsilon: float = 0.0,
    iterations: int = 200,
    l2: float = 0.0,
    lam_max: float | None = None,
    tol: float = 1e-7,
) -> InverseResult:
    """Fit a logit QRE to observed action counts: the unknown payoff parameters of ``game`` and/or ``lam``.

    Args:
        game: A :class:`FiniteGame`; its ``unknown`` parameters are estimated (``FiniteGame(mech, unknown=())``
            keeps every payoff known and estimates ``lam`` alone).
        counts: Action counts ``[N, A]`` (pooled) or ``[B, N, A]`` (one profile per row, e.g. per episode).
        lam: The logit precision; ``None`` estimates it (by the fixed-point estimator when every payoff is
            known, jointly with the payoffs by the plug-in estimator when only part of them is unknown).
        epsilon: Uniform exploration mixed into every response (logit-Q's ``epsilon``).
        iterations: Most L-BFGS iterations of the plug-in estimator.
        l2: Ridge penalty on the unknown parameters (picks one solution where the data leave a direction free).
        lam_max: Where the fixed-point estimator stops tracing (default ``1000 / payoff scale``).
        tol: Precision of the fixed-point estimator's ``lam``.

    Returns:
        An :class:`InverseResult` with ``params`` (the unknown parameters, and ``"lam"``), ``objective="nll"``
        (per observed action), the fitted responses or equilibrium and the fitted mechanism.

    Raises:
        ConfigurationError: for bad counts, nothing to estimate, or ``lam=None`` with every payoff unknown
            (the precision and the payoff scale are then not separately identified).
    """
    started = time.perf_counter()
    if not isinstance(game, FiniteGame):
        raise ConfigurationError(f"inverse_qre needs a FiniteGame; got {type(game).__name__}")
    if not 0.0 <= epsilon < 1.0:
        raise ConfigurationError(f"epsilon must be in [0, 1); got {epsilon!r}")
    if lam is not None and (not math.isfinite(lam) or lam <= 0):
        raise ConfigurationError(f"lam must be a positive number or None (estimate it); got {lam!r}")
    iterations = check_int(iterations, "iterations", low=1)
    counts = _check_counts(game, counts)
    total = float(counts.sum())
    options: dict[str, Any] = {"lam": lam, "epsilon": epsilon, "iterations": iterations, "l2": l2, "event_dims": {}}
    if not game.unknown:
        if lam is not None:
            raise ConfigurationError("nothing to estimate: every payoff is known and lam is given; pass lam=None")
        lam_hat, profile, lams, values = _estimate_lam(game, counts, epsilon, lam_max, tol)
        nll = torch.tensor(-values[-1] / total, dtype=torch.float64)
        return InverseResult(
            params={"lam": torch.tensor(lam_hat, dtype=torch.float64)},
            objective="nll",
            final=nll,
            trace=-torch.tensor(values[:-1], dtype=torch.float64) / total,
            trace_iterations=torch.tensor(lams, dtype=torch.float64),
            equilibrium=profile,
            method="qre-fixed-point",
            iterations=len(lams),
            seconds=time.perf_counter() - started,
            mechanism=game.fitted_mechanism({}),
            options=options,
        )
    if lam is None and set(game.unknown) == set(game.parameter_names):
        raise ConfigurationError(
            "lam and the payoffs are not separately identified when every payoff parameter is unknown: fix lam "
            "(e.g. the learners' beta) or keep part of the payoffs known (FiniteGame(..., unknown=[...]))"
        )
    estimated, precision, trace, responses = _plug_in(game, counts, lam, epsilon, iterations, l2)
    return InverseResult(
        params={**estimated, "lam": precision},
        objective="nll",
        final=torch.tensor(trace[-1], dtype=torch.float64),
        trace=torch.tensor(trace, dtype=torch.float64),
        trace_iterations=torch.arange(1, len(trace) + 1),
        equilibrium=responses,
        method="qre-plug-in",
        iterations=len(trace),
        seconds=time.perf_counter() - started,
        mechanism=game.fitted_mechanism(estimated),
        options=options,
    )
