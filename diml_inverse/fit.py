"""``fit``: maximum likelihood of a mechanism through the learners' unroll (paper Eq. 4, Algorithm 1).

A fit is a short pipeline: :func:`prepare_fit` turns the traces and the options into a :class:`FitProblem`
(the game, the model, the learner parameters, the train/valid split), :class:`Trainer` runs the epochs (Adam on
the minibatch negative log-likelihood), :class:`Checkpoints` keeps the epoch that ``select`` returns, and
:meth:`Checkpoints.result` builds the :class:`~diml_inverse.result.FitResult`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diml_inverse import full_batch
from diml_inverse.config import FIT_ARGUMENTS, FitConfig, check_fit_options, fit_config
from diml_inverse.errors import FitDivergedError
from diml_inverse.fit_options import (
    check_assumed_learner,
    check_fit_options_against_traces,
    estimate_fit_memory,
)
from diml_inverse.full_batch import (
    FullBatchTrainer,
    nested_evidence_gain,
    prior_scoring,
    search_prior,
    search_prior_by_evidence,
)
from diml_inverse.likelihood import log_likelihood, trace_terms
from diml_inverse.models import (
    NESTED_FAMILIES,
    PRIOR_FAMILIES,
    ModelName,
    activation_elements,
    auto_family_for,
    auto_model_candidates,
    build_model,
    model_skeleton,
)
from diml_inverse.result import FitResult
from diml_inverse.windows import RoundWindows, check_forgetting_learner, default_burn_in, round_windows
from mechgym.devices import resolve_device
from mechgym.errors import ConfigurationError, TraceDatasetError
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism
from mechgym.memory import check_memory as check_memory_budget
from mechgym.registration import make
from mechgym.threads import torch_threads
from mechgym.traces import TraceDataset, load_traces

__all__ = [
    "Checkpoints",
    "EpochCallback",
    "FitDivergedError",
    "FitInterrupted",
    "FitProblem",
    "LearnerParameters",
    "Trainer",
    "choose_family",
    "episode_nll",
    "finish_epoch",
    "fit",
    "mean_nll",
    "prepare_fit",
    "train_family",
    "tunes_prior",
]

logger = logging.getLogger(__name__)

#: Called after every epoch with ``(epoch, mechanism)``; the metrics it returns join the history row.
EpochCallback = Callable[[int, Mechanism], dict[str, float]]


class FitInterrupted(KeyboardInterrupt):
    """A fit stopped by Ctrl-C (a ``KeyboardInterrupt`` during training, the epoch callback's included).

    An epoch is done once its history row is recorded, i.e. after its training pass, its held-out likelihood
    and its callback; an interrupt inside epoch ``k`` (its callback included) keeps epochs ``1..k-1``.

    Attributes:
        result: The :class:`FitResult` a finished fit would return with the history so far: the parameters of
            the best done epoch under the fit's ``select`` rule (``"best_valid"`` with a validation split: the
            best held-out likelihood; otherwise the last done epoch). ``None`` when no epoch was done.
        epochs_done: The epochs done (``len(result.history)``, 0 when ``result`` is ``None``).
        epochs: The epochs the fit was asked for.
    """

    def __init__(self, result: FitResult | None, epochs_done: int, epochs: int) -> None:
        self.result = result
        self.epochs_done = epochs_done
        self.epochs = epochs
        if result is None:
            message = f"fit interrupted before any of its {epochs} epochs was done: nothing to keep (.result is None)"
        else:
            message = (
                f"fit interrupted after {epochs_done} of {epochs} epochs; .result holds the fit of epoch "
                f"{result.selected_epoch} (select={result.config.select!r}): save it with .result.save(path)"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.result, self.epochs_done, self.epochs))


class LearnerParameters(nn.Module):
    """The learner quantities a fit may learn besides the mechanism: ``Q(1)``, ``alpha`` and ``epsilon``.

    ``alpha`` and ``epsilon`` are kept in (0, 1) through a sigmoid. ``beta`` is never learned: it is
    confounded with the payoff scale (Remark 1).
    """

    def __init__(
        self, learner: Learner, n_agents: int, n_actions: int, *, q0: bool, alpha: bool, epsilon: bool
    ) -> None:
        super().__init__()
        self.learner = learner
        params = learner.params()  # q0 / alpha / epsilon are only requested when present (check_assumed_learner)
        self.q0 = nn.Parameter(torch.full((n_agents, n_actions), params["q0"])) if q0 else None
        self.alpha_logit = nn.Parameter(torch.tensor(_logit(params["alpha"]))) if alpha else None
        self.epsilon_logit = nn.Parameter(torch.tensor(_logit(params["epsilon"]))) if epsilon else None

    def alpha(self) -> Tensor | None:
        return None if self.alpha_logit is None else torch.sigmoid(self.alpha_logit)

    def epsilon(self) -> Tensor | None:
        return None if self.epsilon_logit is None else torch.sigmoid(self.epsilon_logit)

    def fitted_learner(self) -> Learner:
        """The learner with the learned ``alpha``/``epsilon`` filled in."""
        changes: dict[str, float] = {}
        if self.alpha_logit is not None:
            changes["alpha"] = float(self.alpha_logit.detach().sigmoid())
        if self.epsilon_logit is not None:
            changes["epsilon"] = float(self.epsilon_logit.detach().sigmoid())
        return self.learner.replace(**changes) if changes else self.learner


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


# -- 1. the problem: traces, game, model, learner parameters ----------------------------------------
@dataclass(frozen=True, eq=False)
class FitProblem:
    """What a fit works on, prepared from the traces and the options before the first epoch.

    Attributes:
        env_id: The game the traces come from, as used.
        env_kwargs: Its arguments, as used.
        model_name: The model family, as used (``"auto"`` resolved; a model instance's class name).
        device: Where the fit runs.
        mechanism: The model being trained, on ``device`` (a copy of a model instance).
        extras: The learned learner quantities (and the assumed learner, ``extras.learner``), on ``device``.
        train: Training actions ``[E_train, T, N]`` on ``device`` (the first episodes).
        valid: Held-out actions ``[E_valid, T, N]`` on ``device`` (the last ``valid_fraction`` of the episodes).
        order_seed: Seed of the minibatch (and agent, window) order.
        auto_families: With ``model="auto"``, the families :func:`fit` tries, simplest first
            (:func:`~diml_inverse.models.auto_model_candidates`); ``model_name`` is the first.
        prior_start: Where the evidence search of the prior starts, for the arguments it gives (the grid's first
            values for the others); ``model="auto"`` starts a family that nests the one before at that one's prior.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    model_name: str
    device: torch.device
    mechanism: Mechanism
    extras: LearnerParameters
    train: Tensor
    valid: Tensor
    order_seed: int
    auto_families: tuple[str, ...] = ()
    prior_start: Mapping[str, float] | None = None

    @property
    def learner(self) -> Learner:
        """The assumed learner."""
        return self.extras.learner


def _resolve_traces(traces: TraceDataset | str | Path, env_id: str | None) -> TraceDataset:
    if isinstance(traces, (str, Path)):
        return load_traces(traces, env_id=env_id)
    if not isinstance(traces, TraceDataset):
        raise TraceDatasetError(
            f"traces must be a TraceDataset or a path to a saved one; got {type(traces).__name__}. "
            "Record some with mechgym.rollout(...) or mechgym.load_traces(path)."
        )
    return traces


def _resolve_game(
    env_id: str | None, traces: TraceDataset, env_kwargs: dict[str, Any] | None
) -> tuple[str, dict[str, Any], Mechanism]:
    recorded = traces.metadata.env_id
    if env_id is None:
        env_id = recorded
    elif recorded is not None and recorded != env_id:
        raise TraceDatasetError(
            f"the traces were recorded on {recorded} but fit was asked for {env_id}; pass env_id={recorded!r} "
            "(or None to use the recorded one)"
        )
    if env_id is None:
        raise ConfigurationError("the traces name no environment; pass env_id=... or model=<a Mechanism instance>")
    kwargs = dict(traces.metadata.env_kwargs if env_kwargs is None and env_id == recorded else env_kwargs or {})
    game = make(env_id, **kwargs)
    truth_like = game.mechanism
    if (truth_like.n_agents, truth_like.n_actions) != (traces.n_agents, traces.n_actions):
        raise TraceDatasetError(
            f"{env_id} has {truth_like.n_agents} agents x {truth_like.n_actions} actions but the traces have "
            f"{traces.n_agents} x {traces.n_actions}; pass the env kwargs the traces were recorded with"
        )
    return env_id, dict(game.env_kwargs), truth_like


def _check_fit_memory(
    config: FitConfig,
    truth_like: Mechanism,
    traces: TraceDataset,
    learner: Learner,
    n_valid: int,
    model_name: str,
    device: torch.device,
) -> None:
    """Refuse a fit whose estimated memory (:func:`estimate_fit_memory`) exceeds what ``device`` has available."""
    model = model_name if config.model == "auto" else config.model  # auto: its first family
    skeleton = model_skeleton(model, truth_like, model_kwargs=_as_dict(config.model_kwargs))  # no allocation
    window_rounds = None
    if config.round_window is not None:  # a learned alpha may lengthen the default burn-in up to the episode
        longest = config.burn_in if config.burn_in is not None else (traces.n_rounds if config.learn_alpha else None)
        window_burn_in = longest if longest is not None else default_burn_in(learner.params()["alpha"])
        window_rounds = window_burn_in + config.round_window + 1
    n_q0 = truth_like.n_agents * truth_like.n_actions if config.learn_q0 else 0
    estimate = estimate_fit_memory(
        skeleton,
        n_train_episodes=traces.n_episodes - n_valid,
        n_valid_episodes=n_valid,
        n_rounds=traces.n_rounds,
        batch_size=config.batch_size,
        agent_batch_size=config.agent_batch_size,
        window_rounds=window_rounds,
        n_learner_parameters=n_q0 + config.learn_alpha + config.learn_epsilon,
    )
    check_memory_budget(estimate.total_bytes, estimate.describe(model_name), device=device, option="check_memory")


def _as_dict(mapping: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if mapping is None else dict(mapping)


def prepare_fit(
    env_id: str | None, traces: TraceDataset | str | Path, learner: Learner | None, config: FitConfig
) -> FitProblem:
    """Read the traces, check them against the options and build the model and the learner parameters.

    Args:
        env_id, traces, learner: As in :func:`fit`.
        config: The fit's options (already validated).

    Returns:
        The problem, with the model initialised from ``config.seed``.

    Raises:
        TraceDatasetError, ConfigurationError, MemoryBudgetError: as :func:`fit` documents.
    """
    device = resolve_device(config.device)
    traces = _resolve_traces(traces, env_id)
    env_id, env_kwargs, truth_like = _resolve_game(env_id, traces, _as_dict(config.env_kwargs))
    check_fit_options_against_traces(config.valid_fraction, traces.n_episodes, traces.n_rounds)
    assumed = check_assumed_learner(
        learner if learner is not None else traces.learner(),
        traces,
        learn_q0=config.learn_q0,
        learn_alpha=config.learn_alpha,
        learn_epsilon=config.learn_epsilon,
    )
    if config.round_window is not None:
        check_forgetting_learner(assumed)
    init_seed, order_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(config.seed).spawn(2))
    model = config.model
    model_name = model if isinstance(model, str) else type(model).__name__
    if model_name == "auto":
        model_name = auto_family_for(truth_like, _as_dict(config.model_kwargs), config.auto_candidates)
        model = cast(ModelName, model_name)
    n_valid = 0 if config.valid_fraction == 0 else max(1, round(config.valid_fraction * traces.n_episodes))
    n_valid = min(n_valid, traces.n_episodes - 1)
    if config.check_memory:
        _check_fit_memory(config, truth_like, traces, assumed, n_valid, model_name, device)
    if isinstance(model, Mechanism):
        model = copy.deepcopy(model)  # trained in place below: never the caller's module
    mechanism = build_model(model, truth_like, seed=init_seed, model_kwargs=_as_dict(config.model_kwargs)).to(device)
    if any(not torch.isfinite(p).all() for p in mechanism.parameters()):
        raise ConfigurationError("the model's initial parameters contain NaN or infinite values")
    learned = {"q0": config.learn_q0, "alpha": config.learn_alpha, "epsilon": config.learn_epsilon}
    extras = LearnerParameters(assumed, truth_like.n_agents, truth_like.n_actions, **learned).to(device)
    actions = traces.actions_tensor(device)
    n_train = traces.n_episodes - n_valid
    if config.model != "auto":
        auto_families: tuple[str, ...] = (model_name,)
    else:
        auto_families = config.auto_candidates or tuple(auto_model_candidates(truth_like))
    return FitProblem(
        env_id,
        env_kwargs,
        model_name,
        device,
        mechanism,
        extras,
        actions[:n_train],
        actions[n_train:],
        order_seed,
        auto_families,
    )


# -- 2. the epochs ----------------------------------------------------------------------------------
def mean_nll(model: Mechanism, actions: Tensor, learner: Learner, extras: LearnerParameters, batch_size: int) -> float:
    """Negative log-likelihood per agent-round of ``actions``, in batches, without gradients."""
    total, terms = 0.0, 0
    with torch.no_grad():
        for start in range(0, actions.shape[0], batch_size):
            batch = actions[start : start + batch_size]
            log_p = log_likelihood(
                model, batch, learner, extras.q0, alpha=extras.alpha(), epsilon=extras.epsilon(), validate=False
            )
            total -= float(log_p)
            terms += batch.shape[0] * (batch.shape[1] - 1) * batch.shape[2]
    return total / terms


def finish_epoch(
    row: dict[str, float],
    problem: FitProblem,
    config: FitConfig,
    callback: EpochCallback | None,
    started: float,
    checkpoints: Checkpoints,
) -> None:
    """Complete an epoch's history row after its training pass (the held-out NLL, the callback's metrics, the
    epoch's seconds since ``started``), record it in ``checkpoints`` (the epoch is then done), then log it at INFO."""
    problem.mechanism.eval()
    if problem.valid.shape[0]:
        row["valid_nll"] = mean_nll(
            problem.mechanism, problem.valid, problem.learner, problem.extras, config.batch_size
        )
    if callback is not None:
        with torch.no_grad():
            row.update(callback(int(row["epoch"]), problem.mechanism))
    row["seconds"] = time.perf_counter() - started
    checkpoints.record(row, problem)
    logger.info("epoch %d: %s", row["epoch"], ", ".join(f"{k}={v:.5g}" for k, v in row.items() if k != "epoch"))


def _first_call_checked(function: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(function, dynamic=False)`` (one graph per minibatch shape), whose first call turns a
    compilation failure into a clear :class:`ConfigurationError`."""
    from torch._dynamo.exc import TorchDynamoException  # imported here: torch._dynamo is slow to import

    # what a failing compile raises on its first call (no C++ compiler, an unsupported operation, ...)
    compile_errors = (RuntimeError, OSError, NotImplementedError, TorchDynamoException)
    compiled = torch.compile(function, dynamic=False)
    calls = 0

    def call(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            return compiled(*args)
        try:
            return compiled(*args)
        except compile_errors as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ConfigurationError(
                f"torch.compile failed ({type(error).__name__}: {first_line}); fit with compile=False"
            ) from error

    return call


def adam(parameters: Sequence[Tensor], *, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel where the parameters' device has one, else the default implementation.

    The same update to float rounding (about 1e-8 after 50 steps); one kernel for all the parameters instead of
    a loop of small operations per parameter, 3.5x faster on an E1 model (docs/benchmarks.md).
    """
    try:
        return torch.optim.Adam(list(parameters), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.Adam(list(parameters), lr=lr, weight_decay=weight_decay)


#: The training episodes' payoff-table index (:meth:`Mechanism.table_index`) is kept up to this many entries.
TABLE_INDEX_MAX_ELEMENTS = 1 << 25


class Trainer:
    """The epochs of a fit: Adam steps on minibatches of episodes (or round windows, agents), then the held-out
    likelihood and the callback of each epoch (Algorithm 1).

    The loss of a minibatch is the negative log-likelihood per agent-round plus ``payoff_l2`` times the mean
    squared payoff of the observed joint actions (rounds ``1..T-1``, or the scored terms of round windows).
    """

    def __init__(self, problem: FitProblem, config: FitConfig, callback: EpochCallback | None) -> None:
        self.problem, self.config, self.callback = problem, config, callback
        extras = problem.extras
        self.parameters = [p for p in [*problem.mechanism.parameters(), *extras.parameters()] if p.requires_grad]
        if not self.parameters:
            raise ConfigurationError("the model has no trainable parameters (was it frozen?)")
        self.optimizer = adam(self.parameters, lr=config.lr, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(problem.order_seed)
        self.windows: RoundWindows | None = None  # None: whole episodes
        self.windows_burn_in: int | None = None
        self.step_sums: Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]] | None = None
        # a table game's index of the training episodes' payoffs, made once (whole episodes only; bounded memory)
        fits = problem.train.numel() * problem.mechanism.n_actions <= TABLE_INDEX_MAX_ELEMENTS
        self.table_index = problem.mechanism.table_index(problem.train[:, :-1]) if fits else None

    def run(self, checkpoints: Checkpoints) -> None:
        """Train every epoch (or until ``patience`` runs out), recording each in ``checkpoints``."""
        config, problem = self.config, self.problem
        bar = tqdm(range(1, config.epochs + 1), desc=f"fit {problem.env_id}", unit="epoch", disable=not config.progress)
        try:
            for epoch in bar:
                started = time.perf_counter()
                row = self.train_epoch(epoch)
                if self.windows_burn_in is not None:
                    row["burn_in"] = self.windows_burn_in
                finish_epoch(row, problem, config, self.callback, started, checkpoints)
                bar.set_postfix({k: f"{row[k]:.4f}" for k in ("train_nll", "valid_nll") if k in row})
                if config.patience is not None and problem.valid.shape[0] and checkpoints.since_best >= config.patience:
                    logger.info(
                        "early stop at epoch %d: no better held-out likelihood for %d epochs", epoch, config.patience
                    )
                    break
        finally:
            bar.close()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training items in a seeded random order; the history row's ``epoch`` and ``train_nll``."""
        config, problem = self.config, self.problem
        problem.mechanism.train()
        total_on_device, terms = torch.zeros((), device=problem.device), 0  # summed on the device: no sync per step
        if config.round_window is not None:
            self._update_windows(config.round_window)
        train, windows, n_agents = problem.train, self.windows, problem.mechanism.n_agents
        n_rounds = train.shape[1]
        n_items = train.shape[0] * (1 if windows is None else windows.n_windows)
        for index in torch.randperm(n_items, generator=self.generator).split(config.batch_size):
            agents = None
            if config.agent_batch_size is not None and config.agent_batch_size < n_agents:
                agents = torch.randperm(n_agents, generator=self.generator)[: config.agent_batch_size]
                agents = agents.sort().values.to(problem.device)
            n_agent_terms = n_agents if agents is None else int(agents.numel())
            if windows is None:
                n_terms = int(index.numel()) * (n_rounds - 1) * n_agent_terms
            else:
                n_terms = int(windows.n_scored[index % windows.n_windows].sum()) * n_agent_terms  # host: no sync
            if self.step_sums is None:  # the first step: compile now, so that a failure is reported as such
                self.step_sums = _first_call_checked(self.minibatch_sums) if config.compile else self.minibatch_sums
            log_prob_sum, squared_payoff_sum = self.step_sums(index.to(problem.device), agents)
            nll = -log_prob_sum / n_terms
            loss = nll + config.payoff_l2 * (squared_payoff_sum / n_terms) if config.payoff_l2 else nll
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.parameters, config.grad_clip)
            self.optimizer.step()
            total_on_device += nll.detach() * n_terms
            terms += n_terms
        total = float(total_on_device)
        self._check_finite(epoch, total)
        return {"epoch": epoch, "train_nll": total / terms}

    def _update_windows(self, round_window: int) -> None:
        """The epoch's round windows: their burn-in is fixed or follows the learned ``alpha`` (one host sync)."""
        burn_in = self.config.burn_in
        if burn_in is None:
            alpha = self.problem.extras.alpha()
            burn_in = default_burn_in(
                self.problem.learner.params()["alpha"] if alpha is None else float(alpha.detach())
            )
        if burn_in != self.windows_burn_in:
            self.windows_burn_in = burn_in
            self.windows = round_windows(self.problem.train.shape[1], round_window, burn_in, self.problem.device)

    def minibatch_sums(self, index: Tensor, agents: Tensor | None) -> tuple[Tensor, Tensor]:
        """Sums of the log-likelihood terms and of the squared realised payoffs of one minibatch."""
        problem, extras, windows = self.problem, self.problem.extras, self.windows
        alpha, epsilon = extras.alpha(), extras.epsilon()
        if windows is None:
            log_probs, realised = trace_terms(
                problem.mechanism,
                problem.train[index],
                extras.learner,
                extras.q0,
                alpha=alpha,
                epsilon=epsilon,
                agents=agents,
                validate=False,
                table_index=None if self.table_index is None else self.table_index.select(index, agents),
            )
            return log_probs.sum(), realised.pow(2).sum()
        log_probs, realised, scored = windows.terms(
            problem.mechanism,
            problem.train,
            extras.learner,
            index,
            extras.q0,
            alpha=alpha,
            epsilon=epsilon,
            agents=agents,
        )
        return torch.where(scored, log_probs, 0.0).sum(), torch.where(scored, realised, 0.0).pow(2).sum()

    def _check_finite(self, epoch: int, total: float) -> None:
        if math.isfinite(total) and all(torch.isfinite(p).all() for p in self.parameters):
            return
        config = self.config
        finiteness = "finite" if all(torch.isfinite(p).all() for p in self.parameters) else "not finite"
        raise FitDivergedError(
            f"the fit diverged at epoch {epoch}: the training loss is {total} and the parameters are "
            f"{finiteness}. Lower lr (now {config.lr}), raise payoff_l2 (now {config.payoff_l2}) or enable grad_clip "
            f"(now {config.grad_clip})."
        )


# -- 3. selection and checkpoints --------------------------------------------------------------------
def _snapshot(mechanism: Mechanism, extras: LearnerParameters) -> dict[str, Any]:
    return {"mechanism": copy.deepcopy(mechanism.state_dict()), "extras": copy.deepcopy(extras.state_dict())}


class Checkpoints:
    """The history of the done epochs and the parameters a fit can return from them.

    With ``select_best`` (``select="best_valid"`` and a validation split), the parameters of the best score so
    far (the held-out NLL); otherwise those of the last done epoch. An epoch is done once its row is recorded:
    :attr:`done` (epochs done, best, last done epoch's snapshot) is replaced in one assignment, so a Ctrl-C at any
    point leaves a consistent state.
    """

    def __init__(self, select_best: bool) -> None:
        self.select_best = select_best
        self.history: list[dict[str, float]] = []
        self.best: tuple[float, int, dict[str, Any]] | None = None
        self.since_best = 0
        self.done: tuple[int, tuple[float, int, dict[str, Any]] | None, dict[str, Any] | None] = (0, None, None)

    def record(self, row: dict[str, float], problem: FitProblem) -> None:
        """Add a done epoch's row; snapshot the parameters if they may be returned."""
        epoch = int(row["epoch"])
        score = row.get("valid_nll", row["train_nll"])
        improved = self.best is None or score < self.best[0]
        snapshot = _snapshot(problem.mechanism, problem.extras) if improved or not self.select_best else None
        new_best = (score, epoch, snapshot) if improved and snapshot is not None else self.best
        last_state = None if self.select_best else snapshot
        self.history.append(row)
        self.done = (len(self.history), new_best, last_state)  # the epoch is done
        self.best, self.since_best = new_best, 0 if improved else self.since_best + 1

    def result(self, problem: FitProblem, config: FitConfig, started: float, *, interrupted: bool) -> FitResult | None:
        """The :class:`FitResult` of the done epochs (``None`` if none is): the selected epoch's parameters.

        Args:
            problem: The fit's problem; its parameters are set to the selected epoch's.
            config: The fit's options.
            started: ``time.perf_counter()`` when the fit started.
            interrupted: Whether the live parameters may be past the last done epoch (Ctrl-C).
        """
        epochs_done, best, last_state = self.done
        if best is None:
            return None
        mechanism, extras = problem.mechanism, problem.extras
        if self.select_best:
            mechanism.load_state_dict(best[2]["mechanism"])
            extras.load_state_dict(best[2]["extras"])
            selected = best[1]
        else:
            if interrupted and last_state is not None:
                mechanism.load_state_dict(last_state["mechanism"])
                extras.load_state_dict(last_state["extras"])
            selected = int(self.history[epochs_done - 1]["epoch"])
        mechanism.eval()
        return FitResult(
            mechanism=mechanism,
            learner=extras.fitted_learner(),
            q0=None if extras.q0 is None else extras.q0.detach().clone(),
            history=self.history[:epochs_done],
            config=config,
            selected_epoch=int(selected),
            best_epoch=int(best[1]),
            env_id=problem.env_id,
            env_kwargs=problem.env_kwargs,
            model_name=problem.model_name,
            assumed_learner=problem.learner,
            fit_device=str(problem.device),
            n_train_episodes=int(problem.train.shape[0]),
            n_valid_episodes=int(problem.valid.shape[0]),
            seconds=time.perf_counter() - started,
        )


# -- the pipeline ------------------------------------------------------------------------------------
def fit(
    env_id: str | None,
    traces: TraceDataset | str | Path,
    *,
    learner: Learner | None = None,
    config: FitConfig | None = None,
    callback: EpochCallback | None = None,
    **overrides: Any,
) -> FitResult:
    """Fit a mechanism to action traces by maximum likelihood through the learners' unroll (DIML).

    Every minibatch costs one batched counterfactual evaluation of the model and a parallel exponential
    filter over rounds (:func:`diml_inverse.log_likelihood`); the loss is the negative log-likelihood per
    agent-round plus ``payoff_l2`` times the mean squared payoff of the observed joint actions.

    >>> result = fit(env_id, traces, epochs=5, lr=1e-2)  # doctest: +SKIP
    >>> result = fit(env_id, traces, config=FitConfig(epochs=5), lr=1e-2)  # the same fit  # doctest: +SKIP

    Args:
        env_id: The game the traces come from (``None``: the id recorded in the traces). It gives the model's
            sizes and family; the environment's ground truth is never looked at.
        traces: A :class:`~mechgym.traces.TraceDataset` or a path to a saved one.
        learner: The assumed learning model; ``None`` takes the learner recorded in the traces. Passing a
            different one makes a misspecified fit (DIML-Wrong).
        config: The options (:class:`~diml_inverse.config.FitConfig`, whose fields document each); ``None``: the
            defaults.
        callback: ``callback(epoch, mechanism) -> dict`` called after each epoch (e.g. to track metrics); what it
            returns joins the epoch's history row.
        **overrides: Options that replace those of ``config`` (``dataclasses.replace(config, **overrides)``),
            e.g. ``epochs=5``.

    Every option is checked before the traces are read (:func:`~diml_inverse.config.check_fit_options`),
    ``model_kwargs`` against the family's constructor when the model is sized, before anything is allocated.

    Returns:
        A :class:`FitResult`: the fitted mechanism, the history, ``config`` and what the fit measured.

    Raises:
        TraceDatasetError: traces that do not match the environment.
        ConfigurationError: bad options (naming the option: an unknown name with a did-you-mean, type, range,
            unknown model or ``model_kwargs`` key, unsupported or missing device, ...).
        MemoryBudgetError: the estimated memory does not fit the device (unless ``check_memory=False``).
        FitDivergedError: the loss or parameters became non-finite (lower ``lr`` or raise ``payoff_l2``).
        FitInterrupted: Ctrl-C during training; its ``result`` holds the fit of the epochs done so far.
    """
    started = time.perf_counter()
    config = fit_config(config, overrides, known=("traces", "config", *FIT_ARGUMENTS))
    check_fit_options(env_id=env_id, learner=learner, callback=callback)
    full_batch.forget_table_hessians()  # reused only within this fit (nested families at the same payoff table)
    problem = prepare_fit(env_id, traces, learner, config)
    families = [problem.model_name]
    if config.model == "auto" and config.model_kwargs is None and problem.valid.shape[0]:
        families = list(problem.auto_families)
    trained: list[tuple[FitProblem, Checkpoints]] = []  # each family's trained problem, in order
    search: list[dict[str, float | str]] = []
    for family in families:
        if family != problem.model_name:
            if (prepared := prepare_family(env_id, traces, learner, config, family, trained, search)) is None:
                continue  # not worth training: its row in search says why
            problem = prepared
        try:
            candidate, checkpoints, rows = train_family(problem, config, callback, started)
        except FitInterrupted as stop:
            # the best finished candidate (of this family's prior search, or an earlier family), if any
            done = [x for x in (getattr(stop, "finished", None), *trained) if x and x[1].best]
            if not done:
                raise
            finished = min(done, key=lambda pair: pair[1].best[0])  # type: ignore[index]
            result = finished[1].result(finished[0], config, started, interrupted=False)
            raise FitInterrupted(result, len(result.history) if result else 0, config.epochs) from stop
        score = checkpoints.best[0] if checkpoints.best is not None else math.inf
        search += [{"model": family, **row} for row in rows] or [{"model": family, "valid_nll": score}]
        trained.append((candidate, checkpoints))
    chosen = choose_family(trained, config, started, search) if len(trained) > 1 else trained[0]
    result = chosen[1].result(chosen[0], config, started, interrupted=False)
    assert result is not None  # at least one epoch ran
    if len(search) > 1:
        result.model_search = _marked(search, result.model_name)
    full_batch.forget_table_hessians()
    return result


def _marked(search: list[dict[str, float | str]], kept: str) -> list[dict[str, float | str]]:
    """``search`` with ``selected`` 1.0 on the kept family's selected rows, 0.0 elsewhere."""
    for row in search:
        row["selected"] = float(row["model"] == kept and row.get("selected", 1.0) == 1.0)
    return search


def episode_nll(
    mechanism: Mechanism, actions: Tensor, learner: Learner, q0: Tensor | None, batch_size: int = 64
) -> np.ndarray:
    """Negative log-likelihood of every episode of ``actions`` (``[E, T, N]``) under learners playing
    ``mechanism``, ``[E]``: ``-sum log pi_i(t)(a_i(t))`` over its rounds ``t >= 2`` and agents (float64 numpy)."""
    values = []
    with torch.no_grad():
        for start in range(0, actions.shape[0], batch_size):
            terms = log_likelihood(mechanism, actions[start : start + batch_size], learner, q0, reduction="none")
            values.append(-terms.double().sum(dim=(1, 2)).cpu().numpy())
    return np.concatenate(values) if values else np.zeros(0)


def choose_family(
    trained: Sequence[tuple[FitProblem, Checkpoints]],
    config: FitConfig,
    started: float,
    search: list[dict[str, float | str]],
) -> tuple[FitProblem, Checkpoints]:
    """The family ``model="auto"`` keeps among ``trained`` (simplest first), by ``config.model_selection``.

    ``"best_valid"``: the best held-out NLL. ``"one_se"``: the first family whose held-out NLL per agent-round
    exceeds the best one's by at most the standard error of their paired difference over the validation episodes
    (the best held-out NLL with fewer than two validation episodes). Each family's rows of ``search`` gain
    ``family_gap`` (its held-out NLL minus the best family's) and ``family_gap_se`` (that difference's standard
    error), with ``"one_se"``.
    """
    scores = [checkpoints.best[0] if checkpoints.best is not None else math.inf for _, checkpoints in trained]
    n_valid = int(trained[0][0].valid.shape[0])
    if config.model_selection == "best_valid" or n_valid < 2:
        return trained[int(np.argmin(scores))]  # the first of the best
    per_episode = []
    for problem, checkpoints in trained:
        result = checkpoints.result(problem, config, started, interrupted=False)  # the parameters it would return
        if result is None:
            per_episode.append(np.full(n_valid, math.inf))
            continue
        terms = (problem.valid.shape[1] - 1) * problem.valid.shape[2]
        per_episode.append(
            episode_nll(result.mechanism, problem.valid, result.learner, result.q0, config.batch_size) / terms
        )
    best = int(np.argmin([values.mean() for values in per_episode]))  # of the parameters each would return
    chosen = best
    for index, (problem, _) in enumerate(trained):
        difference = per_episode[index] - per_episode[best]
        gap = float(difference.mean()) if np.isfinite(difference).all() else math.inf
        gap_se = float(difference.std(ddof=1) / math.sqrt(n_valid)) if math.isfinite(gap) else math.inf
        for row in search:
            if row["model"] == problem.model_name:
                row["family_gap"], row["family_gap_se"] = gap, gap_se
        if chosen == best and index < best and gap <= gap_se:
            chosen = index
    if chosen != best:
        logger.info(
            "model='auto': %s kept, within one standard error of %s's held-out NLL",
            trained[chosen][0].model_name,
            trained[best][0].model_name,
        )
    return trained[chosen]


def prepare_family(
    env_id: str | None,
    traces: TraceDataset | str | Path,
    learner: Learner | None,
    config: FitConfig,
    family: str,
    trained: Sequence[tuple[FitProblem, Checkpoints]],
    search: list[dict[str, float | str]],
) -> FitProblem | None:
    """The problem of ``model="auto"``'s next ``family``, started from the one it nests (:func:`nested_start`);
    ``None`` when the screen says it is not worth training (its row is then appended to ``search``)."""
    one_family = dataclasses.replace(config, model=cast(ModelName, family), auto_candidates=None)
    problem = prepare_fit(env_id, traces, learner, one_family)
    problem, screened_out = nested_start(problem, trained, config)
    if screened_out is not None:
        search.append(screened_out)
        return None
    return problem


def nested_start(
    problem: FitProblem, trained: Sequence[tuple[FitProblem, Checkpoints]], config: FitConfig
) -> tuple[FitProblem, dict[str, float | str] | None]:
    """``problem`` started from an earlier family it nests (:data:`~diml_inverse.models.NESTED_FAMILIES`), when
    there is one, and screened by its evidence.

    The interaction model with totals tables starts from the trained interaction model's parameters (its tables at
    zero) and prior. When its prior is searched by the evidence, one Hessian there predicts the log evidence the
    tables gain (:func:`~diml_inverse.full_batch.nested_evidence_gain`): below ``full_batch.NESTED_MIN_GAIN`` nats
    the family is not trained (the second value is then its ``model_search`` row, ``evidence_gain``), else its
    search starts at the predicted prior. Other problems are returned unchanged, with ``None``.
    """
    nested, argument = NESTED_FAMILIES.get(problem.model_name, ("", ""))
    base = next((candidate for candidate, _ in trained if nested and candidate.model_name == nested), None)
    starting_from = getattr(problem.mechanism, "starting_from", None)
    started = starting_from(base.mechanism) if base is not None and starting_from is not None else None
    if base is None or started is None:
        return problem, None
    start = {name: float(base.mechanism.config()[name]) for name in PRIOR_FAMILIES.get(nested, ())}
    problem = dataclasses.replace(problem, mechanism=started.to(problem.device), prior_start=start)
    if not tunes_prior(problem, config) or prior_scoring(problem.mechanism, config) != "evidence":
        return problem, None
    gain, where = nested_evidence_gain(problem, config, argument)
    if gain < full_batch.NESTED_MIN_GAIN:  # read here, so that it can be changed
        logger.info("model='auto': %s predicted to gain %.3g nats of evidence: not fitted", problem.model_name, gain)
        return problem, {"model": problem.model_name, "evidence_gain": gain, "selected": 0.0}
    return dataclasses.replace(problem, prior_start=where), None


def train_family(
    problem: FitProblem, config: FitConfig, callback: EpochCallback | None, started: float
) -> tuple[FitProblem, Checkpoints, list[dict[str, float]]]:
    """Train ``problem``'s model (searching its prior when :func:`tunes_prior`): the trained problem (a prior
    search's winner), its checkpoints and the search's rows (none without a search).

    Raises:
        FitInterrupted: Ctrl-C; its ``result`` holds the epochs done of the model being trained.
    """
    select_best = config.select == "best_valid" and bool(problem.valid.shape[0])
    minibatch_only = config.round_window is not None or config.agent_batch_size is not None
    auto_full_batch = config.optimizer == "auto" and problem.model_name in PRIOR_FAMILIES and not minibatch_only
    full_batch = config.optimizer == "lbfgs" or auto_full_batch

    def train(candidate: FitProblem) -> tuple[Checkpoints, None]:
        checkpoints = Checkpoints(select_best=select_best)
        trainer = FullBatchTrainer(candidate, config, callback) if full_batch else Trainer(candidate, config, callback)
        # torch threads by mechgym.threads' policy (1 for small steps and on a loaded machine; MECHGYM_THREADS)
        rows = min(config.batch_size, int(candidate.train.shape[0])) * int(candidate.train.shape[1])
        work = activation_elements(candidate.mechanism, rows, candidate.mechanism.n_agents, grad=True)
        try:
            with torch_threads(None, work):
                trainer.run(checkpoints)
        except KeyboardInterrupt as interrupt:
            result = checkpoints.result(candidate, config, started, interrupted=True)
            logger.warning("fit interrupted after %d of %d epochs", checkpoints.done[0], config.epochs)
            raise FitInterrupted(result, checkpoints.done[0], config.epochs) from interrupt
        return checkpoints, None

    if tunes_prior(problem, config):
        search = search_prior_by_evidence if prior_scoring(problem.mechanism, config) == "evidence" else search_prior
        return search(problem, config, train)
    checkpoints, _ = train(problem)
    return problem, checkpoints, []


def tunes_prior(problem: FitProblem, config: FitConfig) -> bool:
    """Whether the fit searches its model's prior: a prior family, ``tune_prior``, a validation split (or
    scoring by the evidence, ``FitConfig.prior_scoring``), and no prior argument set in ``model_kwargs``."""
    keys = PRIOR_FAMILIES.get(problem.model_name)
    if not keys or not config.tune_prior or not isinstance(config.model, str):
        return False
    if not problem.valid.shape[0] and prior_scoring(problem.mechanism, config) == "valid":
        logger.info(
            "tune_prior needs a validation split (valid_fraction > 0) or prior_selection='evidence': the prior's "
            "defaults are used"
        )
        return False
    return not any(key in (config.model_kwargs or {}) for key in keys)
