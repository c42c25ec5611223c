"""``compare_learners``: which learning model generated the traces, by cross-validated held-out likelihood.

Each candidate learner is assumed in turn: the mechanism is fitted with it (learning its ``alpha`` and
``epsilon`` where the rule's dynamics identify them), on all episodes but one fold, and the held-out fold's
episodes are scored by their negative log-likelihood (Eq. 5). After ``folds`` fits per candidate every episode
has an out-of-fold score under every candidate. Episodes are the independent units, so the difference between
two candidates is a sum of independent paired per-episode differences, and its standard error is ``sqrt(E)``
times their standard deviation. A difference larger than :data:`SIGNIFICANCE_Z` standard errors is called
significant (a two-sided z-test at about 5 %).

>>> comparison = compare_learners(env_id, traces, {"logit-q": LogitQ(), "hedge": Hedge()})  # doctest: +SKIP
>>> comparison.best, print(comparison.format_table())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diml_inverse.config import FitConfig, fit_config
from diml_inverse.dynamics import dynamics_for
from diml_inverse.fit import episode_nll as fitted_episode_nll
from diml_inverse.fit import fit
from diml_inverse.metrics import derive_seed, format_metrics_table
from diml_inverse.result import FitResult
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner
from mechgym.traces import TraceDataset, load_traces
from mechgym.validation import check_int, check_seed

__all__ = ["SIGNIFICANCE_Z", "CandidateScore", "LearnerComparison", "compare_learners", "episode_nll"]

#: A candidate is significantly worse than the best when its NLL exceeds the best's by more than this many
#: standard errors of the paired difference (two-sided z-test, about 5 %).
SIGNIFICANCE_Z = 2.0
#: Learner parameters that a comparison learns wherever the candidate's dynamics allow it, unless turned off.
_LEARNED_BY_DEFAULT = ("alpha", "epsilon")


@dataclass(frozen=True)
class CandidateScore:
    """One candidate learner's cross-validated score.

    Attributes:
        name: The candidate's name (its key in ``candidates``).
        learner: The candidate as given (before any learned ``alpha``/``epsilon``).
        episode_nll: Out-of-fold negative log-likelihood of every episode (nats, summed over its rounds and
            agents), ``[E]`` in episode order.
        total_nll: ``episode_nll.sum()``.
        mean_nll: NLL per agent-round (``total_nll`` over the ``E (T - 1) N`` terms).
        diff_to_best: ``total_nll`` minus the best candidate's (0 for the best).
        diff_se: Standard error of ``diff_to_best`` over episodes (paired differences; 0 for the best).
        z: ``diff_to_best / diff_se`` (0 for the best, ``inf`` for a constant non-zero difference).
        significant: ``z > SIGNIFICANCE_Z``: the best candidate is significantly better than this one.
        learned: What the fits learned of the rule (``{"alpha": [...], "epsilon": [...]}``, one value per fold).
    """

    name: str
    learner: Learner
    episode_nll: np.ndarray
    total_nll: float
    mean_nll: float
    diff_to_best: float
    diff_se: float
    z: float
    significant: bool
    learned: dict[str, list[float]]

    def row(self) -> dict[str, Any]:
        """The table row: name, rule, NLL, the paired difference to the best with its SE, z and the verdict."""
        learned = {f"{name} (mean)": float(np.mean(values)) for name, values in self.learned.items()}
        return {
            "candidate": self.name,
            "rule": self.learner.name,
            "total_nll": self.total_nll,
            "nll_per_term": self.mean_nll,
            "diff_to_best": self.diff_to_best,
            "se": self.diff_se,
            "z": self.z,
            "significant": "yes" if self.significant else ("best" if self.diff_to_best == 0 else "no"),
            **learned,
        }


@dataclass(frozen=True)
class LearnerComparison:
    """The outcome of :func:`compare_learners`.

    Attributes:
        env_id: The game, as fitted.
        scores: One :class:`CandidateScore` per candidate, best (lowest total NLL) first.
        folds: Cross-validation folds.
        fold_of_episode: The fold that scored each episode, ``[E]``.
        n_terms: Likelihood terms per episode, ``(T - 1) N``.
        seed: The comparison's seed (fold assignment and every fit's seed derive from it).
        fits: Every fit, by candidate name, one per fold (held for inspection; not saved anywhere).
    """

    env_id: str | None
    scores: tuple[CandidateScore, ...]
    folds: int
    fold_of_episode: np.ndarray
    n_terms: int
    seed: int
    fits: Mapping[str, tuple[FitResult, ...]] = dataclasses.field(repr=False)

    @property
    def best(self) -> str:
        """The name of the candidate with the lowest cross-validated NLL."""
        return self.scores[0].name

    @property
    def decisive(self) -> bool:
        """Whether every other candidate is significantly worse than the best."""
        return all(score.significant for score in self.scores[1:])

    @property
    def table(self) -> list[dict[str, Any]]:
        """One row per candidate, best first (:meth:`CandidateScore.row`)."""
        return [score.row() for score in self.scores]

    def format_table(self) -> str:
        """:attr:`table` as a Markdown table (no pandas needed)."""
        return format_metrics_table(self.table, float_format=".5g")

    def __getitem__(self, name: str) -> CandidateScore:
        for score in self.scores:
            if score.name == name:
                return score
        raise KeyError(f"no candidate {name!r}; the candidates are {[s.name for s in self.scores]}")

    def __str__(self) -> str:
        n_episodes = len(self.fold_of_episode)
        verdict = "decisively" if self.decisive else "not significantly better than every other candidate"
        return (
            f"LearnerComparison on {self.env_id}: {n_episodes} episodes, {self.folds}-fold cross-validation; "
            f"best {self.best!r} ({verdict})\n{self.format_table()}"
        )


def episode_nll(result: FitResult, traces: TraceDataset, batch_size: int = 64) -> np.ndarray:
    """Negative log-likelihood of every episode of ``traces`` under a fit (its learner and ``Q(1)``), ``[E]``.

    Args:
        result: A fit.
        traces: Episodes of the same game (held out from ``result``'s training, to score it).
        batch_size: Episodes per likelihood evaluation.

    Returns:
        ``-sum log pi_i(t)(a_i(t))`` over each episode's rounds ``t >= 2`` and agents (float64 numpy).
    """
    return fitted_episode_nll(result.mechanism, traces.actions_tensor(), result.learner, result.q0, batch_size)


def _check_candidates(candidates: Any) -> dict[str, Learner]:
    if not isinstance(candidates, Mapping) or len(candidates) < 2:
        shown = f"{len(candidates)} candidate(s)" if isinstance(candidates, Mapping) else type(candidates).__name__
        raise ConfigurationError(
            f"candidates must map at least two names to learners, e.g. {{'logit-q': LogitQ(), 'hedge': Hedge()}}; "
            f"got {shown}"
        )
    checked: dict[str, Learner] = {}
    for name, learner in candidates.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"candidate names must be non-empty strings; got {name!r}")
        if not isinstance(learner, Learner):
            raise ConfigurationError(
                f"candidate {name!r} must be a mechgym Learner (e.g. Hedge(eta=0.1)); got {type(learner).__name__}"
            )
        try:
            dynamics_for(learner)
        except ConfigurationError as error:
            raise ConfigurationError(f"candidate {name!r} cannot be compared: {error}") from None
        checked[name] = learner
    return checked


def _candidate_config(config: FitConfig, learner: Learner, asked: Mapping[str, bool], seed: int) -> FitConfig:
    """``config`` for one candidate: learn each of ``alpha``/``epsilon``/``q0`` asked for that its rule can learn."""
    learnable = dynamics_for(learner).learnable
    learn = {name: on and name in learnable for name, on in asked.items()}
    return dataclasses.replace(
        config,
        learn_alpha=learn["alpha"],
        learn_epsilon=learn["epsilon"],
        learn_q0=learn["q0"],
        seed=seed,
        progress=False,
    )


def _fold_assignment(n_episodes: int, folds: int, seed: int) -> np.ndarray:
    """A fold number per episode: a seeded random permutation cut into ``folds`` near-equal parts."""
    order = np.random.default_rng(derive_seed(seed, "compare/folds")).permutation(n_episodes)
    fold_of = np.empty(n_episodes, dtype=np.int64)
    for fold, members in enumerate(np.array_split(order, folds)):
        fold_of[members] = fold
    return fold_of


def _score(
    name: str, learner: Learner, nll: np.ndarray, best: np.ndarray, n_terms: int, learned: Any
) -> CandidateScore:
    differences = nll - best
    total, diff = float(nll.sum()), float(differences.sum())
    se = float(math.sqrt(len(differences)) * differences.std(ddof=1)) if len(differences) > 1 else math.nan
    z = 0.0 if diff == 0 else (diff / se if se > 0 else math.inf)
    return CandidateScore(
        name,
        learner,
        nll,
        total,
        total / (len(nll) * n_terms),
        diff,
        se if diff else 0.0,
        z,
        z > SIGNIFICANCE_Z,
        learned,
    )


def compare_learners(
    env_id: str | None,
    traces: TraceDataset | str | Path,
    candidates: Mapping[str, Learner],
    progress: bool = True,
    folds: int = 5,
    seed: int = 0,
    **fit_options: Any,
) -> LearnerComparison:
    """Compare learning models of the agents by the cross-validated held-out likelihood of their traces.

    For every candidate and fold, :func:`~diml_inverse.fit` fits the mechanism assuming that candidate to the
    episodes outside the fold (its own ``valid_fraction`` of them selects the epoch), then scores each episode
    of the fold (:func:`episode_nll`). ``alpha`` and ``epsilon`` are learned for the rules whose dynamics declare
    them learnable (logit-Q), since they are identified; ``beta``, ``eta`` and the payoff scale are confounded
    (Remark 1), so they stay the candidate's. Every candidate gets the same folds and the same fit seeds.

    Args:
        env_id: The game (``None``: the one recorded in the traces).
        traces: A :class:`~mechgym.traces.TraceDataset` or a path to one.
        candidates: Candidate learning models by name, at least two, each with a parallel likelihood.
        progress: Show a progress bar over the ``len(candidates) * folds`` fits.
        folds: Cross-validation folds, in ``[2, E]``.
        seed: Seeds the fold assignment and every fit (fold ``k``'s fits share one seed).
        **fit_options: Options of every fit (:class:`~diml_inverse.config.FitConfig` fields, e.g. ``epochs=50``).
            ``learn_alpha``/``learn_epsilon`` (default ``True`` here) learn those where the rule allows;
            ``False`` keeps the candidate's values. ``learn_q0=True`` learns ``Q(1)`` where the rule allows.

    Returns:
        A :class:`LearnerComparison`: ``.best``, ``.table``, ``.format_table()``, per-candidate scores.

    Raises:
        ConfigurationError: fewer than two candidates, a candidate without a parallel likelihood, bad
            ``folds``/``seed``, an unknown or refused fit option (or ``learner``/``config``/``callback``, which a
            comparison sets itself), or folds too small for the fits' validation split.
        TraceDatasetError: traces that do not match the environment.
    """
    checked = _check_candidates(candidates)
    seed = check_seed(seed)
    for name in ("learner", "config", "callback"):
        if name in fit_options:
            raise ConfigurationError(
                f"compare_learners sets {name} itself (one fit per candidate and fold); pass fit options as "
                "keywords, e.g. epochs=50"
            )
    asked = {name: bool(fit_options.pop(f"learn_{name}", True)) for name in _LEARNED_BY_DEFAULT}
    asked["q0"] = bool(fit_options.pop("learn_q0", False))
    config = fit_config(None, fit_options, known=("folds", "seed", "progress"))
    dataset = load_traces(traces, env_id=env_id) if isinstance(traces, str | Path) else traces
    if not isinstance(dataset, TraceDataset):
        raise ConfigurationError(f"traces must be a TraceDataset or a path; got {type(traces).__name__}")
    n_episodes = dataset.n_episodes
    folds = check_int(folds, "folds", low=2, high=n_episodes + 1)
    smallest_training = n_episodes - math.ceil(n_episodes / folds)
    if config.valid_fraction > 0 and smallest_training < 2:
        raise ConfigurationError(
            f"{folds} folds of {n_episodes} episodes leave {smallest_training} training episode(s) per fit, too "
            "few for a validation split; record more episodes, use fewer folds or valid_fraction=0"
        )
    fold_of = _fold_assignment(n_episodes, folds, seed)
    nll = {name: np.full(n_episodes, np.nan) for name in checked}
    fits: dict[str, list[FitResult]] = {name: [] for name in checked}
    bar = tqdm(total=len(checked) * folds, desc="compare learners", disable=not progress, leave=False)
    try:
        for fold in range(folds):
            held_out = np.flatnonzero(fold_of == fold)
            train = dataset.episodes(np.flatnonzero(fold_of != fold))
            fold_seed = derive_seed(seed, f"compare/fit{fold}")
            for name, learner in checked.items():
                bar.set_postfix(candidate=name, fold=fold)
                result = fit(
                    env_id, train, learner=learner, config=_candidate_config(config, learner, asked, fold_seed)
                )
                nll[name][held_out] = episode_nll(result, dataset.episodes(held_out), config.batch_size)
                fits[name].append(result)
                bar.update()
    finally:
        bar.close()
    best_name = min(checked, key=lambda name: float(nll[name].sum()))
    n_terms = (dataset.n_rounds - 1) * dataset.n_agents
    scores = []
    for name, learner in checked.items():
        params = [result.learner.params() for result in fits[name]]
        learned = {key: [p[key] for p in params] for key in _LEARNED_BY_DEFAULT if asked[key] and key in params[0]}
        learned = {key: values for key, values in learned.items() if key in dynamics_for(learner).learnable}
        scores.append(_score(name, learner, nll[name], nll[best_name], n_terms, learned))
    scores.sort(key=lambda score: score.total_nll)
    env = fits[best_name][0].env_id
    return LearnerComparison(
        env, tuple(scores), folds, fold_of, n_terms, seed, {name: tuple(r) for name, r in fits.items()}
    )
