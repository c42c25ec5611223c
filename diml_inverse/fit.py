"""``fit``: maximum likelihood of a mechanism through the learners' unroll (paper Eq. 4, Algorithm 1)."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diml_inverse.fit_options import (
    FIT_OPTION_RULES,
    FIT_OVERHEAD_BYTES,
    LIKELIHOOD_COPIES,
    PARAMETER_COPIES,
    FitMemoryEstimate,
    OptionRule,
    check_assumed_learner,
    check_fit_options,
    check_fit_options_against_traces,
    estimate_fit_memory,
)
from diml_inverse.likelihood import log_likelihood, trace_terms
from diml_inverse.models import auto_model_name, build_model, model_skeleton
from diml_inverse.result import FitResult
from diml_inverse.windows import (
    BURN_IN_TOLERANCE,
    RoundWindows,
    check_forgetting_learner,
    default_burn_in,
    round_windows,
    window_slices,
)
from mechgym.devices import DeviceLike, resolve_device
from mechgym.errors import ConfigurationError, TraceDatasetError
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism
from mechgym.memory import check_memory as check_memory_budget
from mechgym.registration import make
from mechgym.traces import TraceDataset, load_traces

__all__ = [
    "BURN_IN_TOLERANCE",
    "FIT_OPTION_RULES",
    "FIT_OVERHEAD_BYTES",
    "LIKELIHOOD_COPIES",
    "PARAMETER_COPIES",
    "EpochCallback",
    "FitConfig",
    "FitDivergedError",
    "FitInterrupted",
    "FitMemoryEstimate",
    "LearnerParameters",
    "OptionRule",
    "RoundWindows",
    "check_fit_options",
    "default_burn_in",
    "estimate_fit_memory",
    "fit",
    "window_slices",
]

logger = logging.getLogger(__name__)

#: Called after every epoch with ``(epoch, mechanism)``; the metrics it returns join the history row.
EpochCallback = Callable[[int, Mechanism], dict[str, float]]


class FitDivergedError(RuntimeError):
    """The loss or the parameters became non-finite during a fit."""


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
                f"{result.selected_epoch} (select={result.config.get('select')!r}): save it with .result.save(path)"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.result, self.epochs_done, self.epochs))


@dataclass(frozen=True)
class FitConfig:
    """Every option of :func:`fit` (stored with the result). See :func:`fit` for their meaning."""

    env_id: str | None
    env_kwargs: dict[str, Any]
    model: str
    model_kwargs: dict[str, Any]
    learner: dict[str, Any]
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-6
    payoff_l2: float = 1e-4
    grad_clip: float | None = 1.0
    valid_fraction: float = 0.2
    patience: int | None = None
    select: str = "best_valid"
    learn_q0: bool = False
    learn_alpha: bool = False
    learn_epsilon: bool = False
    seed: int = 0
    device: str = "cpu"
    n_train_episodes: int = 0
    n_valid_episodes: int = 0
    agent_batch_size: int | None = None
    round_window: int | None = None
    burn_in: int | None = None
    compile: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


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
) -> tuple[str | None, dict[str, Any], Mechanism]:
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


def _mean_nll(model: Mechanism, actions: Tensor, learner: Learner, extras: LearnerParameters, batch_size: int) -> float:
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


def _fit_result(
    mechanism: Mechanism,
    extras: LearnerParameters,
    history: list[dict[str, float]],
    config: FitConfig,
    best: tuple[float, int, dict[str, Any]],
    *,
    select_best: bool,
    last_state: dict[str, Any] | None = None,
) -> FitResult:
    """The :class:`FitResult` of the done epochs: the best one's parameters (``select_best``) or the last one's.

    ``last_state`` (a snapshot of the last done epoch) is loaded when the live parameters are past it (an
    interrupted epoch); ``None`` when they are the last done epoch's.
    """
    best_epoch = best[1]
    if select_best:
        mechanism.load_state_dict(best[2]["mechanism"])
        extras.load_state_dict(best[2]["extras"])
        selected = best_epoch
    else:
        if last_state is not None:
            mechanism.load_state_dict(last_state["mechanism"])
            extras.load_state_dict(last_state["extras"])
        selected = int(history[-1]["epoch"])
    mechanism.eval()
    q0 = None if extras.q0 is None else extras.q0.detach().clone()
    return FitResult(
        mechanism=mechanism,
        learner=extras.fitted_learner(),
        q0=q0,
        history=history,
        config=config.to_dict(),
        selected_epoch=int(selected),
        best_epoch=int(best_epoch),
    )


def _snapshot(mechanism: Mechanism, extras: LearnerParameters) -> dict[str, Any]:
    return {"mechanism": copy.deepcopy(mechanism.state_dict()), "extras": copy.deepcopy(extras.state_dict())}


def fit(
    env_id: str | None,
    traces: TraceDataset | str | Path,
    *,
    model: str | Mechanism = "auto",
    learner: Learner | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    payoff_l2: float = 1e-4,
    grad_clip: float | None = 1.0,
    valid_fraction: float = 0.2,
    patience: int | None = None,
    select: Literal["best_valid", "last"] = "best_valid",
    learn_q0: bool = False,
    learn_alpha: bool = False,
    learn_epsilon: bool = False,
    device: DeviceLike = "auto",
    seed: int = 0,
    progress: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    callback: EpochCallback | None = None,
    agent_batch_size: int | None = None,
    round_window: int | None = None,
    burn_in: int | None = None,
    compile: bool = False,
    check_memory: bool = True,
) -> FitResult:
    """Fit a mechanism to action traces by maximum likelihood through the learners' unroll (DIML).

    Every minibatch costs one batched counterfactual evaluation of the model and a parallel exponential
    filter over rounds (:func:`diml_inverse.log_likelihood`); the loss is the negative log-likelihood per
    agent-round plus ``payoff_l2`` times the mean squared payoff of the observed joint actions.

    Args:
        env_id: The game the traces come from (``None``: the id recorded in the traces). It gives the model's
            sizes and family; the environment's ground truth is never looked at.
        traces: A :class:`~mechgym.traces.TraceDataset` or a path to a saved one.
        model: ``"auto"`` (neural joint network; anonymous count network for large anonymous games),
            ``"neural"``, ``"anonymous"``, ``"tabular"`` (Tabular MLE), ``"structured"`` (the game's own
            family, random init: StructMLE) or a :class:`~mechgym.mechanisms.Mechanism` instance (trained as a
            copy: the caller's module is never changed).
        learner: The assumed learning model; ``None`` takes the learner recorded in the traces. Passing a
            different one makes a misspecified fit (DIML-Wrong).
        epochs: Passes over the training episodes (published: 100 for E1-E3, 200 for E4).
        batch_size: Episodes per minibatch (published: 32 for E1-E3, 8 for E4); windows with ``round_window``.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        payoff_l2: Weight of the mean squared payoff penalty (the published 1e-4).
        grad_clip: Gradient-norm clip (``None`` to disable).
        valid_fraction: Share of episodes (the last ones) held out to select the epoch; 0 disables.
        patience: Stop after this many epochs without a better held-out likelihood (``None``: run all epochs).
        select: ``"best_valid"`` returns the epoch with the best held-out likelihood, ``"last"`` the last one.
        learn_q0: Learn the initial scores ``Q(1)`` per agent and action.
        learn_alpha: Learn the learning rate jointly.
        learn_epsilon: Learn the exploration rate jointly. (``beta`` is confounded with the payoff scale.)
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        seed: Seed of the model initialisation and of the minibatch order.
        progress: Show a progress bar with train/valid NLL (otherwise log each epoch at INFO level).
        model_kwargs: Extra constructor arguments of a named model family (e.g. ``{"hidden": 64}``), checked
            against its constructor; not for ``"structured"`` or an instance.
        env_kwargs: Arguments of the environment if they differ from the ones recorded in the traces.
        callback: ``callback(epoch, mechanism) -> dict`` called after each epoch (e.g. to track metrics).
        agent_batch_size: Agents per minibatch, drawn at random for each minibatch (``None``: all). The
            learner-state tensors ``[B, T, K, A]`` scale with it, so large games fit in memory; the
            counterfactual payoffs still see every agent's action.
        round_window: Score windows of this many rounds (likelihood terms) of one episode per minibatch item
            instead of whole episodes (``None``). An epoch visits every (training episode, window) pair once,
            in a seeded random order. Use it for long episodes: more Adam steps per epoch, and memory per step
            scales with ``burn_in + round_window`` instead of the episode length. Only for a
            :class:`~mechgym.learners.LogitQ` learner (its state forgets exponentially); a window that would
            cover the whole episode falls back to whole episodes. The held-out likelihood is still computed
            on whole episodes.
        burn_in: Rounds before each window that update the learner state but are not scored (needs
            ``round_window``). ``None``: the smallest ``b`` with ``(1 - alpha)^b <= 1e-7`` (re-computed each
            epoch when ``learn_alpha``; recorded in the history as ``burn_in``), which makes the windowed
            likelihood equal to the whole-episode one to float32 precision. A smaller burn-in is cheaper but
            approximate.
        compile: Run each minibatch's likelihood through ``torch.compile`` (``dynamic=False``). Measured on the
            CPU (docs/benchmarks.md): a compiled step is 1.5-2.6x faster, but compiling costs 7-36 s, plus
            more for each new minibatch shape. The published fits and a 1,000-agent fit with 100-agent
            minibatches came out slower overall, so it is off by default. Needs a working C++ compiler on
            the CPU.
        check_memory: Before building the model, estimate the memory the fit holds at once
            (:func:`estimate_fit_memory`) and refuse it if it exceeds what the device has available.

    Every option is checked before the traces are read (:func:`check_fit_options`), ``model_kwargs`` against
    the family's constructor when the model is sized, before anything is allocated. A
    :class:`~mechgym.mechanisms.Mechanism` instance passed as ``model`` is copied before training: the
    caller's module (and any earlier result) is never changed.

    Returns:
        A :class:`FitResult`.

    Raises:
        TraceDatasetError: traces that do not match the environment.
        ConfigurationError: bad options (naming the option: type, range, unknown model or ``model_kwargs`` key,
            unsupported device, ...).
        MemoryBudgetError: the estimated memory does not fit the device (unless ``check_memory=False``).
        FitDivergedError: the loss or parameters became non-finite (lower ``lr`` or raise ``payoff_l2``).
        FitInterrupted: Ctrl-C during training; its ``result`` holds the fit of the epochs done so far.
    """
    options = dict(locals())  # first statement: exactly the arguments
    check_fit_options(**{name: value for name, value in options.items() if name != "traces"})
    traces = _resolve_traces(traces, env_id)
    env_id, resolved_env_kwargs, truth_like = _resolve_game(env_id, traces, env_kwargs)
    check_fit_options_against_traces(valid_fraction, traces.n_episodes, traces.n_rounds)
    assumed = learner if learner is not None else traces.learner()
    assumed = check_assumed_learner(
        assumed, traces, learn_q0=learn_q0, learn_alpha=learn_alpha, learn_epsilon=learn_epsilon
    )
    if round_window is not None:
        check_forgetting_learner(assumed)
    target = resolve_device(device)
    init_seed, order_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    model_name = model if isinstance(model, str) else type(model).__name__
    if model_name == "auto":
        model_name = auto_model_name(truth_like)
    n_valid = 0 if valid_fraction == 0 else max(1, round(valid_fraction * traces.n_episodes))
    n_valid = min(n_valid, traces.n_episodes - 1)
    n_agents = truth_like.n_agents
    if check_memory:
        skeleton = model_skeleton(model, truth_like, model_kwargs=model_kwargs)  # nothing allocated
        window_rounds = None
        if round_window is not None:  # a learned alpha may lengthen the default burn-in up to the episode
            longest = burn_in if burn_in is not None else (traces.n_rounds if learn_alpha else None)
            window_burn_in = longest if longest is not None else default_burn_in(assumed.params()["alpha"])
            window_rounds = window_burn_in + round_window + 1
        estimate = estimate_fit_memory(
            skeleton,
            n_train_episodes=traces.n_episodes - n_valid,
            n_valid_episodes=n_valid,
            n_rounds=traces.n_rounds,
            batch_size=batch_size,
            agent_batch_size=agent_batch_size,
            window_rounds=window_rounds,
            n_learner_parameters=(n_agents * truth_like.n_actions if learn_q0 else 0) + learn_alpha + learn_epsilon,
        )
        check_memory_budget(estimate.total_bytes, estimate.describe(model_name), device=target, option="check_memory")
    if isinstance(model, Mechanism):
        model = copy.deepcopy(model)  # trained in place below: never the caller's module
    mechanism = build_model(model, truth_like, seed=init_seed, model_kwargs=model_kwargs).to(target)
    if any(not torch.isfinite(p).all() for p in mechanism.parameters()):
        raise ConfigurationError("the model's initial parameters contain NaN or infinite values")
    extras = LearnerParameters(
        assumed, truth_like.n_agents, truth_like.n_actions, q0=learn_q0, alpha=learn_alpha, epsilon=learn_epsilon
    ).to(target)

    actions = traces.actions_tensor(target)
    train, valid = actions[: traces.n_episodes - n_valid], actions[traces.n_episodes - n_valid :]
    config = FitConfig(
        env_id=env_id,
        env_kwargs=resolved_env_kwargs,
        model=model_name,
        model_kwargs=dict(model_kwargs or {}),
        learner=assumed.to_dict(),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        payoff_l2=payoff_l2,
        grad_clip=grad_clip,
        valid_fraction=valid_fraction,
        patience=patience,
        select=select,
        learn_q0=learn_q0,
        learn_alpha=learn_alpha,
        learn_epsilon=learn_epsilon,
        seed=seed,
        device=str(target),
        n_train_episodes=int(train.shape[0]),
        n_valid_episodes=int(valid.shape[0]),
        agent_batch_size=agent_batch_size,
        round_window=round_window,
        burn_in=burn_in,
        compile=compile,
    )
    parameters = [p for p in [*mechanism.parameters(), *extras.parameters()] if p.requires_grad]
    if not parameters:
        raise ConfigurationError("the model has no trainable parameters (was it frozen?)")
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(order_seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    since_best = 0
    windows: RoundWindows | None = None  # None: whole episodes
    windows_burn_in: int | None = None
    select_best = select == "best_valid" and bool(valid.shape[0])
    # what an interrupt keeps: (epochs done, best, last done epoch's snapshot), replaced in one assignment
    done: tuple[int, tuple[float, int, dict[str, Any]] | None, dict[str, Any] | None] = (0, None, None)

    def minibatch_sums(index: Tensor, agents: Tensor | None) -> tuple[Tensor, Tensor]:
        """Sums of the log-likelihood terms and of the squared realised payoffs of one minibatch."""
        alpha, epsilon = extras.alpha(), extras.epsilon()
        if windows is None:
            log_probs, realised = trace_terms(
                mechanism,
                train[index],
                extras.learner,
                extras.q0,
                alpha=alpha,
                epsilon=epsilon,
                agents=agents,
                validate=False,
            )
            return log_probs.sum(), realised.pow(2).sum()
        log_probs, realised, scored = windows.terms(
            mechanism, train, extras.learner, index, extras.q0, alpha=alpha, epsilon=epsilon, agents=agents
        )
        return torch.where(scored, log_probs, 0.0).sum(), torch.where(scored, realised, 0.0).pow(2).sum()

    step_sums: Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]] | None = None
    bar = tqdm(range(1, epochs + 1), desc=f"fit {env_id}", unit="epoch", disable=not progress)
    try:
        for epoch in bar:
            started = time.perf_counter()
            mechanism.train()
            total_on_device, terms = torch.zeros((), device=target), 0  # summed on the device: no sync per step
            if round_window is not None:
                epoch_burn_in = burn_in
                if epoch_burn_in is None:  # one host sync per epoch for a learned alpha
                    alpha = extras.alpha()
                    epoch_burn_in = default_burn_in(
                        assumed.params()["alpha"] if alpha is None else float(alpha.detach())
                    )
                if epoch_burn_in != windows_burn_in:
                    windows_burn_in = epoch_burn_in
                    windows = round_windows(traces.n_rounds, round_window, epoch_burn_in, target)
            n_items = train.shape[0] * (1 if windows is None else windows.n_windows)
            for index in torch.randperm(n_items, generator=generator).split(batch_size):
                agents = None
                if agent_batch_size is not None and agent_batch_size < n_agents:
                    agents = torch.randperm(n_agents, generator=generator)[:agent_batch_size].sort().values.to(target)
                n_agent_terms = n_agents if agents is None else int(agents.numel())
                if windows is None:
                    n_terms = int(index.numel()) * (traces.n_rounds - 1) * n_agent_terms
                else:
                    n_terms = int(windows.n_scored[index % windows.n_windows].sum()) * n_agent_terms  # host: no sync
                if step_sums is None:  # the first step: compile now, so that a failure is reported as such
                    step_sums = _first_call_checked(minibatch_sums) if compile else minibatch_sums
                log_prob_sum, squared_payoff_sum = step_sums(index.to(target), agents)
                nll = -log_prob_sum / n_terms
                # the published penalty: mean squared payoff of the observed joint actions (rounds 1..T-1), or of
                # the scored terms of round windows
                loss = nll + payoff_l2 * (squared_payoff_sum / n_terms) if payoff_l2 else nll
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(parameters, grad_clip)
                optimizer.step()
                total_on_device += nll.detach() * n_terms
                terms += n_terms
            total = float(total_on_device)
            if not math.isfinite(total) or any(not torch.isfinite(p).all() for p in parameters):
                finiteness = "finite" if all(torch.isfinite(p).all() for p in parameters) else "not finite"
                raise FitDivergedError(
                    f"the fit diverged at epoch {epoch}: the training loss is {total} and the parameters are "
                    f"{finiteness}. Lower lr (now {lr}), raise payoff_l2 (now {payoff_l2}) or enable grad_clip "
                    f"(now {grad_clip})."
                )
            mechanism.eval()
            row: dict[str, float] = {"epoch": epoch, "train_nll": total / terms}
            if windows_burn_in is not None:
                row["burn_in"] = windows_burn_in
            if valid.shape[0]:
                row["valid_nll"] = _mean_nll(mechanism, valid, extras.learner, extras, batch_size)
            if callback is not None:
                with torch.no_grad():
                    row.update(callback(epoch, mechanism))
            row["seconds"] = time.perf_counter() - started
            score = row.get("valid_nll", row["train_nll"])
            improved = best is None or score < best[0]
            snapshot = _snapshot(mechanism, extras) if improved or not select_best else None
            new_best = (score, epoch, snapshot) if improved and snapshot is not None else best
            last_state = None if select_best else snapshot
            history.append(row)
            done = (len(history), new_best, last_state)  # the epoch is done
            best, since_best = new_best, 0 if improved else since_best + 1
            bar.set_postfix({k: f"{row[k]:.4f}" for k in ("train_nll", "valid_nll") if k in row})
            logger.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.5g}" for k, v in row.items() if k != "epoch"))
            if patience is not None and valid.shape[0] and since_best >= patience:
                logger.info("early stop at epoch %d: no better held-out likelihood for %d epochs", epoch, patience)
                break
    except KeyboardInterrupt as interrupt:
        bar.close()
        epochs_done, done_best, done_last = done
        result = None
        if done_best is not None:
            result = _fit_result(
                mechanism,
                extras,
                history[:epochs_done],
                config,
                done_best,
                select_best=select_best,
                last_state=done_last,
            )
        logger.warning("fit interrupted after %d of %d epochs", epochs_done, epochs)
        raise FitInterrupted(result, epochs_done, epochs) from interrupt
    bar.close()
    assert best is not None  # at least one epoch ran
    return _fit_result(mechanism, extras, history, config, best, select_best=select_best)
