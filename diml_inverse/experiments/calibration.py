"""The calibration study: how often do nominal 90 % intervals contain the true payoff differences?

For each game (E1–E3 and small games of the recovery zoo) and run seed ``s``: the truth of seed ``s`` is recorded
with the game's logit-Q learner (60 episodes x 60 rounds), split 80/20 by episode order, and two kinds of
interval are built from the training episodes alone:

* **bootstrap**: :func:`diml_inverse.bootstrap` of the DIML fit (:attr:`CalibrationConfig.bootstrap_fit`), with
  ``n_replicates`` refits; every method of :func:`~diml_inverse.uncertainty.bootstrap_interval`;
* **standard errors**: the tabular MLE fitted to convergence (:attr:`CalibrationConfig.se_fit`) and
  :func:`diml_inverse.standard_errors` (observed information and sandwich), delta-method normal intervals;
* **posterior**: the default fit's interaction family under its tuned prior (:attr:`CalibrationConfig.posterior_fit`)
  and :func:`diml_inverse.standard_errors`' Laplace posterior (and the penalised estimate's sandwich).

Both are scored on ``n_contexts`` joint actions of the *test* episodes: every identified difference
``u_i(a, a_-i) - u_i(a_i, a_-i)`` with ``a != a_i``. Columns of ``results.csv`` (one row per game, seed, method):

* ``coverage``: share of true differences inside the interval (target: the nominal level);
* ``finite``: share of intervals of finite width (the tabular SEs are infinite off the training support);
* ``coverage_finite``: coverage among the finite intervals;
* ``median_width``: median width of the finite intervals; ``rms_truth``: RMS of the true differences;
  ``width_ratio = median_width / rms_truth`` (below 1: informative);
* ``slope``: ``sum(estimate * truth) / sum(truth**2)`` over the scored differences (below 1: the point estimate
  is shrunk toward zero, a bias that intervals centred on it inherit);
* ``seconds``: wall time of the fits and intervals.

Files (``OUT/calibration/``): ``seed<s>/<game>.bootstrap.csv``, ``.se.csv`` and ``.posterior.csv`` (written as each part
finishes; ``resume`` keeps them), the merged ``results.csv`` and ``table.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diml_inverse.config import FitConfig
from diml_inverse.experiments.configs import E1_E3_LEARNER, PUBLISHED
from diml_inverse.experiments.report import read_rows
from diml_inverse.experiments.runner import write_rows
from diml_inverse.experiments.zoo.catalog import register_zoo, zoo_game
from diml_inverse.fit import fit
from diml_inverse.metrics import derive_seed
from diml_inverse.uncertainty import INTERVAL_METHODS, StandardErrorsError, bootstrap, standard_errors
from diml_inverse.uncertainty.standard_errors import check_level, normal_quantile
from mechgym.errors import ConfigurationError, suggest
from mechgym.mechanisms import Mechanism
from mechgym.registration import make
from mechgym.rollout import rollout
from mechgym.traces import TraceDataset

__all__ = [
    "CALIBRATION_GAMES",
    "CalibrationConfig",
    "bootstrap_rows",
    "build_calibration_report",
    "calibration_case",
    "calibration_config",
    "interval_scores",
    "posterior_rows",
    "run_calibration",
    "run_calibration_game",
    "standard_error_rows",
]

#: The study's games: the paper's E1–E3 and five small zoo games (3–4 agents, 3–5 actions).
CALIBRATION_GAMES: tuple[str, ...] = (
    "E1",
    "E2",
    "E3",
    "Coordination",
    "AntiCoordination",
    "ShapleyCostSharing",
    "PluralityVoting",
    "Polymatrix",
)
RESULTS_FILE, TABLE_FILE = "results.csv", "table.md"
SE_METHODS: tuple[str, ...] = ("SE observed", "SE robust")
POSTERIOR_METHODS: tuple[str, ...] = ("posterior (interaction)", "posterior sandwich")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationConfig:
    """What the calibration study runs."""

    games: tuple[str, ...] = CALIBRATION_GAMES
    """Games: ``"E1"``-``"E3"`` or small zoo games by name."""
    n_replicates: int = 20
    """Bootstrap refits per game and seed."""
    level: float = 0.9
    """Nominal coverage of every interval."""
    bootstrap_fit: FitConfig = dataclasses.field(
        default_factory=lambda: FitConfig(model="neural", optimizer="adam", epochs=40, progress=False)
    )
    """The fit the bootstrap repeats: the paper's neural DIML (Adam, its published settings) with a small budget,
    40 epochs of two steps with the epoch selected by held-out likelihood, so that 21 fits per game and seed fit
    the shared machine."""
    se_fit: FitConfig = dataclasses.field(
        default_factory=lambda: FitConfig(
            model="tabular",
            optimizer="lbfgs",
            epochs=60,
            valid_fraction=0.0,
            select="last",
            payoff_l2=0.0,
            weight_decay=0.0,
            progress=False,
        )
    )
    """The fit the standard errors describe: the tabular MLE, unpenalised, to convergence (full-batch L-BFGS)."""
    n_episodes: int = 60
    """Episodes recorded per game and seed (train + test)."""
    n_rounds: int = 60
    """Rounds per episode."""
    n_contexts: int = 200
    """Test joint actions scored (each gives ``N (A - 1)`` differences)."""
    bootstrap_label: str = "bootstrap"
    """The bootstrap rows' method prefix (``"bootstrap MLE"`` when the bootstrapped fit is :attr:`se_fit`)."""
    standard_errors: bool = True
    """Also score the standard errors (skipped when only a second bootstrap is wanted)."""
    posterior_fit: FitConfig = dataclasses.field(default_factory=lambda: FitConfig(model="interaction", progress=False))
    """The fit the posterior intervals describe: the default fit's interaction family (L-BFGS, prior tuned on the
    held-out episodes)."""
    posterior: bool = True
    """Also score the posterior intervals."""
    bootstrap: bool = True
    """Also score the bootstrap (skipped when only the other intervals are wanted)."""
    smoke: bool = False
    """Tiny sizes: proves the pipeline only."""


