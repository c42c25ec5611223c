"""DIML against equilibrium inversion on the same E1–E3 traces: ``python -m diml_inverse.experiments equilibrium``.

For each game and run seed, the traces are exactly those of ``experiments run`` (:func:`runner.record_data`
with the run's derived seeds). Every method sees the training episodes and is scored by
:func:`~diml_inverse.metrics.diff_mse` on the held-out ones, beside the zero mechanism:

- **DIML** (``neural``, and ``structured`` where the game has its own family): the likelihood of every round
  through logit-Q's learning rule, :func:`diml_inverse.fit` with the experiment's training options;
- **inverse QRE**: the last rounds' action counts of each training episode as logit-QRE play, precision and
  exploration the learners' (``beta``, ``epsilon``), the plug-in MLE of the model (:func:`fit_equilibrium`);
- **inverse Nash**: the same frequencies as Nash play, normalised exploitability (payoffs up to scale, so
  its row also gives :func:`~diml_inverse.metrics.rescaled_diff_mse`, the error after the best rescaling).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diml_inverse.equilibrium.traces import EquilibriumMethod, default_last_rounds, fit_equilibrium
from diml_inverse.experiments.configs import experiment_config
from diml_inverse.experiments.runner import record_data, run_seeds, write_table
from diml_inverse.fit import fit
from diml_inverse.metrics import diff_mse, rescaled_diff_mse, zero_baseline_diff_mse
from mechgym.errors import ConfigurationError
from mechgym.mechanisms import Mechanism

__all__ = ["EQUILIBRIUM_METHODS", "ComparisonMethod", "format_comparison_table", "run_comparison"]


@dataclass(frozen=True)
class ComparisonMethod:
    """One fitted method of the comparison."""

    name: str
    """Row label."""
    kind: str
    """``"dynamics"`` (DIML), ``"qre"`` or ``"nash"``."""
    model: str
    """Model family (:func:`diml_inverse.build_model`)."""


EQUILIBRIUM_METHODS: tuple[ComparisonMethod, ...] = (
    ComparisonMethod("DIML (neural)", "dynamics", "neural"),
    ComparisonMethod("DIML (structured)", "dynamics", "structured"),
    ComparisonMethod("inverse QRE (neural)", "qre", "neural"),
    ComparisonMethod("inverse QRE (tabular)", "qre", "tabular"),
    ComparisonMethod("inverse QRE (structured)", "qre", "structured"),
    ComparisonMethod("inverse Nash (structured)", "nash", "structured"),
)
_STRUCTURED = {"e1": False, "e2": True, "e3": True}  # E1's truth is the neural family: "structured" repeats it


def _fit(method: ComparisonMethod, config: Any, env_id: str, train: Any, seed: int, epochs: int | None) -> Mechanism:
    if method.kind == "dynamics":
        training = config.training if epochs is None else dataclasses.replace(config.training, epochs=epochs)
        result = fit(
            env_id, train, learner=config.learner, config=training, model=method.model, device="cpu", seed=seed,
            progress=False,
        )  # fmt: skip
        return result.mechanism
    kind: EquilibriumMethod = "qre" if method.kind == "qre" else "nash"
    inverse = fit_equilibrium(train, kind, env_id=env_id, model=method.model, l2=1e-3, seed=seed)
    if inverse.mechanism is None:  # pragma: no cover - finite games always return one
        raise ConfigurationError("the equilibrium fit returned no mechanism")
    return inverse.mechanism


def run_comparison(
    names: Sequence[str] = ("e1", "e2", "e3"),
    seeds: Sequence[int] = (0,),
    *,
    epochs: int | None = None,
    smoke: bool = False,
    out: Path | None = None,
) -> list[dict[str, Any]]:
    """Fit every method of :data:`EQUILIBRIUM_METHODS` on each game's traces and score it.

    Args:
        names: Experiments among ``"e1"``, ``"e2"``, ``"e3"``.
        seeds: Run seeds (seed ``s``: truth ``s`` and the data of ``experiments run`` at seed ``s``).
        epochs: DIML epochs (default: the experiment's, 100).
        smoke: The experiments' tiny configuration.
        out: Write ``OUT/equilibrium/table.{md,json}`` when given.

    Returns:
        One row per (game, seed, method): ``diff_mse``, ``zero_diff_mse``, ``ratio`` (zero / method),
        ``rescaled_diff_mse`` and its ``scale``, ``seconds`` (the fit).

    Raises:
        ConfigurationError: for a name outside E1–E3.
    """
    rows: list[dict[str, Any]] = []
    for name in names:
        if name not in _STRUCTURED:
            raise ConfigurationError(f"the comparison runs e1, e2 and e3; got {name!r}")
        config = experiment_config(name, smoke=smoke)
        game = config.games[0]
        for seed in seeds:
            derived = run_seeds(config, game, seed)
            truth, train, test = record_data(config, game, derived, torch.device("cpu"))
            zero = zero_baseline_diff_mse(truth, test, seed=derived.evaluation)
            for method in EQUILIBRIUM_METHODS:
                if method.model == "structured" and not _STRUCTURED[name]:
                    continue
                started = time.perf_counter()
                estimate = _fit(method, config, game.env_id, train, derived.fit, epochs)
                seconds = time.perf_counter() - started
                error = diff_mse(truth, estimate, test, seed=derived.evaluation)
                scale, rescaled = rescaled_diff_mse(truth, estimate, test, seed=derived.evaluation)
                rows.append(
                    {
                        "game": game.label,
                        "seed": seed,
                        "method": method.name,
                        "diff_mse": error,
                        "zero_diff_mse": zero,
                        "ratio": zero / error if error > 0 else float("inf"),
                        "rescaled_diff_mse": rescaled,
                        "scale": scale,
                        "seconds": seconds,
                        "last_rounds": default_last_rounds(game.n_rounds),
                        "epochs": epochs or config.training.epochs,
                        "train_episodes": train.n_episodes,
                    }
                )
    if out is not None:
        write_table(Path(out) / "equilibrium", format_comparison_table(rows), rows)
    return rows


def format_comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per (game, method), the mean over seeds (and the seeds' count)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["game"], row["method"]), []).append(row)
    lines = [
        "| game | method | diff_mse | zero mechanism | zero / method | rescaled diff_mse (scale) | fit s | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (label, method), group in groups.items():

        def mean(key: str, group: list[dict[str, Any]] = group) -> float:
            return sum(r[key] for r in group) / len(group)

        lines.append(
            f"| {label} | {method} | {mean('diff_mse'):.4g} | {mean('zero_diff_mse'):.4g} | "
            f"{mean('zero_diff_mse') / mean('diff_mse'):.2f}x | {mean('rescaled_diff_mse'):.4g} ({mean('scale'):.2f}) "
            f"| {mean('seconds'):.1f} | {len(group)} |"
        )
    return "\n".join(lines)
