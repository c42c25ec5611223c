"""``inverse_nash``: parameters under which observed play is a Nash equilibrium (Goktas et al. 2024, §3).

The inverse game is the min-max problem ``min_theta max_y psi(x, y; theta)`` of a parameter player
(``theta``) and a deviation player (``y``), with ``psi`` the cumulative regret of the observed profile ``x``.
Its value is zero exactly at parameters that make ``x`` an equilibrium. Three first-order solvers, each
batched over markets (Adam's moments are per element, so every market is optimised independently):

- ``"max-oracle"``: gradient descent on the exploitability ``phi(theta) = psi(x, BR(theta); theta)`` with the
  game's exact best response (Danskin: the gradient at the maximiser).
- ``"exploit-gd"``: the same descent with the best response approximated by ``inner_steps`` projected ascent
  steps on ``y`` per outer step, warm-started (for games without an exact best response).
- ``"gda"``: simultaneous gradient descent on ``theta`` and ascent on ``y`` (their Algorithm 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diml_inverse.equilibrium.finite import FiniteGame
from diml_inverse.equilibrium.games import GAME_DTYPE, EquilibriumGame
from diml_inverse.equilibrium.result import InverseResult
from mechgym.errors import ConfigurationError, suggest
from mechgym.validation import check_int

__all__ = ["METHODS", "Method", "Schedule", "inverse_nash"]

Method = Literal["auto", "max-oracle", "exploit-gd", "gda"]
METHODS: tuple[str, ...] = ("auto", "max-oracle", "exploit-gd", "gda")
Schedule = Literal["constant", "cosine"]


def _check_options(method: str, iterations: int, lr: float, deviation_lr: float, schedule: str) -> None:
    if method not in METHODS:
        raise ConfigurationError(suggest(method, METHODS, "method"))
    for name, value in (("lr", lr), ("deviation_lr", deviation_lr)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number; got {value!r}")
    if schedule not in ("constant", "cosine"):
        raise ConfigurationError(suggest(schedule, ("constant", "cosine"), "lr schedule"))
    check_int(iterations, "iterations", low=1)


def _bounds(
    game: EquilibriumGame, names: Sequence[str], bounds: Mapping[str, tuple[float, float]] | None
) -> dict[str, tuple[float, float]]:
    merged = {name: tuple(game.default_bounds.get(name, (-math.inf, math.inf))) for name in names}
    for name, pair in (bounds or {}).items():
        if name not in names:
            raise ConfigurationError(suggest(name, names, "estimated parameter (bounds apply to those only)"))
        low, high = (float(v) for v in pair)
        if not low <= high:
            raise ConfigurationError(f"bounds of {name} must be (low, high) with low <= high; got {pair}")
        merged[name] = (low, high)
    return {name: (float(low), float(high)) for name, (low, high) in merged.items()}


def _initial(
    game: EquilibriumGame,
    names: Sequence[str],
    observed: Any,
    batch: torch.Size,
    init: Mapping[str, Tensor | float] | None,
    bounds: Mapping[str, tuple[float, float]],
) -> dict[str, Tensor]:
    theta = {}
    for name in names:
        value = game.initial_value(name, observed, batch)
        if init is not None and name in init:
            value = torch.as_tensor(init[name], dtype=value.dtype).expand(value.shape).clone()
        low, high = bounds[name]
        theta[name] = value.clamp(low, high).requires_grad_(True)
    for name in init or {}:
        if name not in names:
            raise ConfigurationError(suggest(name, names, "estimated parameter (init applies to those only)"))
    return theta


def _exploitability(game: EquilibriumGame, params: Mapping[str, Tensor], observed: Any, deviation: Tensor) -> Tensor:
    """The exploitability per market: exact where the game has a best response, else the regret at ``deviation``."""
    with torch.no_grad():
        if game.has_best_response:
            return game.regret(params, observed, game.best_response(params, observed))
        return game.regret(params, observed, deviation)


class _Solver:
    """One iteration of the chosen method: the deviation player's move, then the parameter player's."""

    def __init__(
        self,
        game: EquilibriumGame,
        observed: Any,
        method: str,
        theta: dict[str, Tensor],
        box: Mapping[str, tuple[float, float]],
        inner_steps: int,
        lr: float,
        deviation_lr: float,
    ) -> None:
        self.game, self.observed, self.method, self.theta, self.box = game, observed, method, theta, box
        self.inner_steps = inner_steps
        self.deviation = game.initial_deviation(observed).to(GAME_DTYPE).requires_grad_(method != "max-oracle")
        self.optimizers = (
            torch.optim.Adam(list(theta.values()), lr=lr),
            torch.optim.Adam([self.deviation], lr=deviation_lr, maximize=True),
        )
        self.schedulers: list[torch.optim.lr_scheduler.LRScheduler] = []

    def _target(self, params: Mapping[str, Tensor]) -> Tensor:
        """The deviation the parameter player descends against."""
        game, observed, deviation = self.game, self.observed, self.deviation
        if self.method == "max-oracle":
            with torch.no_grad():
                return game.best_response({n: v.detach() for n, v in params.items()}, observed)
        if self.method == "gda":
            return deviation
        frozen = {n: v.detach() for n, v in params.items()}
        for _ in range(self.inner_steps):  # exploit-gd: approximate the best response by ascent
            self.optimizers[1].zero_grad()
            game.regret(frozen, observed, deviation).sum().backward()
            self.optimizers[1].step()
            with torch.no_grad():
                deviation.copy_(game.project_deviation(deviation))
        return deviation.detach()

    def add_schedule(self, schedule: str, iterations: int) -> None:
        """Decay the learning rates to zero over ``iterations`` (``"cosine"``); ``"constant"`` keeps them."""
        used = self.optimizers if self.method != "max-oracle" else self.optimizers[:1]
        if schedule == "cosine":
            self.schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, iterations) for o in used]

    def step(self) -> None:
        """One iteration: the deviation, the parameters' Adam step, the projections, the schedules."""
        params = self.game.full_parameters(self.theta)
        target = self._target(params)
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        self.game.regret(params, self.observed, target).sum().backward()
        self.optimizers[0].step()
        if self.method == "gda":
            self.optimizers[1].step()
        with torch.no_grad():
            for name, value in self.theta.items():
                value.clamp_(*self.box[name])
            if self.method != "max-oracle":
                self.deviation.copy_(self.game.project_deviation(self.deviation))
        for scheduler in self.schedulers:
            scheduler.step()

    def exploitability(self) -> Tensor:
        """Every market's exploitability at the current parameters against the current deviation."""
        return _exploitability(self.game, self.game.full_parameters(self.theta), self.observed, self.deviation.detach())

    def run(
        self, iterations: int, tol: float, record_every: int, progress: bool, record: Callable[[int, Tensor], None]
    ) -> tuple[int, Tensor]:
        """Step up to ``iterations`` times, calling ``record``; the last step and each market's first step at which
        its exploitability was at most ``tol`` (-1: never)."""
        converged_at = torch.full(self.game.batch_shape(self.observed), -1, dtype=torch.long)
        step = 0
        if self.game.has_best_response:  # exact exploitability at the start (without one, the deviation has not moved)
            exploitability = self.exploitability()
            converged_at[exploitability <= tol] = 0
        if tol > 0 and bool((converged_at >= 0).all()):  # the start already makes the observation an equilibrium
            record(0, exploitability)
            return step, converged_at
        for step in tqdm(range(1, iterations + 1), desc="inverse_nash", disable=not progress, leave=False):
            self.step()
            exploitability = self.exploitability()
            converged_at[(converged_at < 0) & (exploitability <= tol)] = step
            done = tol > 0 and bool((converged_at >= 0).all())
            if step % record_every == 0 or step == iterations or done:
                record(step, exploitability)
            if done:
                break
        return step, converged_at