def calibration_config(
    *,
    games: Sequence[str] | None = None,
    n_replicates: int | None = None,
    epochs: int | None = None,
    model: str | None = None,
    bootstrap_mle: bool = False,
    standard_errors: bool = True,
    posterior: bool = True,
    bootstrap: bool = True,
    smoke: bool = False,
) -> CalibrationConfig:
    """The study's configuration with the command line's choices.

    Raises:
        ConfigurationError: an unknown game (with a did-you-mean) or a bad count.
    """
    for name in games or ():
        _check_game(name)
    config = CalibrationConfig(
        games=tuple(games) if games else CALIBRATION_GAMES, posterior=posterior, bootstrap=bootstrap
    )
    fit_changes: dict[str, Any] = {}
    if smoke:
        config = dataclasses.replace(config, n_replicates=3, n_episodes=10, n_rounds=12, n_contexts=20, smoke=True)
        fit_changes["epochs"] = 2
        config = dataclasses.replace(config, se_fit=dataclasses.replace(config.se_fit, epochs=20))
        config = dataclasses.replace(config, posterior_fit=dataclasses.replace(config.posterior_fit, epochs=5))
    if n_replicates is not None:
        config = dataclasses.replace(config, n_replicates=n_replicates)
    if epochs is not None:
        fit_changes["epochs"] = epochs
    if model is not None:
        fit_changes["model"] = model
    if bootstrap_mle:  # bootstrap the estimator the standard errors describe: separates its bias from the method
        mle = config.se_fit if epochs is None else dataclasses.replace(config.se_fit, epochs=epochs)
        return dataclasses.replace(
            config, bootstrap_fit=mle, bootstrap_label="bootstrap MLE", standard_errors=standard_errors
        )
    bootstrap_fit = dataclasses.replace(config.bootstrap_fit, **fit_changes)
    return dataclasses.replace(config, bootstrap_fit=bootstrap_fit, standard_errors=standard_errors)


def _check_game(name: str) -> None:
    if name.lower() in PUBLISHED and name.lower() != "e4":
        return
    try:
        zoo_game(name)
    except ConfigurationError:
        raise ConfigurationError(suggest(name, [*CALIBRATION_GAMES], "calibration game")) from None


