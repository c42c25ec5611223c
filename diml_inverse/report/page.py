"""``write_report``: one self-contained HTML page about a fit, with its PNG figures embedded as data URIs.

The page is one file, so it can be moved, mailed or archived without losing its figures, and it is written
atomically (:func:`mechgym.files.atomic_write`) without leaving a folder of images to clean up or to overwrite
by surprise. Sections: the fit's summary, learning curves, calibration by round (on the test traces when
given), the support of the training traces, and the payoff differences of the most frequent joint actions,
with intervals from a bootstrap when one is given and off-support contexts flagged.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from diml_inverse.report.calibration import calibration
from diml_inverse.report.figures import calibration_figure, learning_curves_figure, support_figure
from diml_inverse.report.support import Support, training_support
from diml_inverse.result import FitResult
from mechgym.errors import ConfigurationError
from mechgym.files import atomic_write
from mechgym.traces import TraceDataset
from mechgym.validation import check_int

__all__ = ["PayoffIntervals", "frequent_joint_actions", "write_report"]

#: Payoff-difference tables show at most this many actions per agent, and this many agents per joint action.
MAX_TABLE_ACTIONS = 12
MAX_TABLE_AGENTS = 12


class PayoffIntervals(Protocol):
    """What the report reads of a bootstrap (``diml_inverse.bootstrap``'s result): two methods, ``[..., N, A]``."""

    def payoff_differences(self, joint_actions: Tensor) -> Tensor: ...

    def payoff_differences_interval(self, joint_actions: Tensor, level: float = 0.9) -> tuple[Tensor, Tensor]: ...


def frequent_joint_actions(traces: TraceDataset, n: int) -> Tensor:
    """The ``n`` most frequent joint actions of ``traces`` (all rounds), most frequent first, ``[n', N]``."""
    rows = traces.actions.reshape(-1, traces.n_agents)
    counts = Counter(map(tuple, rows.tolist()))
    return torch.tensor([list(joint) for joint, _ in counts.most_common(n)], dtype=torch.long)


def _image(title: str, data: bytes, caption: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _summary(result: FitResult, traces: TraceDataset | None, test: TraceDataset | None) -> str:
    params = ", ".join(f"{k}={v:.4g}" for k, v in result.learner.params().items() if isinstance(v, float))
    rows = [
        ("game", result.env_id or "(not recorded)"),
        ("model", result.model_name),
        ("assumed learner", f"{result.learner.name} ({params})"),
        ("epochs", f"{len(result.history)}; selected {result.selected_epoch} (best held-out {result.best_epoch})"),
        ("episodes", f"{result.n_train_episodes} train, {result.n_valid_episodes} validation"),
        ("training traces", "not given" if traces is None else f"{traces.n_episodes} episodes x {traces.n_rounds}"),
        ("test traces", "not given" if test is None else f"{test.n_episodes} episodes x {test.n_rounds}"),
    ]
    if not math.isnan(result.seconds):
        rows.append(("fit time", f"{result.seconds:.1f} s on {result.fit_device}"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='summary'>{body}</table>"


def _cell(estimate: float, interval: tuple[float, float] | None) -> str:
    if interval is None:
        return f"{estimate:+.3f}"
    return f"{estimate:+.3f} <span class='ci'>[{interval[0]:+.3f}, {interval[1]:+.3f}]</span>"


def _differences_table(
    result: FitResult, joint: Tensor, support: Support | None, bootstrap: PayoffIntervals | None, level: float
) -> str:
    """One row per (joint action, agent): the differences ``u_i(a, a_-i) - u_i(a_i, a_-i)`` over ``a``."""
    estimate = result.payoff_differences(joint).double().cpu()
    low = high = None
    notes = []
    if bootstrap is not None:
        lows, highs = bootstrap.payoff_differences_interval(joint, level=level)
        low, high = lows.double().cpu(), highs.double().cpu()
        if low.shape != estimate.shape or high.shape != estimate.shape:
            raise ConfigurationError(
                f"the bootstrap's intervals have shape {list(low.shape)}, the fit's differences "
                f"{list(estimate.shape)}; pass a bootstrap of this fit's game"
            )
        centre = bootstrap.payoff_differences(joint).double().cpu()
        notes.append(
            f"Intervals: {level:.0%} bootstrap intervals. Largest difference between the fit's estimate and the "
            f"bootstrap's point estimate: {float((centre - estimate).abs().max()):.3g}."
        )
    flags = None if support is None else support.on_support(joint)
    n_actions = min(result.mechanism.n_actions, MAX_TABLE_ACTIONS)
    header = "".join(f"<th>a={a}</th>" for a in range(n_actions))
    lines = [f"<table class='differences'><tr><th>joint action</th><th>agent</th><th>support</th>{header}</tr>"]
    for row, joint_action in enumerate(joint.tolist()):
        for agent in range(min(len(joint_action), MAX_TABLE_AGENTS)):
            on = None if flags is None else bool(flags[row, agent])
            status = "unknown" if on is None else ("visited" if on else "OFF-SUPPORT")
            css = " class='off'" if on is False else ""
            cells = "".join(
                "<td>"
                + _cell(
                    float(estimate[row, agent, a]),
                    None if low is None or high is None else (float(low[row, agent, a]), float(high[row, agent, a])),
                )
                + "</td>"
                for a in range(n_actions)
            )
            lines.append(f"<tr{css}><td>{joint_action}</td><td>{agent}</td><td>{status}</td>{cells}</tr>")
    lines.append("</table>")
    if result.mechanism.n_actions > n_actions:
        notes.append(f"Only actions 0..{n_actions - 1} of {result.mechanism.n_actions} are shown.")
    if result.mechanism.n_agents > MAX_TABLE_AGENTS:
        notes.append(f"Only agents 0..{MAX_TABLE_AGENTS - 1} of {result.mechanism.n_agents} are shown.")
    if flags is not None and not flags.all():
        notes.append(
            f"{int((~flags).sum())} of {flags.size} (joint action, agent) contexts were never visited by the "
            "training traces: their differences are the model's extrapolation, not identified by the data."
        )
    return "\n".join(lines) + "".join(f"<p>{html.escape(note)}</p>" for note in notes)


_STYLE = """
body { font-family: sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
table.summary th, table.summary td { text-align: left; }
tr.off td { background: #fde0dc; }
.ci { color: #666; font-size: 0.9em; }
figure { margin: 1em 0; } img { max-width: 100%; }
"""


def _check_traces(name: str, traces: Any, result: FitResult) -> TraceDataset | None:
    if traces is None:
        return None
    if not isinstance(traces, TraceDataset):
        raise ConfigurationError(
            f"{name} must be a TraceDataset (mechgym.load_traces(path)); got {type(traces).__name__}"
        )
    shape = (result.mechanism.n_agents, result.mechanism.n_actions)
    if (traces.n_agents, traces.n_actions) != shape:
        raise ConfigurationError(
            f"{name} have {traces.n_agents} agents x {traces.n_actions} actions, the fit {shape[0]} x {shape[1]}; "
            "pass traces of the fitted game"
        )
    return traces


def _calibration_section(result: FitResult, traces: TraceDataset, where: str) -> str:
    fit_calibration = calibration(result, traces).binned()
    return _image(
        "calibration",
        calibration_figure(fit_calibration, f"Calibration on the {where}"),
        f"One-step-ahead predicted action frequency against the observed one, by round (pooled in bins of "
        f"{fit_calibration.rounds_per_row} rounds), on the {where}. Largest gap {fit_calibration.max_abs_error:.3f}"
        f"; sampling alone reaches about {fit_calibration.noise_floor:.3f} ({fit_calibration.n_draws} draws per bin).",
    )


def _support_section(train: TraceDataset | None, n_actions: int) -> tuple[Support | None, str]:
    """The support of the training traces (``None`` without them or for too many contexts) and its section."""
    if train is None:
        return None, "<p>No training traces given: the support of the data is unknown.</p>"
    try:
        support = training_support(train.actions, n_actions)
    except ConfigurationError as error:  # A^(N-1) contexts too many to key: large games
        return None, f"<p>{html.escape(f'The support is not analysed: {error}.')}</p>"
    visited = ", ".join(map(str, support.n_visited))
    caption = (
        f"Counterfactual contexts a_-i visited by the {support.n_rounds_seen} scored rounds of the training traces, "
        f"per agent: {visited} of {support.n_contexts}. Payoff differences are identified only there."
    )
    return support, _image("support", support_figure(support), caption)


def write_report(
    result: FitResult,
    path: str | Path,
    test_traces: TraceDataset | None = None,
    bootstrap: PayoffIntervals | None = None,
    *,
    traces: TraceDataset | None = None,
    joint_actions: Tensor | np.ndarray | None = None,
    n_joint_actions: int = 8,
    level: float = 0.9,
    overwrite: bool = False,
) -> Path:
    """Write one HTML page about ``result`` (see :meth:`FitResult.report <diml_inverse.FitResult.report>`).

    Args:
        result: The fit.
        path: The page to write (``.html``); its directory is created.
        test_traces: Held-out episodes: calibration is computed on them (else on ``traces``).
        bootstrap: Intervals of the payoff differences (``diml_inverse.bootstrap``'s result), or ``None``.
        traces: The training traces: their support, and calibration when ``test_traces`` is ``None``.
        joint_actions: Joint actions ``[K, N]`` of the payoff-difference table (default: the most frequent
            ones of ``test_traces``, else of ``traces``).
        n_joint_actions: How many frequent joint actions the default table shows.
        level: Nominal level of the bootstrap intervals.
        overwrite: Replace an existing file at ``path``.

    Returns:
        The path written.

    Raises:
        ConfigurationError: ``path`` exists (without ``overwrite``) or is a directory; neither ``traces`` nor
            ``test_traces`` is given; traces of another game; a bad ``level`` or ``n_joint_actions``.
    """
    target = Path(path)
    if target.is_dir() or (target.exists() and not overwrite):
        what = "is a directory" if target.is_dir() else "already exists; pass overwrite=True to replace it"
        raise ConfigurationError(f"the report {target} {what}")
    train = _check_traces("traces", traces, result)
    test = _check_traces("test_traces", test_traces, result)
    if train is None and test is None:
        raise ConfigurationError("a report needs traces: pass traces=<the training traces> and/or test_traces=")
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise ConfigurationError(f"level must be a number in (0, 1), e.g. 0.9; got {level!r}")
    n_joint_actions = check_int(n_joint_actions, "n_joint_actions", low=1)
    scored = test if test is not None else train
    assert scored is not None  # one of the two, checked above
    if joint_actions is None:
        joint = frequent_joint_actions(scored, n_joint_actions)
    else:
        joint = torch.as_tensor(np.asarray(joint_actions), dtype=torch.long).reshape(-1, result.mechanism.n_agents)
    support, support_section = _support_section(train, result.mechanism.n_actions)
    sections = [f"<h1>Fit report: {html.escape(result.env_id or 'fit')}</h1>", _summary(result, train, test)]
    sections.append("<h2>Learning curves</h2>")
    if result.history:
        curves = learning_curves_figure(result.history, result.selected_epoch)
        sections.append(_image("learning curves", curves, "NLL per agent-round; dashed: the selected epoch."))
    where = "held-out test traces" if test is not None else "training traces (no test traces given)"
    sections += ["<h2>Calibration</h2>", _calibration_section(result, scored, where), "<h2>Support</h2>"]
    sections.append(support_section)
    sections += [
        "<h2>Payoff differences</h2>",
        "<p>Row (joint action a, agent i), column a': u_i(a', a_-i) - u_i(a_i, a_-i), what behaviour identifies "
        "(Theorem 1); the played action's entry is 0. Support: whether the training traces visited the context "
        "a_-i.</p>",
        _differences_table(result, joint, support, bootstrap, level),
    ]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Fit report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(file: IO[bytes]) -> None:
        file.write(page.encode("utf-8"))

    return atomic_write(target, write)
