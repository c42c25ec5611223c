"""``InverseResult``: what an equilibrium inversion recovered, how it got there, and a recovery check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechgym.errors import ConfigurationError
from mechgym.mechanisms import Mechanism

__all__ = ["InverseResult", "relative_error"]


def relative_error(estimate: Tensor, truth: Tensor, event_dims: int = 0) -> Tensor:
    """``|estimate - truth| / |truth|``, the largest over the trailing ``event_dims`` dimensions."""
    error = (estimate.double() - truth.double()).abs() / truth.double().abs().clamp_min(1e-12)
    return error.flatten(error.dim() - event_dims).max(-1).values if event_dims else error


@dataclass(frozen=True)
class InverseResult:
    """The outcome of :func:`~diml_inverse.equilibrium.inverse_nash` or :func:`~diml_inverse.equilibrium.inverse_qre`.

    Attributes:
        params: The estimated parameters by name, batch-shaped (``[*batch, *event]``; a finite game's are
            shared by the batch and have no batch dimensions; ``"lam"`` for the logit precision of a QRE fit).
        objective: ``"exploitability"`` (inverse Nash) or ``"nll"`` (inverse QRE: negative log-likelihood per
            observed action).
        final: The objective at the returned parameters: exploitability per market ``[*batch]``, or the NLL.
        trace: The objective every ``record_every`` iterations, ``[R, *batch]`` (QRE: ``[R]``).
        trace_iterations: The iteration of each row of :attr:`trace`, ``[R]`` (the QRE fixed-point estimator: the
            ``lam`` of each traced point of the branch).
        equilibrium: The equilibrium the recovered parameters predict (closed forms; a QRE fit's logit
            equilibrium or logit responses ``[*batch, N, A]``; ``None`` where the game has none).
        method: The algorithm, as run (``"auto"`` resolved).
        iterations: Iterations run.
        converged_at: First iteration at which each market's exploitability was at most ``tol`` ``[*batch]``
            (``0``: at the start, for games with an exact best response; ``-1``: never; ``None`` for QRE fits).
        seconds: Wall-clock seconds.
        mechanism: A finite game's fitted mechanism (float32), for :mod:`diml_inverse.metrics`; else ``None``.
        options: The options of the run (JSON-serialisable).
        params_trace: The estimates at each iteration of :attr:`trace_iterations`, by name, ``[R, *batch, *event]``
            (inverse Nash only; empty for QRE fits), for :meth:`recovered_at_a_check`.
    """

    params: dict[str, Tensor]
    objective: str
    final: Tensor
    trace: Tensor
    trace_iterations: Tensor
    equilibrium: Any = None
    method: str = ""
    iterations: int = 0
    converged_at: Tensor | None = None
    seconds: float = math.nan
    mechanism: Mechanism | None = None
    options: dict[str, Any] = field(default_factory=dict)
    params_trace: dict[str, Tensor] = field(default_factory=dict)

    def __repr__(self) -> str:
        names = ", ".join(f"{n}{list(v.shape)}" for n, v in self.params.items())
        return (
            f"InverseResult({self.method}, {names}, iterations={self.iterations}, "
            f"mean {self.objective} {float(self.final.double().mean()):.3g})"
        )

    def relative_errors(self, truth: Mapping[str, Tensor | float]) -> dict[str, Tensor]:
        """Relative error of each parameter named in ``truth``, per market (the largest over its elements).

        Raises:
            ConfigurationError: for a name that was not estimated.
        """
        errors = {}
        for name, value in truth.items():
            if name not in self.params:
                raise ConfigurationError(f"{name!r} was not estimated; estimated: {', '.join(self.params)}")
            estimate = self.params[name]
            target = torch.as_tensor(value, dtype=torch.float64).expand(estimate.shape)
            event_dims = int(self.options.get("event_dims", {}).get(name, 0))
            errors[name] = relative_error(estimate, target, event_dims)
        return errors

    def recovered(self, truth: Mapping[str, Tensor | float], rtol: float = 0.1) -> Tensor:
        """Whether every parameter named in ``truth`` is within relative error ``rtol`` (Goktas et al.'s 0.1).

        Returns:
            A boolean tensor ``[*batch]``.
        """
        errors = list(self.relative_errors(truth).values())
        result = errors[0] <= rtol
        for error in errors[1:]:
            result = result & (error <= rtol)
        return result

    def recovered_at_a_check(self, truth: Mapping[str, Tensor | float], rtol: float = 0.1) -> Tensor:
        """Whether the estimates were within ``rtol`` of ``truth`` at *any* recorded iteration (:attr:`params_trace`).

        This is Goktas et al.'s count: their notebooks check each market's relative error every 10 iterations
        and stop it at the first check within the tolerance, so a market whose estimate passes through the
        tolerance band counts as recovered even if the descent would have carried it out again. It needs the
        truth to stop, so it measures a solver, not an estimator; :meth:`recovered` is the final-iterate count.

        Returns:
            A boolean tensor ``[*batch]``.

        Raises:
            ConfigurationError: for a name that was not estimated or has no trace.
        """
        hit: Tensor | None = None
        for name, value in truth.items():
            if name not in self.params_trace:
                raise ConfigurationError(f"{name!r} has no trace; traced: {', '.join(self.params_trace) or 'none'}")
            trace = self.params_trace[name]
            target = torch.as_tensor(value, dtype=torch.float64).expand(trace.shape[1:])
            event_dims = int(self.options.get("event_dims", {}).get(name, 0))
            within = relative_error(trace, target.expand(trace.shape), event_dims) <= rtol  # [R, *batch]
            hit = within if hit is None else hit & within
        if hit is None:
            raise ConfigurationError("truth names no parameter")
        return hit.any(0)
