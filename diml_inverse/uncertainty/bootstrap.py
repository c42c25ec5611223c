"""``bootstrap``: refit on whole episodes resampled with replacement; intervals of payoff differences and parameters.

Each replicate is an ordinary :func:`diml_inverse.fit` with the same options on a resample of the episodes
(:func:`~diml_inverse.uncertainty.resample.resample_episodes`), run as a :class:`~diml_inverse.sweep.FitTask`: in
this process, a pool of processes or on Ray (:func:`~diml_inverse.sweep.run_sweep`). The point estimate is the fit
on the original episodes, which the bootstrap runs too. See ``docs/uncertainty.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from diml_inverse.config import FIT_ARGUMENTS, fit_config
from diml_inverse.errors import FitFileError
from diml_inverse.fit import prepare_fit
from diml_inverse.result import FitResult, load
from diml_inverse.sweep import FitTask, failures_report, run_sweep
from diml_inverse.sweep.engine import Engine
from diml_inverse.uncertainty.resample import IntervalMethod, bootstrap_interval, resample_episodes
from mechgym.errors import ConfigurationError, MechGymError, suggest
from mechgym.files import ContentHasher, atomic_write, parse_json
from mechgym.learners import Learner
from mechgym.traces import TraceDataset, load_traces
from mechgym.validation import check_seed

__all__ = ["BOOTSTRAP_FILE_FORMAT", "BootstrapResult", "bootstrap", "load_bootstrap"]

logger = logging.getLogger(__name__)

#: Identifies files written by :meth:`BootstrapResult.save`.
BOOTSTRAP_FILE_FORMAT = "diml_inverse.bootstrap/1"
_MANIFEST = "bootstrap.json"


@dataclass
class BootstrapResult:
    """The outcome of :func:`bootstrap`: the point fit, the replicate fits and the resamples behind them.

    Attributes:
        point: The fit on the original episodes (the point estimate).
        replicates: The replicates' fits, in replicate order (failed replicates are left out: see ``failed``).
        resamples: Episode indices of every replicate, ``[R, E]`` (row ``r``: the episodes replicate ``r`` was
            fitted on, training part then validation part).
        fit_seeds: Each replicate's fit seed, derived from ``(seed, r)``.
        seed: The bootstrap's seed.
        failed: Names of the replicates whose fit raised (their tracebacks were logged).
    """

    point: FitResult
    replicates: list[FitResult]
    resamples: np.ndarray
    fit_seeds: tuple[int, ...]
    seed: int
    failed: tuple[str, ...] = ()

    def __repr__(self) -> str:
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return f"BootstrapResult({self.point.env_id}, {len(self.replicates)} replicates{failed}, seed={self.seed})"

    # -- payoff differences ------------------------------------------------------------------------------
    def payoff_differences(self, joint_actions: Tensor | Any) -> Tensor:
        """The point estimate ``[..., N, A]`` (as :meth:`diml_inverse.FitResult.payoff_differences`)."""
        return self.point.payoff_differences(joint_actions)

    def replicate_payoff_differences(self, joint_actions: Tensor | Any) -> Tensor:
        """Every replicate's payoff differences, ``[R, ..., N, A]``."""
        return torch.stack([fit.payoff_differences(joint_actions).cpu() for fit in self.replicates])

    def payoff_differences_interval(
        self, joint_actions: Tensor | Any, level: float = 0.9, *, method: IntervalMethod = "percentile"
    ) -> tuple[Tensor, Tensor]:
        """A bootstrap interval of the payoff differences: ``(low, high)``, each ``[..., N, A]`` (float64).

        Args:
            joint_actions: ``[..., N]``.
            level: Nominal coverage in (0, 1).
            method: ``"percentile"``, ``"basic"``, ``"normal"`` or ``"bias_corrected"``
                (:func:`~diml_inverse.uncertainty.resample.bootstrap_interval`).

        Raises:
            ConfigurationError: a level outside (0, 1) or an unknown method.
            InvalidActionError: joint actions outside the game.
        """
        estimate = self.payoff_differences(joint_actions).cpu().double().numpy()
        low, high = bootstrap_interval(
            estimate, self.replicate_payoff_differences(joint_actions).numpy(), level, method
        )
        return torch.from_numpy(low), torch.from_numpy(high)

    # -- named parameters --------------------------------------------------------------------------------
    def parameter_names(self) -> list[str]:
        """The fitted quantities :meth:`parameter_interval` takes: the model's parameters and learned learner values."""
        names = [name for name, _ in self.point.mechanism.named_parameters()]
        learned = self.point.config
        names += [n for n, on in (("alpha", learned.learn_alpha), ("epsilon", learned.learn_epsilon)) if on]
        return names + (["q0"] if self.point.q0 is not None else [])

    def _value(self, fit: FitResult, name: str) -> np.ndarray:
        if name == "q0" and fit.q0 is not None:
            return fit.q0.detach().cpu().double().numpy()
        if name in ("alpha", "epsilon") and name not in dict(fit.mechanism.named_parameters()):
            return np.asarray(float(fit.learner.params()[name]))
        return dict(fit.mechanism.named_parameters())[name].detach().cpu().double().numpy()

    def parameter(self, name: str) -> np.ndarray:
        """The point estimate of a named parameter (see :meth:`parameter_names`).

        Raises:
            ConfigurationError: an unknown name, with a did-you-mean.
        """
        if name not in self.parameter_names():
            raise ConfigurationError(suggest(name, self.parameter_names(), f"parameter of {self.point.model_name}"))
        return self._value(self.point, name)

    def parameter_interval(
        self, name: str, level: float = 0.9, *, method: IntervalMethod = "percentile"
    ) -> tuple[np.ndarray, np.ndarray]:
        """A bootstrap interval of a named parameter (``"c1"``, ``"k"``, ``"alpha"``...): ``(low, high)`` of its shape.

        A parameter the likelihood does not identify on its own (congestion's ``c1`` and ``tau`` enter only as a
        sum) gets a wide interval here; :func:`~diml_inverse.uncertainty.standard_errors` says so explicitly.

        Raises:
            ConfigurationError: an unknown name (with a did-you-mean), a level outside (0, 1), an unknown method.
        """
        estimate = self.parameter(name)
        draws = np.stack([self._value(fit, name) for fit in self.replicates])
        return bootstrap_interval(estimate, draws, level, method)

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the point fit, every replicate and the resamples to one file, atomically, with checksums.

        The file is a zip of fit files (each :meth:`diml_inverse.FitResult.save`'s, with its own content hash)
        and a JSON manifest holding the resamples and the SHA-256 of every member.

        Args:
            path: The file (e.g. ``"congestion.bootstrap"``); missing parent directories are created.
            overwrite: Replace an existing file (refused otherwise).

        Raises:
            FitFileError: ``path`` exists and ``overwrite`` is false.
            ConfigurationError: a fit that cannot be saved (see :meth:`diml_inverse.FitResult.save`).
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FitFileError(f"{path} exists; pass overwrite=True to replace it, or choose another path")
        members: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory() as scratch:
            fits = {"point.pt": self.point, **{f"replicates/{k:04d}.pt": f for k, f in enumerate(self.replicates)}}
            for member, fit in fits.items():
                members[member] = fit.save(Path(scratch) / member.replace("/", "_")).read_bytes()
        manifest = {
            "format": BOOTSTRAP_FILE_FORMAT,
            "seed": self.seed,
            "resamples": self.resamples.tolist(),
            "fit_seeds": list(self.fit_seeds),
            "failed": list(self.failed),
            "members": {name: _digest(name, data) for name, data in members.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(file: IO[bytes]) -> None:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
                archive.writestr(_MANIFEST, json.dumps(manifest))
                for name, data in members.items():
                    archive.writestr(name, data)

        return atomic_write(path, write)


def _digest(name: str, data: bytes) -> str:
    hasher = ContentHasher()
    hasher.update_text(name, data)
    return hasher.hexdigest()


def load_bootstrap(path: str | Path) -> BootstrapResult:
    """Load a :class:`BootstrapResult` written by :meth:`BootstrapResult.save`, verifying every checksum.

    Raises:
        FitFileError: a missing, truncated or corrupted file, or one that is not a bootstrap file.
    """
    path = Path(path)
    if not path.is_file():
        raise FitFileError(f"no bootstrap file at {path}; write one with BootstrapResult.save")
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                raise FitFileError(f"{path}: a member fails its CRC-32 check; the file is truncated or corrupted")
            manifest = parse_json(archive.read(_MANIFEST))
            if not isinstance(manifest, dict) or manifest.get("format") != BOOTSTRAP_FILE_FORMAT:
                raise FitFileError(f"{path} is not a bootstrap file (expected format {BOOTSTRAP_FILE_FORMAT!r})")
            members = {name: archive.read(name) for name in manifest["members"]}
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as error:
        if isinstance(error, FitFileError):
            raise
        raise FitFileError(f"{path} is not a readable bootstrap file: {type(error).__name__}: {error}") from None
    fits: dict[str, FitResult] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in members.items():
            if _digest(name, data) != manifest["members"][name]:
                raise FitFileError(f"{path}: member {name} does not match its SHA-256; the file is corrupted")
            member_path = Path(scratch) / name.replace("/", "_")
            member_path.write_bytes(data)
            fits[name] = load(member_path)
    replicates = [fits[name] for name in sorted(fits) if name.startswith("replicates/")]
    try:
        resamples = np.asarray(manifest["resamples"], dtype=np.int64)
        return BootstrapResult(
            point=fits["point.pt"],
            replicates=replicates,
            resamples=resamples,
            fit_seeds=tuple(int(s) for s in manifest["fit_seeds"]),
            seed=int(manifest["seed"]),
            failed=tuple(str(name) for name in manifest["failed"]),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise FitFileError(f"{path}: the manifest is unusable: {type(error).__name__}: {error}") from None


def bootstrap(
    env_id: str | None,
    traces: TraceDataset | str | Path,
    n_replicates: int = 30,
    seed: int = 0,
    progress: bool = True,
    engine: Engine = "local",
    workers: int | None = None,
    *,
    learner: Learner | None = None,
    **fit_options: Any,
) -> BootstrapResult:
    """The episode bootstrap of :func:`diml_inverse.fit`: the fit, and ``n_replicates`` refits on resampled episodes.

    Replicate ``r`` fits the same options to episodes drawn with replacement (within the fit's training part and
    within its validation part, so that the held-out selection stays held out), with a fit seed; both come from
    ``(seed, r)`` only, so the result is the same on every engine and worker count.

    >>> boot = bootstrap("mechgym/Congestion-v0", traces, n_replicates=30, epochs=50)  # doctest: +SKIP
    >>> low, high = boot.payoff_differences_interval(test.actions_tensor()[0, :5], level=0.9)  # doctest: +SKIP

    Args:
        env_id: The game (``None``: the id recorded in the traces).
        traces: A :class:`~mechgym.traces.TraceDataset` or a path to a saved one.
        n_replicates: Refits (>= 2; 20-30 give usable 90 % intervals, more give stabler tails).
        seed: Seed of the resamples and of the replicates' fit seeds (the point fit keeps ``seed=`` of the options).
        progress: One progress bar over the fits (the fits' own bars are off).
        engine: ``"local"`` or ``"ray"`` (:func:`~diml_inverse.sweep.run_sweep`).
        workers: Local: processes (``None``: one after another in this process); Ray: tasks in flight.
        learner: The assumed learner (``None``: the recorded one), as in :func:`diml_inverse.fit`.
        **fit_options: Options of every fit (:class:`~diml_inverse.config.FitConfig` fields, or ``config=``).

    Returns:
        A :class:`BootstrapResult`.

    Raises:
        ConfigurationError: ``n_replicates < 2``, a bad seed, bad fit options (checked before any fit runs).
        MechGymError: the point fit failed, or fewer than 2 replicates succeeded (with their tracebacks).
    """
    if isinstance(n_replicates, bool) or not isinstance(n_replicates, int) or n_replicates < 2:
        raise ConfigurationError(
            f"n_replicates must be an integer >= 2 (an interval needs a spread); got {n_replicates!r}. Pass e.g. 30"
        )
    seed = check_seed(seed, "the bootstrap seed")
    base = fit_options.pop("config", None)
    config = fit_config(base, fit_options, known=("traces", "config", *FIT_ARGUMENTS))
    dataset = traces if isinstance(traces, TraceDataset) else load_traces(traces, env_id=env_id)
    problem = prepare_fit(env_id, dataset, learner, dataclasses.replace(config, check_memory=False))
    game, n_train, n_valid = problem.env_id, int(problem.train.shape[0]), int(problem.valid.shape[0])
    del problem  # only its checks and its split were needed
    resamples, fit_seeds = resample_episodes(n_train, n_valid, n_replicates, seed)
    quiet = dataclasses.replace(config, progress=False)
    tasks = [FitTask("point", game, dataset, quiet, learner=learner)]
    tasks += [
        FitTask(
            f"replicate{r:04d}",
            game,
            dataset,
            dataclasses.replace(quiet, seed=fit_seeds[r]),
            episodes=tuple(int(i) for i in resamples[r]),
            learner=learner,
        )
        for r in range(n_replicates)
    ]
    outcomes = run_sweep(tasks, engine=engine, workers=workers, progress=progress)
    if not outcomes[0].ok:
        raise MechGymError(f"the bootstrap's point fit failed:\n{failures_report(outcomes[:1])}")
    replicates = [outcome.result for outcome in outcomes[1:] if outcome.ok]
    failed = tuple(outcome.name for outcome in outcomes[1:] if not outcome.ok)
    if len(replicates) < 2:
        raise MechGymError(
            f"only {len(replicates)} of {n_replicates} bootstrap fits succeeded:\n{failures_report(outcomes)}"
        )
    if failed:
        logger.warning("%d of %d bootstrap replicates failed and are left out", len(failed), n_replicates)
    kept = [r for r, outcome in enumerate(outcomes[1:]) if outcome.ok]
    return BootstrapResult(
        point=outcomes[0].result,
        replicates=replicates,
        resamples=resamples[kept],
        fit_seeds=tuple(fit_seeds[r] for r in kept),
        seed=seed,
        failed=failed,
    )