def record_game(config: CalibrationConfig, name: str, run_seed: int) -> tuple[Mechanism, str, TraceDataset]:
    """The truth of ``run_seed``, the env id and the recorded traces of game ``name``."""
    n_episodes, n_rounds = config.n_episodes, config.n_rounds
    data_seed = derive_seed(run_seed, f"calibration/{name}/data")
    if name.lower() in PUBLISHED:
        game = PUBLISHED[name.lower()].games[0]
        env = make(game.env_id, **{**game.make_kwargs(run_seed), "n_rounds": n_rounds})
        return env.mechanism, game.env_id, rollout(env, E1_E3_LEARNER, n_episodes, n_rounds, seed=data_seed)
    register_zoo()
    zoo = zoo_game(name)
    env = make(zoo.env_id, n_rounds=n_rounds, mechanism_seed=run_seed)
    return env.mechanism, zoo.env_id, rollout(env, zoo.learner, n_episodes, n_rounds, seed=data_seed)


def true_differences(truth: Mechanism, joint: torch.Tensor) -> np.ndarray:
    """``u_i(a, a_-i) - u_i(a_i, a_-i)`` of the truth, ``[K, N, A]`` (float64)."""
    with torch.no_grad():
        cf = truth.counterfactual_payoffs(joint).double()
        return (cf - cf.gather(-1, joint[..., None])).numpy()


def interval_scores(
    truth: np.ndarray, estimate: np.ndarray, low: np.ndarray, high: np.ndarray, scored: np.ndarray
) -> dict[str, float]:
    """Coverage, finite share, widths and shrinkage slope of intervals over the ``scored`` entries."""
    truth, estimate, low, high = (np.asarray(x, dtype=np.float64)[scored] for x in (truth, estimate, low, high))
    inside = (low <= truth) & (truth <= high)
    finite = np.isfinite(low) & np.isfinite(high)
    width = (high - low)[finite]
    rms = float(np.sqrt(np.mean(truth**2)))
    median_width = float(np.median(width)) if width.size else math.inf
    return {
        "coverage": float(inside.mean()),
        "finite": float(finite.mean()),
        "coverage_finite": float(inside[finite].mean()) if finite.any() else math.nan,
        "median_width": median_width,
        "rms_truth": rms,
        "width_ratio": median_width / rms if rms > 0 else math.nan,
        "slope": float((estimate * truth).sum() / (truth**2).sum()) if rms > 0 else math.nan,
    }


@dataclass(frozen=True)
class CalibrationCase:
    """One game at one seed: the training episodes, and the held-out differences the intervals are scored on."""

    env_id: str
    train: TraceDataset
    joint: torch.Tensor
    """Test joint actions ``[K, N]``."""
    truth: np.ndarray
    """Their true differences ``[K, N, A]``."""
    scored: np.ndarray
    """Which entries are scored (every ``a != a_i``), ``[K, N, A]``."""
    row: dict[str, Any]
    """The columns every row of the case starts with."""


def calibration_case(config: CalibrationConfig, name: str, run_seed: int) -> CalibrationCase:
    """Record game ``name`` at ``run_seed``, split it 80/20 and draw the test joint actions to score."""
    truth, env_id, traces = record_game(config, name, run_seed)
    train, test = traces.split(0.8)
    generator = torch.Generator().manual_seed(derive_seed(run_seed, f"calibration/{name}/contexts"))
    test_joint = test.actions_tensor().reshape(-1, truth.n_agents)
    joint = test_joint[torch.randperm(test_joint.shape[0], generator=generator)[: config.n_contexts]]
    reference = true_differences(truth, joint)
    scored = np.ones(reference.shape, dtype=bool)
    scored[np.arange(joint.shape[0])[:, None], np.arange(truth.n_agents)[None, :], joint.numpy()] = False
    row = {"game": name, "seed": run_seed, "n_agents": truth.n_agents, "n_actions": truth.n_actions}
    return CalibrationCase(env_id, train, joint, reference, scored, row)