def inverse_nash(
    game: EquilibriumGame,
    observed: Any,
    unknown: Sequence[str] | str | None = None,
    *,
    method: Method = "auto",
    iterations: int = 1000,
    lr: float = 1e-2,
    deviation_lr: float = 5e-3,
    schedule: Schedule = "constant",
    bounds: Mapping[str, tuple[float, float]] | None = None,
    init: Mapping[str, Tensor | float] | None = None,
    inner_steps: int = 10,
    tol: float = 0.0,
    record_every: int | None = None,
    progress: bool = False,
) -> InverseResult:
    """Recover the parameters under which ``observed`` is a Nash equilibrium, for a whole batch of markets.

    Args:
        game: The game, its unknown parameters ``None`` (e.g. ``CournotGame(intercept, slope, cost=None)``).
        observed: The observed equilibrium play: quantities or prices ``[*batch, n_firms]``, a
            :class:`~diml_inverse.equilibrium.FisherObservation`, or mixed profiles ``[*batch, N, A]``.
        unknown: The parameters to estimate (default: those marked ``None``; a known one named here is
            re-estimated from its value).
        method: ``"max-oracle"``, ``"exploit-gd"``, ``"gda"``, or ``"auto"`` (``"max-oracle"`` where the game has
            an exact best response, else ``"exploit-gd"``).
        iterations: Outer iterations (steps of the parameter player).
        lr: Adam learning rate of the parameters.
        deviation_lr: Adam learning rate of the deviation player (``"gda"``, ``"exploit-gd"``).
        schedule: ``"constant"`` or ``"cosine"`` (both learning rates decay to zero at the last iteration,
            which settles subgradient oscillations such as Bertrand's V-shaped exploitability).
        bounds: Projection box ``(low, high)`` of each estimated parameter (default: the game's
            ``default_bounds``).
        init: Starting value of estimated parameters (default: the game's guess, ``game.initial_value``: the
            known value, Bertrand's cost the cheapest observed price, else the middle of the bounds).
        inner_steps: Ascent steps of the deviation per outer step (``"exploit-gd"``).
        tol: Stop once every market's exploitability is at most ``tol`` (0: run every iteration); also the
            threshold of :attr:`InverseResult.converged_at`.
        record_every: Record the exploitability every this many iterations (default: about 200 records).
        progress: Show a progress bar.

    Returns:
        An :class:`InverseResult` with the parameters, the exploitability trace and the recovered equilibrium.

    Raises:
        ConfigurationError: for an unknown method or parameter name, bad bounds, learning rates or counts.

    Example:
        >>> game = CournotGame(intercept=50.0, slope=-2.0)  # cost unknown
        >>> inverse_nash(game, torch.tensor([[7.0, 7.0]]), iterations=500, lr=0.5).params["cost"]
    """
    _check_options(method, iterations, lr, deviation_lr, schedule)
    if method == "auto":
        method = "max-oracle" if game.has_best_response else "exploit-gd"
    if method == "max-oracle" and not game.has_best_response:
        raise ConfigurationError(f"{type(game).__name__} has no exact best response; use 'exploit-gd' or 'gda'")
    inner_steps = check_int(inner_steps, "inner_steps", low=1)
    record_every = check_int(record_every or max(1, iterations // 200), "record_every", low=1)
    started = time.perf_counter()
    observed = game.check_observed(observed)
    names = game.check_unknown(unknown if unknown is None or isinstance(unknown, str) else tuple(unknown))
    batch = game.batch_shape(observed)
    box = _bounds(game, names, bounds)
    theta = _initial(game, names, observed, batch, init, box)
    solver = _Solver(game, observed, method, theta, box, inner_steps, lr, deviation_lr)
    solver.add_schedule(schedule, iterations)
    records: list[Tensor] = []
    record_steps: list[int] = []
    params_records: dict[str, list[Tensor]] = {name: [] for name in names}

    def record(step: int, exploitability: Tensor) -> None:
        records.append(exploitability.detach().clone())
        record_steps.append(step)
        for name, value in game.canonical_parameters({n: v.detach() for n, v in theta.items()}).items():
            params_records[name].append(value.clone())

    step, converged_at = solver.run(iterations, tol, record_every, progress, record)
    estimated = game.canonical_parameters({name: value.detach() for name, value in theta.items()})
    final_params = {n: v.detach() for n, v in game.full_parameters(estimated).items()}
    is_finite = isinstance(game, FiniteGame)
    event_dims = {n: game.event_dims.get(n, 0) for n in names}
    return InverseResult(
        params=estimated,
        objective="exploitability",
        final=_exploitability(game, final_params, observed, solver.deviation.detach()),
        trace=torch.stack(records),
        trace_iterations=torch.tensor(record_steps),
        equilibrium=observed if is_finite else game.equilibrium(final_params),
        method=method,
        iterations=step,
        converged_at=converged_at,
        seconds=time.perf_counter() - started,
        mechanism=game.fitted_mechanism(estimated) if isinstance(game, FiniteGame) else None,
        options={"lr": lr, "deviation_lr": deviation_lr, "schedule": schedule, "bounds": box, "tol": tol}
        | {"event_dims": event_dims},
        params_trace={name: torch.stack(values) for name, values in params_records.items()},
    )
