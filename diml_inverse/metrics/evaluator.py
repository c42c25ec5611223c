"""Every metric of estimates of one truth: :class:`Evaluator` does the truth's share of the work once.

Fits are evaluated many times against the same truth (every epoch, every method, the selected and the last
checkpoint): the diff_mse contexts and the truth's payoff differences on them, the truth's counterfactual
simulations and the cfkl noise floors, and the truth's held-out NLL do not depend on the estimate. An
:class:`Evaluator` computes them once (the simulations once per size); an estimate then costs one pass over
the contexts, one simulation and one likelihood. Its values equal those of the single metrics
(:func:`~diml_inverse.metrics.diff_mse`, :func:`~diml_inverse.metrics.cfkl_params`, ...) called with the same
seed, bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import cast, get_args

import torch
from torch import Tensor

from diml_inverse.metrics.cfkl import DEFAULT_SHIFT, shifted_learner, simulated_play
from diml_inverse.metrics.histograms import HistogramKind, empirical_kl, resolve_kind
from diml_inverse.metrics.inputs import Traces, check_same_game, detached_float, trace_actions
from diml_inverse.metrics.nll import heldout_nll, uniform_nll
from diml_inverse.metrics.payoff_differences import best_scale, payoff_differences, sample_diff_contexts
from mechgym.devices import device_of
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism, TabularMechanism

__all__ = ["METRIC_DESCRIPTIONS", "Evaluator", "evaluate", "frozen_view", "kl_column_names"]

#: ``(episodes, rounds)`` of a counterfactual simulation.
Size = tuple[int, int]

#: What each key of :func:`evaluate` means (for CLI help and table footnotes).
METRIC_DESCRIPTIONS: dict[str, str] = {
    "diff_mse": "mean squared error of payoff differences u_i(a, a_-i) - u_i(a', a_-i) on held-out contexts",
    "zero_diff_mse": "diff_mse of the zero mechanism (E[(u_i(a, a_-i) - u_i(a', a_-i))^2]); a fit must beat it",
    "cfkl_params": "KL(truth || fit) of joint-action histograms simulated under the shifted learner",
    "cfkl_noise_floor": "the same plug-in KL between two independent simulations of the truth",
    "heldout_nll": "negative log-likelihood per agent-round of the held-out traces under the fit (Eq. 5)",
    "truth_heldout_nll": "the same under the true mechanism",
    "uniform_nll": "log A, the NLL of uniformly random play",
    "rescaled_diff_mse": "diff_mse after the best non-negative rescaling of the fit's payoff differences",
    "diff_scale": "that rescaling factor (1: the fit has the truth's payoff units)",
}


def frozen_view(estimate: Mechanism) -> Mechanism:
    """A frozen mechanism with the estimate's payoffs, for fast repeated evaluation of a model in training.

    A game small enough for a payoff table gets a :class:`TabularMechanism` holding a copy of the estimate's
    table (one forward pass over every joint action, then gathers that give the same values); a frozen
    estimate (its table is cached already) and a larger game return the estimate itself.
    """
    if estimate.frozen or estimate.n_joint_actions > estimate.max_table_size:
        return estimate
    with torch.no_grad():
        table = estimate.payoff_table().detach()
        view = TabularMechanism(estimate.n_agents, estimate.n_actions, seed=None).to(table.device, table.dtype)
        view.table.copy_(table)
    return view.freeze()


def kl_column_names(binnings: Sequence[str]) -> list[tuple[str, str]]:
    """The (KL, noise floor) column names of each binning: ``cfkl_params`` for the first, ``cfkl_<kind>`` after."""
    return [
        ("cfkl_params", "cfkl_noise_floor") if k == 0 else (f"cfkl_{kind}", f"cfkl_{kind}_noise_floor")
        for k, kind in enumerate(binnings)
    ]


def _checked_binnings(binnings: Sequence[str], n_agents: int, n_actions: int) -> tuple[HistogramKind, ...]:
    kinds = get_args(HistogramKind)
    names = () if isinstance(binnings, str) else tuple(binnings)
    if not names or len(set(names)) != len(names) or any(name not in kinds for name in names):
        raise ConfigurationError(
            f"binnings must be a non-empty sequence of distinct histogram kinds out of {kinds}, the first one "
            f"giving cfkl_params; got {binnings!r}"
        )
    for name in names:
        resolve_kind(name, n_agents, n_actions)
    return cast("tuple[HistogramKind, ...]", names)


class Evaluator:
    """All metrics of estimates of one truth (see :data:`METRIC_DESCRIPTIONS`), the truth's work done once.

    The constructor draws the diff_mse contexts and computes the truth's payoff differences on them, the truth's
    held-out NLL, and the truth's two simulations (``"cfkl/truth"``, ``"cfkl/estimate"``) and noise floor at the
    final size; the truth's simulations at any other size are made on first use and kept, keyed on the size.
    Small estimates in training are evaluated through a :func:`frozen_view`.

    Args:
        truth: The true mechanism (frozen for speed; evaluated under ``torch.no_grad``).
        test_traces: Held-out traces (never the training episodes), moved to the truth's device.
        learner: The generating learner: shifted for the counterfactual simulations, and the truth's NLL.
        diff_samples: Contexts of diff_mse (``min(diff_samples, E*T*N)``).
        cf_episodes: Simulated episodes per mechanism of the per-epoch cfkl_params.
        cf_rounds: Rounds per simulated episode of the per-epoch cfkl_params.
        final_cf_episodes: Episodes of the cfkl_params of :meth:`final_metrics` and ``__call__`` (default:
            ``cf_episodes``).
        final_cf_rounds: Their rounds (default: ``cf_rounds``).
        seed: Evaluation seed (every metric derives its own streams from it, see :func:`derive_seed`).
        shift: Learner shift of cfkl_params (``None``: simulate ``learner`` itself).
        binnings: Histogram kinds of the KLs, all from the same simulations: the first gives ``cfkl_params``
            and ``cfkl_noise_floor``, each further one ``cfkl_<kind>`` and ``cfkl_<kind>_noise_floor`` (E4 adds
            ``"index_sum"``, the published code's binning).

    Raises:
        ConfigurationError: unknown or repeated binnings, a learner without ``shifted``, bad sizes or seed.

    Example:
        >>> evaluator = Evaluator(truth, test, LogitQ(0.25, 3.0, 0.06))
        >>> result = fit(train, ..., callback=lambda epoch, model: evaluator(model))
    """

    def __init__(
        self,
        truth: Mechanism,
        test_traces: Traces,
        learner: Learner,
        *,
        diff_samples: int = 20_000,
        cf_episodes: int = 300,
        cf_rounds: int = 50,
        final_cf_episodes: int | None = None,
        final_cf_rounds: int | None = None,
        seed: int = 0,
        shift: tuple[float, float, float] | None = DEFAULT_SHIFT,
        binnings: Sequence[str] = ("auto",),
    ) -> None:
        n_agents, n_actions = truth.n_agents, truth.n_actions
        self.truth, self.learner, self.seed = truth, learner, seed
        self.binnings = _checked_binnings(binnings, n_agents, n_actions)
        self.shifted_learner = shifted_learner(learner, shift)
        self.cf_size: Size = (cf_episodes, cf_rounds)
        self.final_cf_size: Size = (
            cf_episodes if final_cf_episodes is None else final_cf_episodes,
            cf_rounds if final_cf_rounds is None else final_cf_rounds,
        )
        self.test_actions = trace_actions(test_traces, n_agents, n_actions).to(device_of(truth))
        self.contexts = sample_diff_contexts(self.test_actions, n_agents, n_actions, diff_samples, seed)
        self.truth_differences = payoff_differences(truth, self.contexts).double()
        self.zero_diff_mse = detached_float((self.truth_differences**2).mean())
        self.truth_heldout_nll = heldout_nll(truth, self.test_actions, learner)
        self.uniform_nll = uniform_nll(n_actions)
        self._truth_play: dict[Size, Tensor] = {}
        self._noise_floor: dict[Size, dict[str, float]] = {}
        self.noise_floor(self.final_cf_size)

    @property
    def kl_columns(self) -> list[str]:
        """The KL columns this evaluator reports (``cfkl_params`` first)."""
        return [kl for kl, _ in kl_column_names(self.binnings)]

    def truth_play(self, size: Size) -> Tensor:
        """The joint actions ``[E*T, N]`` of the truth's ``"cfkl/truth"`` simulation of ``size``, made once."""
        if size not in self._truth_play:
            self._truth_play[size] = simulated_play(self.truth, self.shifted_learner, *size, self.seed, "cfkl/truth")
        return self._truth_play[size]

    def _kls(self, play: Tensor, size: Size, column: int) -> dict[str, float]:
        truth_play, n_actions = self.truth_play(size), self.truth.n_actions
        names = kl_column_names(self.binnings)
        return {
            name[column]: empirical_kl(truth_play, play, n_actions, kind)
            for name, kind in zip(names, self.binnings, strict=True)
        }

    def noise_floor(self, size: Size) -> dict[str, float]:
        """The KLs of the truth against itself at ``size = (episodes, rounds)``: the plug-in KL's sampling noise.

        Returns:
            ``{"cfkl_noise_floor": ...}`` and ``"cfkl_<kind>_noise_floor"`` for each further binning; made once.
        """
        if size not in self._noise_floor:
            replay = simulated_play(self.truth, self.shifted_learner, *size, self.seed, "cfkl/estimate")
            self._noise_floor[size] = self._kls(replay, size, column=1)
        return self._noise_floor[size]

    def _view(self, estimate: Mechanism) -> Mechanism:
        check_same_game(self.truth, estimate)
        return frozen_view(estimate)

    def _fitted_differences(self, estimate: Mechanism) -> Tensor:
        return payoff_differences(estimate, self.contexts).to(self.truth_differences.device).double()

    def diff_mse(self, estimate: Mechanism) -> float:
        """The :func:`~diml_inverse.metrics.diff_mse` of ``estimate`` on this evaluator's contexts."""
        fitted = self._fitted_differences(self._view(estimate))
        return detached_float(((self.truth_differences - fitted) ** 2).mean())

    def cfkl(self, estimate: Mechanism, size: Size) -> dict[str, float]:
        """cfkl_params of ``estimate`` (and the further binnings) with simulations of ``size = (episodes, rounds)``."""
        play = simulated_play(self._view(estimate), self.shifted_learner, *size, self.seed, "cfkl/estimate")
        return self._kls(play, size, column=0)

    def epoch_metrics(self, estimate: Mechanism, with_cfkl: bool) -> dict[str, float]:
        """diff_mse, and the KLs at the per-epoch size when ``with_cfkl`` (NaN otherwise), of a model in training.

        Returns:
            ``diff_mse``, the KL columns and the seconds each part took (``diff_seconds``, ``cfkl_seconds``).
        """
        started = time.perf_counter()
        view = self._view(estimate)
        diff = self.diff_mse(view)
        middle = time.perf_counter()
        kls = self.cfkl(view, self.cf_size) if with_cfkl else dict.fromkeys(self.kl_columns, math.nan)
        return {"diff_mse": diff, **kls, "diff_seconds": middle - started, "cfkl_seconds": time.perf_counter() - middle}

    def final_metrics(
        self, estimate: Mechanism, model_learner: Learner, known: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """The experiment runner's metrics of a finished fit: KLs at the final size, NLL under the assumed learner.

        Args:
            estimate: The fitted mechanism.
            model_learner: The learner the fit assumed (for its held-out NLL).
            known: KL columns of this estimate already computed at the final size (not recomputed when all
                of them are present and finite).

        Returns:
            ``diff_mse``, ``zero_diff_mse``, the KL columns, their noise floors, ``test_nll``, ``truth_test_nll``
            and ``uniform_nll``.
        """
        view = self._view(estimate)
        known = known or {}
        reusable = all(not math.isnan(known.get(column, math.nan)) for column in self.kl_columns)
        kls = {column: known[column] for column in self.kl_columns} if reusable else self.cfkl(view, self.final_cf_size)
        return {
            "diff_mse": self.diff_mse(view),
            "zero_diff_mse": self.zero_diff_mse,
            **kls,
            **self.noise_floor(self.final_cf_size),
            "test_nll": heldout_nll(estimate, self.test_actions, model_learner),
            "truth_test_nll": self.truth_heldout_nll,
            "uniform_nll": self.uniform_nll,
        }

    def __call__(self, estimate: Mechanism, model_learner: Learner | None = None) -> dict[str, float]:
        """Every metric of ``estimate``, cfkl at the final size.

        Args:
            estimate: The fitted mechanism.
            model_learner: The learner the fit assumed (default: the true learner), for its held-out NLL only
                (e.g. DIML-Wrong's ``beta x 0.6``).

        Returns:
            ``{"diff_mse", "zero_diff_mse", "cfkl_params", "cfkl_noise_floor", "heldout_nll",
            "truth_heldout_nll", "uniform_nll", "rescaled_diff_mse", "diff_scale"}`` as floats, in that order,
            then the KL and noise-floor columns of any further binning.
        """
        view = self._view(estimate)
        fitted = self._fitted_differences(view)
        scale = best_scale(self.truth_differences, fitted)
        kls = {**self.cfkl(view, self.final_cf_size), **self.noise_floor(self.final_cf_size)}
        learner = self.learner if model_learner is None else model_learner
        metrics = {
            "diff_mse": detached_float(((self.truth_differences - fitted) ** 2).mean()),
            "zero_diff_mse": self.zero_diff_mse,
            "heldout_nll": heldout_nll(estimate, self.test_actions, learner),
            "truth_heldout_nll": self.truth_heldout_nll,
            "uniform_nll": self.uniform_nll,
            "rescaled_diff_mse": detached_float(((self.truth_differences - scale * fitted) ** 2).mean()),
            "diff_scale": scale,
            **kls,
        }
        return {**{name: metrics.pop(name) for name in METRIC_DESCRIPTIONS}, **metrics}


def evaluate(
    truth: Mechanism,
    estimate: Mechanism,
    test_traces: Traces,
    learner: Learner,
    *,
    model_learner: Learner | None = None,
    diff_samples: int = 20_000,
    cf_episodes: int = 300,
    cf_rounds: int = 50,
    seed: int = 0,
    shift: tuple[float, float, float] | None = DEFAULT_SHIFT,
    kind: HistogramKind = "auto",
) -> dict[str, float]:
    """All metrics of one fit: ``Evaluator(truth, test_traces, learner, ...)(estimate, model_learner)``.

    Use an :class:`Evaluator` to evaluate many fits or epochs against the same truth.

    Args:
        kind: The histogram binning of cfkl_params and its noise floor.

    Returns:
        ``{"diff_mse", "zero_diff_mse", "cfkl_params", "cfkl_noise_floor", "heldout_nll",
        "truth_heldout_nll", "uniform_nll", "rescaled_diff_mse", "diff_scale"}`` as floats, in that order.
    """
    resolve_kind(kind, truth.n_agents, truth.n_actions)
    evaluator = Evaluator(
        truth,
        test_traces,
        learner,
        diff_samples=diff_samples,
        cf_episodes=cf_episodes,
        cf_rounds=cf_rounds,
        seed=seed,
        shift=shift,
        binnings=(kind,),
    )
    return evaluator(estimate, model_learner)
