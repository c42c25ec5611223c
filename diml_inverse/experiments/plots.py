"""Figure-1-style plots: diff_mse and cfkl_params against epoch, per method (or per E4 scale).

Lines are the mean over run seeds, bands the range (min to max) over seeds; both axes of values are on a
log scale. Reference lines: the zero-mechanism diff_mse (a fit must stay below it) and the cfkl noise
floor (the plug-in KL between two simulations of the truth; a fit cannot be told apart from the truth
below it). Uses matplotlib's object API only (no pyplot state), so it is safe in library code.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: The two panels: (curve column, reference-line column, panel title, reference label).
PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("diff_mse", "zero_diff_mse", "payoff-difference error (diff_mse)", "zero mechanism"),
    ("cfkl_params", "cfkl_noise_floor", "counterfactual KL (cfkl_params)", "noise floor"),
)
#: A third panel when the curves hold the published code's index-sum KL (E4).
INDEX_SUM_PANEL = (
    "cfkl_index_sum",
    "cfkl_index_sum_noise_floor",
    "cfkl, published index-sum binning",
    "noise floor",
)


def _series(rows: Sequence[Mapping[str, Any]], group: str, column: str) -> dict[str, tuple[np.ndarray, ...]]:
    """Per group: epochs, mean, min and max over seeds of ``column`` (epochs where it is NaN are dropped)."""
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = row.get(column)
        if isinstance(value, float) and not math.isnan(value):
            values[str(row[group])][int(row["epoch"])].append(value)
    series: dict[str, tuple[np.ndarray, ...]] = {}
    for name, by_epoch in values.items():
        epochs = np.array(sorted(by_epoch))
        stacked = [np.array(by_epoch[e]) for e in epochs]
        series[name] = (
            epochs,
            np.array([v.mean() for v in stacked]),
            np.array([v.min() for v in stacked]),
            np.array([v.max() for v in stacked]),
        )
    return series


def _reference(rows: Sequence[Mapping[str, Any]], group: str, column: str) -> dict[str, float]:
    """Mean over seeds of a per-run constant (one value per group)."""
    per_run: dict[str, dict[Any, float]] = defaultdict(dict)
    for row in rows:
        if isinstance(row.get(column), float):
            per_run[str(row[group])][row["seed"]] = float(row[column])
    return {name: float(np.mean(list(seeds.values()))) for name, seeds in per_run.items()}


def plot_curves(
    curves: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str,
    group: str = "method",
    dpi: int = 100,
) -> Path:
    """Write a two-panel PNG of diff_mse and cfkl_params against epoch.

    Args:
        curves: Rows of ``curves.csv`` (any number of seeds).
        path: Output PNG.
        title: Figure title.
        group: The column that makes the lines: ``"method"`` (E1–E3) or ``"game"`` (E4's scales). With
            ``"game"`` every scale gets its own reference lines in its colour; otherwise the references
            (which do not depend on the method) are drawn once, in grey.
        dpi: Resolution (100 keeps the files small).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = PANELS
    if any(isinstance(row.get(INDEX_SUM_PANEL[0]), float) for row in curves):
        panels = (*PANELS, INDEX_SUM_PANEL)
    figure = Figure(figsize=(5.5 * len(panels), 4.0), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels))
    seeds = sorted({row["seed"] for row in curves})
    names = list(dict.fromkeys(str(row[group]) for row in curves))
    spare = iter(c for c in _palette() if c not in METHOD_COLOURS.values())
    colours = (
        {name: METHOD_COLOURS.get(name) or next(spare) for name in names}
        if group == "method"
        else dict(zip(names, _palette(), strict=False))
    )
    for axis, (column, reference_column, panel_title, reference_label) in zip(axes, panels, strict=True):
        for name, (epochs, mean, low, high) in _series(curves, group, column).items():
            colour = colours[name]
            marker = "o" if len(epochs) < 40 and len(epochs) != int(epochs[-1]) else None
            axis.plot(epochs, mean, color=colour, label=name, marker=marker, markersize=3, linewidth=1.5)
            if len(seeds) > 1:
                axis.fill_between(epochs, low, high, color=colour, alpha=0.2, linewidth=0)
        references = _reference(curves, group, reference_column)
        if group == "game":
            for name, value in references.items():
                axis.axhline(value, color=colours[name], linestyle="--", linewidth=1, alpha=0.8)
            axis.plot([], [], color="grey", linestyle="--", linewidth=1, label=f"{reference_label} (per scale)")
        else:
            value = float(np.mean(list(references.values())))
            axis.axhline(value, color="grey", linestyle="--", linewidth=1.2, label=reference_label)
        axis.set_yscale("log")
        y_low, y_high = _value_range(curves, column, reference_column)
        if y_high <= y_low * 1.05:  # a flat panel (e.g. a saturated KL): widen it so that log scaling works
            axis.set_ylim(y_low / 1.5, y_high * 1.5)
        axis.set_xlabel("epoch")
        axis.set_title(panel_title, fontsize=10)
        axis.grid(True, which="major", alpha=0.3)
        axis.legend(fontsize=8)
    spread = f"mean and range over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    figure.suptitle(f"{title} ({spread})", fontsize=11)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def _value_range(rows: Sequence[Mapping[str, Any]], *columns: str) -> tuple[float, float]:
    values = [v for row in rows for c in columns if isinstance(v := row.get(c), float) and math.isfinite(v) and v > 0]
    return (min(values), max(values)) if values else (1.0, 10.0)


#: The same colour for a method in every figure.
METHOD_COLOURS: dict[str, str] = {
    "DIML": "#1f77b4",
    "Tabular MLE": "#d62728",
    "DIML-Wrong": "#2ca02c",
    "StructMLE": "#ff7f0e",
}


def _palette() -> list[str]:
    """Matplotlib's default colour cycle."""
    return ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
