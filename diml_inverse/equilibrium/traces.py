"""Equilibrium inversion on recorded learning traces: the last rounds' frequencies, a model family, a fit file.

:func:`fit_equilibrium` is what ``diml fit --method qre|nash`` and the DIML-versus-equilibrium study run: it
reads each agent's action frequencies over the last rounds of every episode (the play the learners settled
into), treats them as equilibrium play of a model family (:func:`~diml_inverse.build_model`: ``"structured"``,
``"tabular"``, ``"neural"``, ...) and fits that family by inverse logit QRE or inverse Nash.
:func:`equilibrium_fit_result` wraps the outcome as a :class:`~diml_inverse.FitResult`, so that
``diml evaluate`` and :mod:`diml_inverse.metrics` score it as they score DIML.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from diml_inverse.config import FitConfig
from diml_inverse.equilibrium.finite import FiniteGame, empirical_counts
from diml_inverse.equilibrium.nash import inverse_nash
from diml_inverse.equilibrium.qre import inverse_qre
from diml_inverse.equilibrium.result import InverseResult
from diml_inverse.models import build_model
from diml_inverse.result import FitResult
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner
from mechgym.registration import make
from mechgym.traces import TraceDataset

__all__ = ["EquilibriumMethod", "default_last_rounds", "equilibrium_fit_result", "fit_equilibrium"]

EquilibriumMethod = Literal["qre", "nash"]


def default_last_rounds(n_rounds: int) -> int:
    """The rounds read by default: the last third of each episode (at least one)."""
    return max(1, n_rounds // 3)


def _perturb(game: FiniteGame, seed: int, size: float = 0.01) -> None:
    """Move every starting parameter by a seeded normal draw of standard deviation ``size``."""
    generator = torch.Generator().manual_seed(seed)
    for name, value in game.parameters.items():
        if value is not None:
            noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
            game.parameters[name] = value + size * noise


def fit_equilibrium(
    traces: TraceDataset,
    method: EquilibriumMethod = "qre",
    *,
    env_id: str | None = None,
    model: str = "structured",
    last_rounds: int | None = None,
    pooled: bool = False,
    lam: float | None = None,
    epsilon: float | None = None,
    iterations: int | None = None,
    lr: float = 1e-2,
    l2: float = 1e-3,
    seed: int = 0,
) -> InverseResult:
    """Fit a model family to the last rounds of ``traces`` as equilibrium play (logit QRE or Nash).

    Args:
        traces: Recorded episodes ``[E, T, N]``.
        method: ``"qre"`` (inverse logit QRE, the plug-in MLE) or ``"nash"`` (inverse Nash, normalised
            exploitability by max-oracle gradient descent).
        env_id: The game (default: the one the traces record); only its sizes and family are used.
        model: A model family name of :func:`~diml_inverse.build_model` (the game's own: ``"structured"``).
        last_rounds: Rounds read at the end of each episode (default: :func:`default_last_rounds`).
        pooled: One profile of all episodes instead of one per episode.
        lam: QRE precision (default: the recorded logit learner's ``beta`` or Hedge's ``eta``, else 1).
        epsilon: QRE exploration (default: the recorded learner's ``epsilon``, else 0).
        iterations: L-BFGS iterations (QRE, default 200) or gradient steps (Nash, default 500).
        lr: Adam learning rate of inverse Nash.
        l2: Ridge penalty of inverse QRE (keeps rarely played actions' payoffs finite and the directions the
            frequencies do not determine at zero).
        seed: Seed of the model's initialisation.

    Returns:
        The :class:`InverseResult`, with :attr:`~InverseResult.mechanism` the fitted model.

    Raises:
        ConfigurationError: for traces that name no environment and no ``env_id``, or a bad option.
    """
    env_id = env_id or traces.metadata.env_id
    if env_id is None:
        raise ConfigurationError("the traces name no environment; pass env_id")
    if method not in ("qre", "nash"):
        raise ConfigurationError(f"method must be 'qre' or 'nash'; got {method!r}")
    truth_like = make(env_id, **dict(traces.metadata.env_kwargs or {})).mechanism
    start = build_model(model, truth_like, seed=seed)
    actions = traces.actions_tensor()
    last = last_rounds if last_rounds is not None else default_last_rounds(actions.shape[1])
    counts = empirical_counts(actions, truth_like.n_actions, last, pooled)
    if method == "nash":
        game = FiniteGame(start, normalize=True)
        if float(game.payoff_scale(game.payoff_table(game.parameters))) == 0.0:  # type: ignore[arg-type]
            _perturb(game, seed)  # the normalised exploitability is 0 / 0 at constant payoffs (a zero table)
        return inverse_nash(game, counts / counts.sum(-1, keepdim=True), iterations=iterations or 500, lr=lr)
    recorded = traces.learner()
    if lam is None:
        lam = float(getattr(recorded, "beta", getattr(recorded, "eta", 1.0)))
    if epsilon is None:
        epsilon = float(getattr(recorded, "epsilon", 0.0))
    return inverse_qre(FiniteGame(start), counts, lam=lam, epsilon=epsilon, iterations=iterations or 200, l2=l2)


def equilibrium_fit_result(
    result: InverseResult, traces: TraceDataset, learner: Learner, *, env_id: str | None = None, model: str = ""
) -> FitResult:
    """An inverse-QRE or inverse-Nash fit as a :class:`~diml_inverse.FitResult` (saved and scored like DIML's).

    The fit file's history holds one row: ``objective`` (the final NLL or exploitability), ``lam`` (QRE),
    ``iterations`` and ``seconds``; its ``config`` holds the model name and the defaults of everything else
    (no DIML option was used). ``learner`` is the one ``diml evaluate`` simulates for cfkl.

    Raises:
        ConfigurationError: for a result without a fitted mechanism (an economic game's).
    """
    if result.mechanism is None:
        raise ConfigurationError("only finite games' results (a fitted mechanism) make a fit file")
    lam = result.params.get("lam")
    row = {
        "epoch": 1.0,
        "objective": float(result.final.double().mean()),
        "lam": float(lam) if lam is not None else math.nan,
        "iterations": float(result.iterations),
        "seconds": result.seconds,
    }
    return FitResult(
        mechanism=result.mechanism,
        learner=learner,
        history=[row],
        config=FitConfig(model=model or "auto", epochs=1, progress=False),  # type: ignore[arg-type]
        selected_epoch=1,
        best_epoch=1,
        env_id=env_id or traces.metadata.env_id,
        env_kwargs=dict(traces.metadata.env_kwargs or {}),
        model_name=model or type(result.mechanism).__name__,
        assumed_learner=learner,
        n_train_episodes=traces.n_episodes,
        seconds=result.seconds,
    )