def bootstrap_rows(config: CalibrationConfig, case: CalibrationCase) -> list[dict[str, Any]]:
    """The bootstrap of :attr:`CalibrationConfig.bootstrap_fit` on the case, scored by every interval method."""
    name, run_seed = case.row["game"], case.row["seed"]
    started = time.perf_counter()
    boot = bootstrap(
        case.env_id,
        case.train,
        n_replicates=config.n_replicates,
        seed=derive_seed(run_seed, f"calibration/{name}/bootstrap"),
        progress=False,
        config=dataclasses.replace(config.bootstrap_fit, seed=derive_seed(run_seed, f"calibration/{name}/fit")),
    )
    seconds = time.perf_counter() - started
    estimate = boot.payoff_differences(case.joint).double().numpy()
    rows = []
    for method in INTERVAL_METHODS:
        low, high = boot.payoff_differences_interval(case.joint, config.level, method=method)  # type: ignore[arg-type]
        scores = interval_scores(case.truth, estimate, low.numpy(), high.numpy(), case.scored)
        rows.append({**case.row, "method": f"{config.bootstrap_label} {method}", **scores, "seconds": seconds})
    return rows


def standard_error_rows(config: CalibrationConfig, case: CalibrationCase) -> list[dict[str, Any]]:
    """The tabular MLE's delta-method intervals (observed information, sandwich) on the case."""
    name, run_seed = case.row["game"], case.row["seed"]
    started = time.perf_counter()
    tabular = fit(case.env_id, case.train, config=dataclasses.replace(config.se_fit, seed=derive_seed(run_seed, name)))
    return _error_rows(config, case, tabular, SE_METHODS, started)


def posterior_rows(config: CalibrationConfig, case: CalibrationCase) -> list[dict[str, Any]]:
    """The interaction fit's Laplace posterior intervals (and its sandwich) on the case."""
    name, run_seed = case.row["game"], case.row["seed"]
    started = time.perf_counter()
    seed = derive_seed(run_seed, f"calibration/{name}/posterior")
    result = fit(case.env_id, case.train, config=dataclasses.replace(config.posterior_fit, seed=seed))
    return _error_rows(config, case, result, POSTERIOR_METHODS, started)


def _error_rows(
    config: CalibrationConfig, case: CalibrationCase, result: Any, labels: Sequence[str], started: float
) -> list[dict[str, Any]]:
    """Score ``standard_errors(result)``'s normal intervals (observed, then robust) under ``labels``."""
    try:
        errors = standard_errors(result, case.train)
    except StandardErrorsError as error:  # recorded, not fatal: the other games and seeds still run
        logger.warning("%s seed %d: no standard errors: %s", case.row["game"], case.row["seed"], error)
        nan = {key: math.nan for key in interval_scores(case.truth, case.truth, case.truth, case.truth, case.scored)}
        return [{**case.row, "method": label, **nan, "seconds": math.nan} for label in labels]
    estimate, se, robust_se = errors.payoff_differences(case.joint)  # once: the two intervals share them
    z = float(normal_quantile(0.5 + config.level / 2))
    rows = []
    for label, errors_of in zip(labels, (se, robust_se), strict=True):
        low, high = estimate - z * errors_of, estimate + z * errors_of  # payoff_differences_interval's
        scores = interval_scores(case.truth, estimate, low, high, case.scored)
        rows.append({**case.row, "method": label, **scores, "seconds": time.perf_counter() - started})
    return rows


def run_calibration_game(config: CalibrationConfig, name: str, run_seed: int) -> list[dict[str, Any]]:
    """Record one game at one seed, build every interval from its training episodes, score them on its test ones."""
    check_level(config.level)
    case = calibration_case(config, name, run_seed)
    rows = bootstrap_rows(config, case) if config.bootstrap else []
    rows += standard_error_rows(config, case) if config.standard_errors else []
    return rows + posterior_rows(config, case) if config.posterior else rows


def game_file(out: Path, seed: int, name: str, part: str) -> Path:
    """``OUT/calibration/seed<s>/<game>.<part>.csv`` (``part``: ``"bootstrap"``, ``"se"``, ``"posterior"``)."""
    return Path(out) / "calibration" / f"seed{seed}" / f"{name}.{part}.csv"


