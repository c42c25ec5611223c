"""Run an experiment: record data with mechgym, fit every method, evaluate every epoch, write CSVs.

For run seed ``s`` the truth is ``mechgym.make(..., mechanism_seed=s)``; the data, the fits and the
evaluation each get their own seed derived from ``s`` (:func:`run_seeds`), so evaluating more or less
often never changes the data or the fits. Each (experiment, seed, game) writes its files under
``OUT/<experiment>/seed<s>/<game>/``; :mod:`diml_inverse.experiments.report` merges them.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from diml_inverse.experiments.configs import ExperimentConfig, GameConfig, MethodConfig
from diml_inverse.fit import fit
from diml_inverse.metrics import Evaluator, derive_seed
from diml_inverse.sweep import SWEEP_DIRECTORY, SweepOptions, Task, TaskOutcome
from mechgym.devices import DeviceLike, resolve_device
from mechgym.errors import ConfigurationError
from mechgym.files import atomic_write
from mechgym.learners import LogitQ
from mechgym.mechanisms import Mechanism
from mechgym.registration import make
from mechgym.rollout import rollout
from mechgym.traces import TraceDataset

logger = logging.getLogger(__name__)

CURVES_FILE, FINAL_FILE, TIMING_FILE, CONFIG_FILE = "curves.csv", "final.csv", "timing.csv", "config.json"


@dataclass(frozen=True)
class RunSeeds:
    """The independent seeds of one game of one run seed."""

    mechanism: int
    """``mechanism_seed`` of the truth: the run seed itself (seed s -> truth s)."""
    data: int
    """Seed of the recorded episodes."""
    fit: int
    """Seed of every method's initialisation and minibatch order (shared: paired comparisons)."""
    evaluation: int
    """Seed of the metrics' contexts and simulations."""


