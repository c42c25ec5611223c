"""Full-batch fits: L-BFGS on the whole training set (``optimizer="lbfgs"``), and the search over a model's prior.

A model whose payoffs are linear in its parameters (the ``"interaction"`` family) makes logit-Q's negative
log-likelihood convex in them (paper Eq. 2-3: the scores are a linear filter of the payoffs, the log-softmax is
concave in the scores), so quasi-Newton steps on the whole training set reach the optimum in tens of
iterations, where a few hundred Adam minibatch steps stop far from it. With a Gaussian prior
(:meth:`~mechgym.mechanisms.Mechanism.prior_penalty`) the optimum is the MAP estimate; :func:`search_prior`
chooses the prior's scale and decay by held-out likelihood.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diml_inverse.likelihood import trace_terms
from diml_inverse.models import PRIOR_SEARCH, PriorGrid
from mechgym.errors import ConfigurationError
from mechgym.memory import check_memory

if TYPE_CHECKING:
    from diml_inverse.config import FitConfig
    from diml_inverse.fit import Checkpoints, EpochCallback, FitProblem

__all__ = [
    "EVIDENCE_MAX_PARAMETERS",
    "EVIDENCE_ROUNDS",
    "EVIDENCE_TOLERANCE",
    "EVIDENCE_TRUST",
    "LBFGS_ITERATIONS_PER_EPOCH",
    "FullBatchTrainer",
    "coordinate_search",
    "log_pattern_search",
    "prior_scoring",
    "search_prior",
    "search_prior_by_evidence",
]

logger = logging.getLogger(__name__)

#: L-BFGS iterations per epoch (one history row each ``epoch``).
LBFGS_ITERATIONS_PER_EPOCH = 20
#: An epoch that lowers the loss per agent-round by less than this (relative) ends the fit: it has converged.
CONVERGED_CHANGE = 1e-6
#: Trainings of the evidence search at most (``prior_selection="evidence"``).
EVIDENCE_ROUNDS = 6
#: The evidence search stops when its next prior is within this factor of the trained one in every argument.
EVIDENCE_TOLERANCE = 1.5
#: The evidence search stops when its next prior is predicted to raise the log evidence of the training episodes by
#: less than this many nats (in total, not per agent-round): a Bayes factor below e, "barely worth mentioning" on
#: Jeffreys' scale, is not worth a round of training.
EVIDENCE_MIN_GAIN = 1.0
#: ``model="auto"`` fits a family that nests the one before it (the interaction model with totals tables) only when
#: its log evidence is predicted to be higher by at least this many nats (:func:`nested_evidence_gain`): a Bayes
#: factor of about 20, "strong" evidence on Kass and Raftery's scale (1995). The prediction is a second-order
#: expansion at the simpler family's fit, which overstates gains that training does not find.
NESTED_MIN_GAIN = 3.0
#: The evidence search moves each argument by at most this factor per round: the second-order prediction of the
#: evidence is good within a few times the trained prior and wrong far from it.
EVIDENCE_TRUST = 4.0
#: ``prior_selection="auto"`` scores priors by their evidence for models of at most this many parameters, by held-out
#: NLL above (the evidence holds a few dense ``P x P`` float64 matrices: 0.5 GiB each at this size). A fixed count, not
#: the machine's free memory, so that the same data and options give the same fit everywhere.
EVIDENCE_MAX_PARAMETERS = 8192
#: Dense ``P x P`` float64 matrices the evidence holds at once (its memory check).
EVIDENCE_DENSE_COPIES = 5


class FullBatchTrainer:
    """The epochs of an ``optimizer="lbfgs"`` fit: each is up to :data:`LBFGS_ITERATIONS_PER_EPOCH` L-BFGS
    iterations (strong Wolfe line search) on the whole training set, then the held-out likelihood and the callback.

    The loss is the summed negative log-likelihood of the training episodes plus the model's prior penalty, per
    agent-round, plus ``payoff_l2`` times the mean squared realised payoff (as the minibatch trainer's). The
    episodes are summed in chunks of ``batch_size`` (gradients accumulate), so memory is that of one minibatch.
    """

    def __init__(self, problem: FitProblem, config: FitConfig, callback: EpochCallback | None) -> None:
        self.problem, self.config, self.callback = problem, config, callback
        self.parameters = [
            p for p in [*problem.mechanism.parameters(), *problem.extras.parameters()] if p.requires_grad
        ]
        if not self.parameters:
            raise ConfigurationError("the model has no trainable parameters (was it frozen?)")
        self.optimizer = torch.optim.LBFGS(
            self.parameters,
            lr=1.0,
            max_iter=LBFGS_ITERATIONS_PER_EPOCH,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
        )
        train = problem.train
        self.n_terms = train.shape[0] * (train.shape[1] - 1) * train.shape[2]
        self.last_nll = math.nan

    def loss(self) -> Tensor:
        """The full-batch loss; its gradient is accumulated in the parameters' ``.grad``."""
        problem, config, extras = self.problem, self.config, self.problem.extras
        self.optimizer.zero_grad(set_to_none=True)
        total_nll = torch.zeros((), device=problem.device)
        for batch in problem.train.split(config.batch_size):
            log_probs, realised = trace_terms(
                problem.mechanism,
                batch,
                extras.learner,
                extras.q0,
                alpha=extras.alpha(),
                epsilon=extras.epsilon(),
                validate=False,
            )
            nll = -log_probs.sum() / self.n_terms
            chunk = nll + config.payoff_l2 * realised.pow(2).sum() / self.n_terms if config.payoff_l2 else nll
            chunk.backward()
            total_nll += nll.detach()
        penalty = problem.mechanism.prior_penalty()
        loss = total_nll.clone()
        if penalty is not None:
            scaled = penalty / self.n_terms
            scaled.backward()
            loss += scaled.detach()
        self.last_nll = float(total_nll)
        return loss

    def run(self, checkpoints: Checkpoints) -> None:
        """Train every epoch until converged (or ``patience`` runs out), recording each in ``checkpoints``."""
        from diml_inverse.fit import finish_epoch  # the minibatch trainer's end of an epoch

        config, problem = self.config, self.problem
        bar = tqdm(range(1, config.epochs + 1), desc=f"fit {problem.env_id}", unit="epoch", disable=not config.progress)
        previous = math.inf
        try:
            for epoch in bar:
                started = time.perf_counter()
                problem.mechanism.train()
                loss = float(self.optimizer.step(self.loss))
                self.check_finite(epoch, loss)
                row = {"epoch": epoch, "train_nll": self.last_nll, "train_loss": loss}
                finish_epoch(row, problem, config, self.callback, started, checkpoints)
                bar.set_postfix({k: f"{row[k]:.4f}" for k in ("train_nll", "valid_nll") if k in row})
                if previous - loss <= CONVERGED_CHANGE * max(1.0, abs(loss)):
                    logger.info(
                        "L-BFGS converged at epoch %d (loss %.8g, largest gradient %.3g)", epoch, loss, self.grad_max()
                    )
                    break
                if config.patience is not None and problem.valid.shape[0] and checkpoints.since_best >= config.patience:
                    break
                previous = loss
        finally:
            bar.close()

    def grad_max(self) -> float:
        """The largest absolute gradient of the loss at the optimizer's last evaluation."""
        return max((float(p.grad.abs().max()) for p in self.parameters if p.grad is not None), default=0.0)

    def check_finite(self, epoch: int, loss: float) -> None:
        """Raise :class:`~diml_inverse.errors.FitDivergedError` on a non-finite loss or parameter."""
        from diml_inverse.errors import FitDivergedError

        if math.isfinite(loss) and all(torch.isfinite(p).all() for p in self.parameters):
            return
        raise FitDivergedError(
            f"the L-BFGS fit diverged at epoch {epoch}: the loss is {loss}. Use a stronger prior (a smaller "
            "prior_scale in model_kwargs), raise payoff_l2 or fit with optimizer='adam'"
        )


def search_prior(
    problem: FitProblem,
    config: FitConfig,
    train: Callable[[FitProblem], tuple[Checkpoints, Any]],
) -> tuple[FitProblem, Checkpoints, list[dict[str, float]]]:
    """Choose the prior of ``problem``'s model (``prior_scale``, ``prior_decay``, ...) by held-out NLL.

    A coordinate search over the family's :class:`~diml_inverse.models.PriorGrid` in
    :data:`~diml_inverse.models.PRIOR_SEARCH`: each argument in turn takes its values with the others at their best
    so far; a winning edge value is extended past (``extend``); passes repeat (``sweeps``) while one moved an
    argument. Every candidate is the model family with that prior, started from the previous candidate's
    parameters (warm), trained by ``train`` on the same episodes, and scored by its selected epoch's held-out NLL;
    no prior is trained twice. A candidate must be strictly better to win: ties go to the earlier one.

    Args:
        problem: The fit's problem; its model is a family with a prior (``PRIOR_FAMILIES``).
        config: The fit's options.
        train: Trains a problem and returns its checkpoints (and anything else).

    Returns:
        The winning candidate's problem and checkpoints, and one row per candidate: the prior's arguments,
        ``valid_nll``, ``epochs``, ``seconds`` and ``selected`` (1.0 for the winner).
    """
    model = problem.mechanism
    grid = PRIOR_SEARCH[model.family]
    start_extras = copy.deepcopy(problem.extras.state_dict())
    rows: list[dict[str, float]] = []
    best: tuple[float, FitProblem, Checkpoints, dict[str, float]] | None = None
    warm = model.state_dict()

    def evaluate(prior: dict[str, float]) -> float:
        nonlocal best, warm
        started = time.perf_counter()
        candidate_model = type(model)(**{**model.config(), **prior})
        candidate_model.load_state_dict(warm)
        extras = copy.deepcopy(problem.extras)
        extras.load_state_dict(start_extras)
        candidate = dataclasses.replace(problem, mechanism=candidate_model.to(problem.device), extras=extras)
        try:
            checkpoints, _ = train(candidate)
        except KeyboardInterrupt as stop:  # a FitInterrupted: keep the best finished candidate for fit to return
            if best is not None:
                stop.finished = (best[1], best[2])  # type: ignore[attr-defined]
            raise
        score = checkpoints.best[0] if checkpoints.best is not None else math.inf
        rows.append(
            {
                **prior,
                "valid_nll": score,
                "epochs": float(len(checkpoints.history)),
                "seconds": time.perf_counter() - started,
                "selected": 0.0,
            }
        )
        logger.info("prior search: %s: held-out NLL %.6f", prior, score)
        warm = candidate_model.state_dict()
        if best is None or score < best[0]:
            best = (score, candidate, checkpoints, dict(prior))
        return score

    coordinate_search(grid, evaluate)
    assert best is not None  # at least one candidate ran
    for row in rows:
        row["selected"] = float(all(row[name] == value for name, value in best[3].items()))
    return best[1], best[2], rows


def prior_scoring(mechanism: nn.Module, config: FitConfig) -> Literal["valid", "evidence"]:
    """How the prior search of ``mechanism`` (an untrained model) scores its candidates: ``config.prior_scoring()``,
    and for ``"auto"`` held-out NLL when the model has more than :data:`EVIDENCE_MAX_PARAMETERS` parameters.

    Raises:
        MemoryBudgetError: ``prior_selection="evidence"`` for a model whose dense Hessians cannot fit in memory
            (unless ``check_memory=False``).
    """
    scoring = config.prior_scoring()
    n_params = sum(parameter.numel() for parameter in mechanism.parameters())
    if scoring == "evidence" and config.prior_selection == "auto" and n_params > EVIDENCE_MAX_PARAMETERS:
        logger.info(
            "prior search: %d parameters, over %d: scored by held-out NLL (prior_selection='evidence' to insist)",
            n_params,
            EVIDENCE_MAX_PARAMETERS,
        )
        return "valid"
    if scoring == "evidence" and config.check_memory:
        check_memory(
            EVIDENCE_DENSE_COPIES * 8.0 * n_params**2,
            f"the evidence's Hessians over {n_params} parameters (prior_selection='evidence'; "
            "prior_selection='valid' needs none)",
        )
    return scoring


def search_prior_by_evidence(
    problem: FitProblem,
    config: FitConfig,
    train: Callable[[FitProblem], tuple[Checkpoints, Any]],
) -> tuple[FitProblem, Checkpoints, list[dict[str, float]]]:
    """Choose the prior of ``problem``'s model by its Laplace evidence on the training episodes
    (``prior_selection="evidence"``; MacKay's evidence framework).

    From the first values of the family's :data:`~diml_inverse.models.PRIOR_SEARCH` grid (or ``problem.prior_start``
    where it gives them), each round trains the model at the current prior (warm), expands its training NLL to second
    order (:func:`~diml_inverse.uncertainty.evidence.evidence_expansion`: one Hessian) and maximises the expansion's
    evidence over the prior's arguments (:func:`log_pattern_search`, milliseconds per prior: no refit). The next round
    trains at that maximiser, each argument moved by at most :data:`EVIDENCE_TRUST`. Rounds stop when the maximiser is
    within :data:`EVIDENCE_TOLERANCE` of the trained prior or predicted to gain less than :data:`EVIDENCE_MIN_GAIN` nats
    of log evidence, when a round's evidence is no better than the best so far (the prediction misled), when a
    candidate's fit diverges, or after :data:`EVIDENCE_ROUNDS`. The winner is the trained candidate with the best
    held-out NLL when there is a validation split (the evidence searches, the held-out episodes arbitrate among its few,
    well-separated candidates: the Laplace approximation is poor where strong payoffs saturate the policies), else the
    one with the largest evidence.

    Returns:
        The winner's problem and checkpoints, and one row per trained candidate: the prior's arguments,
        ``evidence_nll`` (minus the log evidence per agent-round), ``valid_nll`` (with a validation split),
        ``epochs``, ``seconds`` and ``selected``. A candidate without a finite evidence never wins.
    """
    from diml_inverse.errors import FitDivergedError
    from diml_inverse.uncertainty.evidence import evidence_expansion

    model = problem.mechanism
    arguments = PRIOR_SEARCH[model.family].arguments
    prior = {name: values[0] for name, values in PRIOR_SEARCH[model.family].coordinates}
    prior.update({name: value for name, value in (problem.prior_start or {}).items() if name in prior})
    n_terms = problem.train.shape[0] * (problem.train.shape[1] - 1) * problem.train.shape[2]
    start_extras = copy.deepcopy(problem.extras.state_dict())
    rows: list[dict[str, float]] = []
    best: tuple[float, FitProblem, Checkpoints, dict[str, float]] | None = None
    warm = model.state_dict()
    actions = problem.train.cpu()
    best_evidence = math.inf
    for _ in range(EVIDENCE_ROUNDS):
        started = time.perf_counter()
        candidate_model = type(model)(**{**model.config(), **prior})
        candidate_model.load_state_dict(warm)
        extras = copy.deepcopy(problem.extras)
        extras.load_state_dict(start_extras)
        candidate = dataclasses.replace(problem, mechanism=candidate_model.to(problem.device), extras=extras)
        try:
            checkpoints, _ = train(candidate)
        except KeyboardInterrupt as stop:  # a FitInterrupted: keep the best finished candidate for fit to return
            if best is not None:
                stop.finished = (best[1], best[2])  # type: ignore[attr-defined]
            raise
        except FitDivergedError as diverged:  # an extreme prior (a precision of 1e15) can break float32 L-BFGS
            if best is None:
                raise
            logger.info("prior search: %s diverged (%s): the search stops", prior, diverged)
            break
        warm = candidate_model.state_dict()
        result = checkpoints.result(candidate, config, started, interrupted=False)
        if result is None:  # no epoch finished
            break
        expansion = evidence_expansion(result, actions)
        score = -expansion.log_evidence(result.mechanism, refit=False) / n_terms
        row = {**prior, "evidence_nll": score}
        if candidate.valid.shape[0] and checkpoints.best is not None:
            row["valid_nll"] = checkpoints.best[0]
        rows.append(
            {
                **row,
                "epochs": float(len(checkpoints.history)),
                "seconds": time.perf_counter() - started,
                "selected": 0.0,
            }
        )
        logger.info("prior search: %s: evidence NLL %.6f", prior, score)
        choice = row.get("valid_nll", score) if math.isfinite(score) else math.inf
        if best is None or choice < best[0]:
            best = (choice, candidate, checkpoints, dict(prior))
        if not score < best_evidence:  # no evidence, or the prediction misled: the search stops
            break
        best_evidence = score

        def surrogate(values: dict[str, float]) -> float:
            trial = type(model)(**{**model.config(), **values})
            return -expansion.log_evidence(trial)  # noqa: B023 (used within the round)

        region = {name: (prior[name] / EVIDENCE_TRUST, prior[name] * EVIDENCE_TRUST) for name in arguments}
        proposal = log_pattern_search(surrogate, prior, bounds=region)
        if all(abs(math.log(proposal[name] / prior[name])) <= math.log(EVIDENCE_TOLERANCE) for name in arguments):
            break
        if surrogate(prior) - surrogate(proposal) < EVIDENCE_MIN_GAIN:
            logger.info(
                "prior search: %s predicted to gain less than %g nats: the search stops", proposal, EVIDENCE_MIN_GAIN
            )
            break
        prior = proposal
    assert best is not None  # the first candidate ran
    for row in rows:
        row["selected"] = float(all(row[name] == value for name, value in best[3].items()))
    return best[1], best[2], rows


def nested_evidence_gain(problem: FitProblem, config: FitConfig, argument: str) -> tuple[float, dict[str, float]]:
    """How much log evidence (nats, in total) the richer prior of ``problem``'s model is predicted to gain, and where.

    ``problem``'s model starts at a simpler family's MAP (``model="auto"``'s nested start: the interaction model's
    parameters and prior, its totals tables at zero), so that with ``argument`` (``prior_total``) near zero the
    richer model *is* the simpler one. One Hessian there and the second-order expansion of the evidence
    (:func:`~diml_inverse.uncertainty.evidence.evidence_expansion`, with its Newton refit) predict the evidence of
    every prior without training: the best with ``argument`` at its lower bound (the simpler family, its other
    arguments free within :data:`EVIDENCE_TRUST` of the start) against the best with it free as well. Their
    difference is the gain; the second is where a search would start.
    """
    from diml_inverse.result import FitResult
    from diml_inverse.uncertainty.evidence import evidence_expansion

    model = problem.mechanism
    arguments = PRIOR_SEARCH[model.family].arguments
    start = {name: float(model.config()[name]) for name in arguments}
    result = FitResult(mechanism=model, learner=problem.extras.fitted_learner(), q0=problem.extras.q0, config=config)
    expansion = evidence_expansion(result, problem.train.cpu())

    def surrogate(values: dict[str, float]) -> float:
        return -expansion.log_evidence(type(model)(**{**model.config(), **values}))

    region = {name: (value / EVIDENCE_TRUST, value * EVIDENCE_TRUST) for name, value in start.items()}
    off = {**region, argument: (1e-4, 1e-4)}
    simpler = log_pattern_search(surrogate, {**start, argument: 1e-4}, bounds=off)
    region[argument] = (1e-4, EVIDENCE_TRUST * start[argument])
    richer = log_pattern_search(surrogate, {**simpler, argument: start[argument]}, bounds=region)
    return surrogate(simpler) - surrogate(richer), richer


def forget_table_hessians() -> None:
    """Drop the free-table Hessian the evidence keeps for the next expansion at the same payoff table
    (:func:`diml_inverse.uncertainty.evidence.forget_table_hessians`); ``fit`` calls it at its start and end."""
    from diml_inverse.uncertainty.evidence import forget_table_hessians as forget

    forget()


def log_pattern_search(
    evaluate: Callable[[dict[str, float]], float],
    start: dict[str, float],
    *,
    step: float = 4.0,
    smallest_step: float = 1.05,
    bounds: Mapping[str, tuple[float, float]] | tuple[float, float] = (1e-4, 1e4),
) -> dict[str, float]:
    """Minimise ``evaluate`` over positive arguments, on a log scale, from ``start``: each argument in turn is
    multiplied or divided by ``step`` while that lowers the value; once a pass moves nothing the step is square-rooted,
    down to ``smallest_step``. Values stay within ``bounds`` (one range for all, or one per argument; always within
    1e-4 to 1e4) and are rounded to three significant digits. ``evaluate`` must be a function of its point: each point
    is evaluated once (a move's way back is a point already seen)."""
    seen: dict[tuple[tuple[str, float], ...], float] = {}

    def value_at(point: dict[str, float]) -> float:
        key = tuple(sorted(point.items()))
        if key not in seen:
            seen[key] = evaluate(point)
        return seen[key]

    current = dict(start)
    value = value_at(dict(current))  # a copy: current changes as the search moves
    ranges = {
        name: (max(low, 1e-4), min(high, 1e4))
        for name in current
        for low, high in [bounds[name] if isinstance(bounds, Mapping) else bounds]
    }
    while step >= smallest_step:
        moved = False
        for name in current:
            low, high = ranges[name]
            for factor in (step, 1 / step):
                while True:
                    trial = float(f"{min(max(current[name] * factor, low), high):.3g}")
                    if trial == current[name]:
                        break
                    trial_value = value_at({**current, name: trial})
                    if not trial_value < value:
                        break
                    current[name], value, moved = trial, trial_value, True
        if not moved:
            step = math.sqrt(step)
    return current


def coordinate_search(grid: PriorGrid, evaluate: Callable[[dict[str, float]], float]) -> dict[str, float]:
    """The search of :func:`search_prior` over ``grid``, with ``evaluate(prior) -> held-out NLL`` (called once per
    prior; lower is better); returns the best prior found.

    Each pass takes the arguments in order: an argument's values (its listed ones and its current one) are
    evaluated with the other arguments at their current values, and it moves to the best if that is strictly
    better. A winning edge value (strictly better than its neighbour) is extended past up to ``grid.extend``
    times while the extension wins. Passes
    stop after ``grid.sweeps`` or once one moves nothing.
    """
    scores: dict[tuple[float, ...], float] = {}

    def score(prior: dict[str, float]) -> float:
        key = tuple(prior[name] for name in grid.arguments)
        if key not in scores:
            scores[key] = evaluate(dict(prior))
        return scores[key]

    current = {name: values[0] for name, values in grid.coordinates}
    for _ in range(grid.sweeps):
        moved = False
        for name, listed in grid.coordinates:
            values = list(dict.fromkeys((*listed, current[name])))
            choice = current[name]
            for value in values:
                if score({**current, name: value}) < score({**current, name: choice}):
                    choice = value
            for _ in range(grid.extend):
                edge = _past_edge(values, choice)
                if edge is None:
                    break
                neighbour, beyond = edge
                if not score({**current, name: choice}) < score({**current, name: neighbour}):
                    break  # no slope toward the edge
                values.append(beyond)
                if not score({**current, name: beyond}) < score({**current, name: choice}):
                    break
                choice = beyond
            moved = moved or choice != current[name]
            current[name] = choice
        if not moved:
            break
    return current


def _past_edge(values: list[float], choice: float) -> tuple[float, float] | None:
    """When ``choice`` is the largest or smallest of ``values``: its neighbour among them and the next value past
    it (geometric, by the ratio of the two, to three significant digits); else None."""
    ordered = sorted(values)
    if len(ordered) < 2 or choice not in (ordered[0], ordered[-1]):
        return None
    neighbour = ordered[-2] if choice == ordered[-1] else ordered[1]
    return neighbour, float(f"{choice * choice / neighbour:.3g}")