def run_calibration(
    config: CalibrationConfig, seeds: Sequence[int], out: str | Path, *, progress: bool = True, resume: bool = False
) -> dict[int, float]:
    """Run every game at every seed, writing ``OUT/calibration/seed<s>/<game>.{bootstrap,se}.csv`` as each finishes.

    Args:
        config: What to run.
        seeds: Run seeds.
        out: The output directory.
        progress: A progress bar over the games.
        resume: Keep the files already written and run only the missing parts.

    Returns:
        Wall seconds per seed.

    Raises:
        ConfigurationError: no seeds, or a seed that is not a non-negative integer.
    """
    if not seeds:
        raise ConfigurationError("run_calibration needs at least one seed")
    walls: dict[int, float] = {}
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigurationError(f"a run seed must be a non-negative integer; got {seed!r}")
        started = time.perf_counter()
        for name in tqdm(config.games, desc=f"calibration seed {seed}", disable=not progress, leave=False):
            parts = {
                "bootstrap": bootstrap_rows if config.bootstrap else None,
                "se": standard_error_rows if config.standard_errors else None,
                "posterior": posterior_rows if config.posterior else None,
            }
            case = None
            for part, rows_of in parts.items():
                path = game_file(Path(out), seed, name, part)
                if rows_of is None or (resume and path.exists()):
                    continue
                case = case if case is not None else calibration_case(config, name, seed)
                write_rows(path, rows_of(config, case))
        walls[seed] = time.perf_counter() - started
    return walls


def _summary(values: Sequence[Any], how: str = "mean") -> float:
    """The mean (or median) of the finite values; NaN when there are none (a game whose errors failed)."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return math.nan
    return float(np.mean(finite) if how == "mean" else np.median(finite))


def markdown_table(rows: Sequence[Mapping[str, Any]], level: float = 0.9) -> str:
    """Per method: coverage (pooled over games and seeds, and its range over games), widths against the RMS."""
    seeds = sorted({int(row["seed"]) for row in rows})
    games = list(dict.fromkeys(str(row["game"]) for row in rows))
    methods = list(dict.fromkeys(str(row["method"]) for row in rows))
    lines = [
        f"Nominal {level:.0%} intervals; {len(games)} games ({', '.join(games)}) x seeds {', '.join(map(str, seeds))}. "
        "coverage: mean over games and seeds (min–max of the per-game means); width ratio: median interval width "
        "/ RMS of the true differences (median over games and seeds); slope < 1: estimates shrunk toward zero.",
        "",
        "| method | coverage | per-game range | finite | coverage of finite | width ratio | slope |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method in methods:
        group = [row for row in rows if row["method"] == method]
        per_game = [_summary([r["coverage"] for r in group if r["game"] == game]) for game in games]
        finite_games = [value for value in per_game if math.isfinite(value)] or [math.nan]
        cells = [
            f"{_summary([r['coverage'] for r in group]):.3f}",
            f"{min(finite_games):.2f}–{max(finite_games):.2f}",
            f"{_summary([r['finite'] for r in group]):.2f}",
            f"{_summary([r['coverage_finite'] for r in group]):.3f}",
            f"{_summary([r['width_ratio'] for r in group], 'median'):.2f}",
            f"{_summary([r['slope'] for r in group], 'median'):.2f}",
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Per game (mean over seeds): coverage / width ratio", ""]
    lines += ["| game | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for game in games:
        cells = []
        for method in methods:
            group = [r for r in rows if r["game"] == game and r["method"] == method]
            coverage = _summary([r["coverage"] for r in group])
            ratio = _summary([r["width_ratio"] for r in group], "median")
            cells.append(f"{coverage:.2f} / {ratio:.2f}")
        lines.append(f"| {game} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_calibration_report(out: str | Path, seeds: Sequence[int] | None = None) -> dict[str, Path]:
    """Merge ``OUT/calibration/seed*/*.csv`` into ``results.csv`` and ``table.md``.

    Raises:
        ConfigurationError: there are no results under ``OUT/calibration``.
    """
    root = Path(out) / "calibration"
    rows = [row for path in sorted(root.glob("seed*/*.csv")) for row in read_rows(path)]
    if seeds is not None:
        rows = [row for row in rows if int(row["seed"]) in set(seeds)]
    if not rows:
        raise ConfigurationError(f"no calibration results under {root}; run the study first")
    order = {name: k for k, name in enumerate(CALIBRATION_GAMES)}
    rows.sort(key=lambda row: (order.get(str(row["game"]), len(order)), str(row["game"]), int(row["seed"])))
    paths = {"results": write_rows(root / RESULTS_FILE, rows), "markdown": root / TABLE_FILE}
    paths["markdown"].write_text(markdown_table(rows))
    return paths