def run_seeds(config: ExperimentConfig, game: GameConfig, seed: int) -> RunSeeds:
    """Derive the data, fit and evaluation seeds of ``game`` from the run seed (one stream per purpose)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"a run seed must be a non-negative integer; got {seed!r}")
    prefix = f"experiments/{config.name}/{game.label}"
    return RunSeeds(
        mechanism=seed,
        data=derive_seed(seed, f"{prefix}/data"),
        fit=derive_seed(seed, f"{prefix}/fit"),
        evaluation=derive_seed(seed, f"{prefix}/evaluation"),
    )


@dataclass
class GameRun:
    """Rows produced by one game of one run seed."""

    curves: list[dict[str, Any]] = field(default_factory=list)
    """One row per (method, epoch): NLLs, diff_mse, cfkl_params (NaN where skipped), reference lines, times."""
    final: list[dict[str, Any]] = field(default_factory=list)
    """One row per (method, checkpoint): every metric at the best-validation and at the last epoch."""
    timing: list[dict[str, Any]] = field(default_factory=list)
    """One row per method (fit, per-epoch evaluation, final evaluation seconds) and one for the data."""


def assumed_learner(learner: LogitQ, method: MethodConfig) -> LogitQ:
    """The learner a method assumes: the generating one with ``beta`` times ``method.beta_factor``."""
    if method.beta_factor == 1.0:
        return learner
    return LogitQ(alpha=learner.alpha, beta=learner.beta * method.beta_factor, epsilon=learner.epsilon, q0=learner.q0)


def record_data(
    config: ExperimentConfig, game: GameConfig, seeds: RunSeeds, device: torch.device
) -> tuple[Mechanism, TraceDataset, TraceDataset]:
    """The truth (on ``device``) and the train/test episodes (split by episode order)."""
    env = make(game.env_id, **game.make_kwargs(seeds.mechanism))
    traces = rollout(env, config.learner, game.n_episodes, game.n_rounds, seed=seeds.data, device=device)
    train, test = traces.split(config.train_fraction)
    truth = copy.deepcopy(env.mechanism).to(device).freeze()
    return truth, train, test


def _fit_method(
    config: ExperimentConfig,
    game: GameConfig,
    method: MethodConfig,
    seed: int,
    seeds: RunSeeds,
    train: TraceDataset,
    evaluator: Evaluator,
    device: torch.device,
    progress: bool,
) -> GameRun:
    training, evaluation = config.training, config.evaluation
    epochs, assumed = training.epochs, assumed_learner(config.learner, method)
    keys = {"experiment": config.name, "game": game.label, "method": method.name, "seed": seed}
    snapshots: dict[str, Mechanism] = {}
    bar = tqdm(
        total=epochs,
        desc=f"{config.name} {game.label} {method.name} seed {seed}",
        unit="epoch",
        disable=not progress,
        leave=False,
    )

    def callback(epoch: int, mechanism: Mechanism) -> dict[str, float]:
        started = time.perf_counter()
        with_cfkl = epoch % evaluation.cf_every == 0 or epoch == epochs
        metrics = evaluator.epoch_metrics(mechanism, with_cfkl)
        if epoch == epochs:
            snapshots["last"] = copy.deepcopy(mechanism).eval()
        metrics["eval_seconds"] = time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(diff_mse=f"{metrics['diff_mse']:.3g}")
        return metrics

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        result = fit(
            game.env_id,
            train,
            learner=assumed,
            config=training,
            callback=callback,
            model=method.model,
            device=device,
            seed=seeds.fit,
            progress=False,
        )
    finally:
        bar.close()
    run = GameRun()
    cf_size = (evaluation.cf_episodes, evaluation.cf_rounds)
    references = {"zero_diff_mse": evaluator.zero_diff_mse, **evaluator.noise_floor(cf_size)}
    for row in result.history:
        fit_seconds = row["seconds"] - row["eval_seconds"]
        run.curves.append(
            {
                **keys,
                "epoch": int(row["epoch"]),
                "train_nll": row["train_nll"],
                "valid_nll": row.get("valid_nll", math.nan),
                "diff_mse": row["diff_mse"],
                **{column: row[column] for column in evaluator.kl_columns},
                **references,
                "fit_seconds": fit_seconds,
                "eval_seconds": row["eval_seconds"],
                "cfkl_seconds": row["cfkl_seconds"],
            }
        )
    final_started = time.perf_counter()
    final_size = (evaluation.final_cf_episodes, evaluation.final_cf_rounds)
    for checkpoint, mechanism, epoch in (
        ("best", result.mechanism, result.best_epoch),
        ("last", snapshots["last"], epochs),
    ):
        history = result.history[epoch - 1]
        known = {column: history[column] for column in evaluator.kl_columns} if final_size == cf_size else None
        metrics = evaluator.final_metrics(mechanism, assumed, known)
        run.final.append(
            {
                **keys,
                "checkpoint": checkpoint,
                "epoch": epoch,
                "valid_nll": history.get("valid_nll", math.nan),
                **metrics,
                "cf_episodes": final_size[0],
                "cf_rounds": final_size[1],
            }
        )
    run.timing.append(_timing_row(keys, run.curves, started, cpu_started, final_started))
    return run


def _timing_row(
    keys: Mapping[str, Any],
    curves: Sequence[Mapping[str, Any]],
    started: float,
    cpu_started: float,
    final_started: float,
) -> dict[str, Any]:
    """The timing row of one method's fit (fit, per-epoch and final evaluation seconds), logged at INFO."""
    finished = time.perf_counter()
    fit_total = sum(row["fit_seconds"] for row in curves)
    eval_total = sum(row["eval_seconds"] for row in curves)
    logger.info(
        "%s %s %s seed %d: %.1f s (fit %.1f s, evaluation %.1f s)",
        keys["experiment"],
        keys["game"],
        keys["method"],
        keys["seed"],
        finished - started,
        fit_total,
        eval_total + finished - final_started,
    )
    return {
        **keys,
        "fit_seconds": fit_total,
        "epoch_eval_seconds": eval_total,
        "epoch_cfkl_seconds": sum(row["cfkl_seconds"] for row in curves),
        "cfkl_evaluations": sum(not math.isnan(row["cfkl_params"]) for row in curves),
        "final_eval_seconds": finished - final_started,
        "total_seconds": finished - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }


