"""The report's figures, as PNG bytes: learning curves, calibration by round, support of the training traces.

Drawn with matplotlib's object API (:class:`matplotlib.figure.Figure` on the Agg canvas): no pyplot, no global
state, no display needed. Matplotlib is the ``.[plot]`` extra; :func:`png` says how to install it if missing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diml_inverse.report.calibration import Calibration
from diml_inverse.report.support import Support
from mechgym.errors import ConfigurationError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["calibration_figure", "learning_curves_figure", "png", "support_figure"]

#: Figures show at most this many curves (the most played actions, the first agents), so they stay legible.
MAX_CURVES = 8
DPI = 100


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dev dependency
        raise ConfigurationError(
            "the fit report draws its figures with matplotlib; install it with pip install 'diml_inverse[plot]' "
            "(or pip install matplotlib)"
        ) from None
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.9)  # fixed margins: no layout engine's extra draw
    return figure


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def learning_curves_figure(history: Sequence[Mapping[str, float]], selected_epoch: int) -> bytes:
    """Train and validation NLL per agent-round by epoch, the selected epoch marked."""
    figure = _figure(6.4, 3.6)
    axis = figure.subplots()
    epochs = [row.get("epoch", k + 1) for k, row in enumerate(history)]
    for key, label, color in (("train_nll", "train", "tab:blue"), ("valid_nll", "validation", "tab:orange")):
        values = [row.get(key, np.nan) for row in history]
        if not all(np.isnan(values)):
            axis.plot(epochs, values, label=label, color=color, marker="." if len(epochs) < 40 else None)
    if selected_epoch:
        axis.axvline(selected_epoch, color="black", ls="--", lw=1, label=f"selected epoch {selected_epoch}")
    axis.set_xlabel("epoch")
    axis.set_ylabel("NLL per agent-round (nats)")
    axis.set_title("Learning curves")
    axis.legend(fontsize=8)
    return png(figure)


def calibration_figure(calibration: Calibration, title: str) -> bytes:
    """Predicted (lines) against observed (dots) frequency of the most played actions, by round."""
    figure = _figure(6.4, 3.8)
    axis = figure.subplots()
    width = calibration.rounds_per_row
    rounds = calibration.round_centres
    shown = np.argsort(-calibration.observed.sum(0), kind="stable")[:MAX_CURVES]
    colors: Any = [f"C{k}" for k in range(len(shown))]
    for color, action in zip(colors, sorted(shown.tolist()), strict=True):
        axis.plot(rounds, calibration.predicted[:, action], color=color, lw=1.5, label=f"action {action}")
        axis.plot(rounds, calibration.observed[:, action], color=color, ls="none", marker="o", ms=2.5, alpha=0.7)
    axis.set_xlabel("round" if width == 1 else f"round (bins of {width})")
    axis.set_ylabel("action frequency")
    hidden = calibration.predicted.shape[1] - len(shown)
    suffix = f" ({hidden} least played actions not shown)" if hidden else ""
    axis.set_title(f"{title}: predicted (lines) vs observed (dots){suffix}", fontsize=9)
    axis.legend(fontsize=7, ncol=2)
    return png(figure)


def support_figure(support: Support) -> bytes:
    """Per agent: visit counts of the visited contexts, most visited first (log scale), with the share visited."""
    figure = _figure(6.4, 3.6)
    axis = figure.subplots()
    for agent in range(min(support.n_agents, MAX_CURVES)):
        counts = support.visit_counts(agent)
        share = len(counts) / support.n_contexts
        axis.plot(np.arange(1, len(counts) + 1), counts, label=f"agent {agent}: {len(counts)} ({share:.0%})")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("context rank (most visited first)")
    axis.set_ylabel("rounds visiting the context")
    shown = "" if support.n_agents <= MAX_CURVES else f" (agents 0..{MAX_CURVES - 1} of {support.n_agents})"
    axis.set_title(f"Support: contexts a_-i visited, of {support.n_contexts} per agent{shown}", fontsize=9)
    axis.legend(fontsize=7, ncol=2 if support.n_agents > 4 else 1)
    return png(figure)