def run_game(
    config: ExperimentConfig,
    game: GameConfig,
    seed: int,
    *,
    device: DeviceLike = "cpu",
    progress: bool = True,
) -> GameRun:
    """Record one game's data for run seed ``seed``, fit and evaluate every method of ``config``.

    Returns:
        The curves, final and timing rows (see :class:`GameRun`).
    """
    target = resolve_device(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    seeds = run_seeds(config, game, seed)
    truth, train, test = record_data(config, game, seeds, target)
    evaluation = config.evaluation
    cf_size = (evaluation.cf_episodes, evaluation.cf_rounds)
    final_size = (evaluation.final_cf_episodes, evaluation.final_cf_rounds)
    evaluator = Evaluator(
        truth,
        test,
        config.learner,
        diff_samples=evaluation.diff_samples,
        cf_episodes=evaluation.cf_episodes,
        cf_rounds=evaluation.cf_rounds,
        final_cf_episodes=evaluation.final_cf_episodes,
        final_cf_rounds=evaluation.final_cf_rounds,
        seed=seeds.evaluation,
        shift=evaluation.shift,
        binnings=evaluation.binnings,
    )
    evaluator.noise_floor(cf_size)
    evaluator.noise_floor(final_size)
    run = GameRun()
    run.timing.append(
        {
            "experiment": config.name,
            "game": game.label,
            "method": "(data and truth)",
            "seed": seed,
            "total_seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started,
        }
    )
    for method in config.methods:
        part = _fit_method(config, game, method, seed, seeds, train, evaluator, target, progress)
        run.curves += part.curves
        run.final += part.final
        run.timing += part.timing
    run.timing.append(
        {
            "experiment": config.name,
            "game": game.label,
            "method": "(all)",
            "seed": seed,
            "total_seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started,
        }
    )
    return run


def write_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV (columns: every key, in order of first appearance; floats in full precision), whole:
    the file appears complete or not at all (a crash mid-write leaves no partial file for ``--resume`` to keep)."""
    rows = list(rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))
    return path


def write_table(folder: Path, markdown: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """``folder/table.md`` (``markdown`` and a newline) and ``folder/table.json`` (``rows``), each written whole."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "table.md", lambda f: f.write((markdown + "\n").encode()))
    atomic_write(folder / "table.json", lambda f: f.write(json.dumps(list(rows), indent=2).encode()))


def game_directory(out: Path, name: str, seed: int, label: str) -> Path:
    """Where one game of one run seed of an experiment writes its files: ``OUT/<name>/seed<s>/<game>/``."""
    return Path(out) / name / f"seed{seed}" / label


def game_task(config: ExperimentConfig, game: GameConfig, seed: int, device: DeviceLike) -> dict[str, Any]:
    """One sweep task of :func:`run_experiment`: :func:`run_game` without progress bars, and its ``config.json``.

    Returns:
        ``{"run": GameRun, "description": dict}``, which :func:`write_game` writes.
    """
    run = run_game(config, game, seed, device=device, progress=False)
    description = {
        **config.to_dict(),
        "seed": seed,
        "device": str(resolve_device(device)),
        "torch_threads": torch.get_num_threads(),
    }
    return {"run": run, "description": description}


def write_game(directory: Path, run: GameRun, description: Mapping[str, Any]) -> None:
    """Write one game's ``curves.csv``, ``final.csv``, ``timing.csv`` and ``config.json`` under ``directory``."""
    write_rows(directory / CURVES_FILE, run.curves)
    write_rows(directory / FINAL_FILE, run.final)
    write_rows(directory / TIMING_FILE, run.timing)
    (directory / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")


def run_experiment(
    config: ExperimentConfig,
    seeds: Sequence[int],
    out: str | Path,
    *,
    device: DeviceLike = "cpu",
    progress: bool = True,
    sweep: SweepOptions | None = None,
) -> dict[int, float]:
    """Run every game of ``config`` for each run seed; write ``OUT/<name>/seed<s>/<game>/*.csv``.

    Each (seed, game) is one task of a sweep (:func:`diml_inverse.sweep.run_tasks`, on the engine that ``sweep``
    names); its ``curves.csv``, ``final.csv``, ``timing.csv`` and ``config.json`` are written as soon as it is
    done, so games and seeds may be run in separate invocations (e.g. one E4 scale at a time) and an interrupted
    run keeps what it finished (``sweep.resume`` skips it); :func:`~diml_inverse.experiments.report.build_report`
    merges them. The results do not depend on the engine or the number of workers.

    Args:
        config: The experiment.
        seeds: Run seeds (seed ``s`` -> truth ``s``, data, fits and evaluation derived from ``s``).
        out: Output directory.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        progress: Show one progress bar over the (seed, game) tasks.
        sweep: The engine, workers, threads per task and resume (default: this process, one torch thread).

    Returns:
        Seconds per run seed: the sum of its games' task seconds (its wall time when run sequentially).

    Raises:
        ConfigurationError: no seeds, a bad seed, or bad sweep options.
        SweepError: some tasks failed (the others' files are written; the message has every traceback).
    """
    if not seeds:
        raise ConfigurationError("run_experiment needs at least one seed")
    for seed in seeds:
        run_seeds(config, config.games[0], seed)  # checks the seed before anything runs
    options = sweep or SweepOptions()
    pairs = [(seed, game) for seed in seeds for game in config.games]
    tasks = [
        Task(f"{config.name}/seed{seed}/{game.label}", game_task, (config, game, seed, device)) for seed, game in pairs
    ]

    def write(index: int, outcome: TaskOutcome) -> None:
        if outcome.ok:
            seed, game = pairs[index]
            directory = game_directory(Path(out), config.name, seed, game.label)
            write_game(directory, outcome.result["run"], outcome.result["description"])

    outcomes = options.run(tasks, Path(out) / config.name / SWEEP_DIRECTORY, write, f"{config.name} games", progress)
    walls: dict[int, float] = dict.fromkeys(seeds, 0.0)
    for (seed, _), outcome in zip(pairs, outcomes, strict=True):
        walls[seed] += outcome.seconds
    return walls
