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

from diml_inverse.likelihood import _trace_log_probs_for, log_likelihood, trace_terms
from diml_inverse.models import auto_model_name, build_model
from diml_inverse.result import FitResult
from mechgym.devices import DeviceLike, resolve_device
from mechgym.errors import ConfigurationError, TraceDatasetError
from mechgym.learners import Learner, LogitQ
from mechgym.mechanisms import Mechanism
from mechgym.registration import make
from mechgym.traces import TraceDataset, load_traces

logger = logging.getLogger(__name__)

#: Called after every epoch with ``(epoch, mechanism)``; the metrics it returns join the history row.
EpochCallback = Callable[[int, Mechanism], dict[str, float]]


class FitDivergedError(RuntimeError):
    """The loss or the parameters became non-finite during a fit."""


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
        params = learner.params()  # q0 / alpha / epsilon are only requested when present (_check_assumed_learner)
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


def _check_assumed_learner(
    assumed: Learner | None, traces: TraceDataset, *, learn_q0: bool, learn_alpha: bool, learn_epsilon: bool
) -> Learner:
    """The assumed learner if it has a parallel likelihood and the parameters to learn, else a clear error."""
    if assumed is None:
        sb3 = traces.metadata.extra.get("sb3")
        played_by = (
            f" (they were played by Stable-Baselines3 {str(sb3['algorithm']).upper()} agents, which have no "
            "likelihood model)"
            if isinstance(sb3, dict) and "algorithm" in sb3
            else ""
        )
        raise ConfigurationError(
            f"the traces record no learner{played_by}; pass the learning model to assume, e.g. "
            "learner=LogitQ(alpha, beta, epsilon) or learner=Hedge(eta)"
        )
    if not isinstance(assumed, Learner):
        raise ConfigurationError(
            f"learner must be a mechgym Learner (e.g. LogitQ(...), Hedge(...)) or None; got {type(assumed).__name__}"
        )
    try:
        _trace_log_probs_for(assumed)
    except ConfigurationError as error:
        raise ConfigurationError(f"fit cannot assume this learner: {error}") from None
    if not isinstance(assumed, LogitQ):
        learned = [name for name, on in (("learn_alpha", learn_alpha), ("learn_epsilon", learn_epsilon)) if on]
        if learn_q0 and "q0" not in assumed.params():
            learned.append("learn_q0")
        if learned:
            raise ConfigurationError(
                f"{' and '.join(learned)} {'is' if len(learned) == 1 else 'are'} not supported for the assumed "
                f"{type(assumed).__name__} (its parameters: {sorted(assumed.params())}; only LogitQ learns alpha "
                f"and epsilon); pass {', '.join(f'{name}=False' for name in learned)}"
            )
    return assumed


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


def _check_options(
    epochs: int,
    batch_size: int,
    lr: float,
    valid_fraction: float,
    patience: int | None,
    select: str,
    n_episodes: int,
    n_rounds: int,
) -> None:
    checks = (
        (isinstance(epochs, int) and epochs >= 1, f"epochs must be an integer >= 1; got {epochs!r}"),
        (isinstance(batch_size, int) and batch_size >= 1, f"batch_size must be an integer >= 1; got {batch_size!r}"),
        (math.isfinite(lr) and lr > 0, f"lr must be a positive number; got {lr!r}"),
        (0.0 <= valid_fraction < 1.0, f"valid_fraction must be in [0, 1); got {valid_fraction!r}"),
        (
            patience is None or (isinstance(patience, int) and patience >= 1),
            f"patience must be None or >= 1; got {patience!r}",
        ),
        (select in ("best_valid", "last"), f"select must be 'best_valid' or 'last'; got {select!r}"),
        (n_rounds >= 2, f"the traces need at least 2 rounds per episode to have a likelihood; got {n_rounds}"),
    )
    for ok, message in checks:
        if not ok:
            raise ConfigurationError(message)
    if valid_fraction > 0 and n_episodes < 2:
        raise ConfigurationError(
            f"a validation split needs at least 2 episodes; got {n_episodes}. Use valid_fraction=0"
        )


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


#: The default burn-in drops at most this share of the learner state: ``(1 - alpha)^burn_in <= BURN_IN_TOLERANCE``.
BURN_IN_TOLERANCE = 1e-7


def default_burn_in(alpha: float) -> int:
    """The smallest ``b`` with ``(1 - alpha)^b <= BURN_IN_TOLERANCE``: rounds after which logit-Q forgets its state.

    Args:
        alpha: The logit-Q learning rate (clamped to at least ``1e-12``).

    Returns:
        The burn-in ``b >= 1``.
    """
    if alpha >= 1.0:
        return 1  # 0^0 = 1, as in the filter
    log_keep = math.log1p(-max(alpha, 1e-12))
    log_tolerance = math.log(BURN_IN_TOLERANCE)
    burn_in = max(1, math.ceil(log_tolerance / log_keep))
    while burn_in > 1 and (burn_in - 1) * log_keep <= log_tolerance:  # float rounding at the boundary
        burn_in -= 1
    while burn_in * log_keep > log_tolerance:
        burn_in += 1
    return burn_in


def _check_window_options(round_window: int | None, burn_in: int | None) -> None:
    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if round_window is not None and not (is_int(round_window) and round_window >= 1):
        raise ConfigurationError(f"round_window must be None or an integer >= 1; got {round_window!r}")
    if burn_in is not None and not (is_int(burn_in) and burn_in >= 0):
        raise ConfigurationError(f"burn_in must be None or an integer >= 0; got {burn_in!r}")
    if burn_in is not None and round_window is None:
        raise ConfigurationError("burn_in only applies to round windows; pass round_window=... as well")


def _check_forgetting_learner(learner: Learner) -> None:
    """Round windows are exact only for a learner whose state forgets exponentially (logit-Q)."""
    if not isinstance(learner, LogitQ):
        raise ConfigurationError(
            f"round_window needs a learner whose state forgets exponentially (LogitQ); the assumed "
            f"{type(learner).__name__} never forgets (cumulative sums, counts or unplayed actions do not decay), "
            "so a window's state depends on the whole past. Fit whole episodes (round_window=None)"
        )


def window_slices(n_rounds: int, window: int, burn_in: int) -> list[tuple[int, int, int]]:
    """Where every round window of an episode reads its actions and which of their terms it scores.

    Likelihood term ``g`` (``0..T-2``) is ``log pi(round g+2)``, computed from the payoffs of rounds ``1..g+1``.
    Window ``k`` scores terms ``[kW, min((k+1)W, T-1))``. Every window reads ``L = burn_in + W + 1`` actions
    from ``s = max(0, min(kW - burn_in, T - L))`` (all the same length, so they batch); the slice's term ``j``
    is the episode's term ``s + j``, and at least ``burn_in`` terms precede the scored ones unless ``s = 0``.
    If ``L >= T`` there is one window: the whole episode.

    Args:
        n_rounds: Rounds ``T >= 2`` per episode.
        window: Scored terms ``W >= 1`` per window.
        burn_in: Rounds ``>= 0`` before a window that update the learner state but are not scored.

    Returns:
        ``(slice start s, first scored term within the slice, number of scored terms)`` per window.
    """
    if n_rounds < 2:
        raise ConfigurationError(f"an episode needs at least 2 rounds to have a likelihood; got {n_rounds}")
    _check_window_options(window, burn_in)
    n_terms = n_rounds - 1
    length = burn_in + window + 1
    if length >= n_rounds:
        return [(0, 0, n_terms)]
    slices = []
    for first in range(0, n_terms, window):
        start = max(0, min(first - burn_in, n_rounds - length))
        slices.append((start, first - start, min(first + window, n_terms) - first))
    return slices


@dataclass(frozen=True, eq=False)
class RoundWindows:
    """The windows of :func:`window_slices` as tensors, to score minibatches of (episode, window) items.

    Item ``i`` is window ``i % n_windows`` of episode ``i // n_windows``.

    Attributes:
        slices: :func:`window_slices`'s output.
        length: Actions ``L`` read per window.
        starts: Slice starts ``[n_windows]`` on the device.
        scored: ``[n_windows, L-1]`` on the device: whether a slice term belongs to its window.
        n_scored: Scored terms per window ``[n_windows]`` on the CPU (to count terms without a device sync).
    """

    slices: list[tuple[int, int, int]]
    length: int
    starts: Tensor
    scored: Tensor
    n_scored: Tensor

    @classmethod
    def build(cls, n_rounds: int, window: int, burn_in: int, device: torch.device | str = "cpu") -> RoundWindows:
        """The windows of episodes of ``n_rounds`` rounds (see :func:`window_slices` for the arguments)."""
        slices = window_slices(n_rounds, window, burn_in)
        length = min(burn_in + window + 1, n_rounds)
        terms = torch.arange(length - 1)
        first, count = torch.tensor([s[1] for s in slices]), torch.tensor([s[2] for s in slices])
        scored = (terms >= first[:, None]) & (terms < (first + count)[:, None])
        starts = torch.tensor([s[0] for s in slices], device=device)
        return cls(slices=slices, length=length, starts=starts, scored=scored.to(device), n_scored=count)

    @property
    def n_windows(self) -> int:
        return len(self.slices)

    def terms(
        self,
        mechanism: Mechanism,
        actions: Tensor,
        learner: Learner,
        items: Tensor,
        q0: Tensor | float | None = None,
        *,
        alpha: Tensor | float | None = None,
        epsilon: Tensor | float | None = None,
        agents: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The likelihood terms of a minibatch of windows, by :func:`~diml_inverse.likelihood.trace_terms`.

        Summed where ``scored`` over all items of all episodes, the terms are :func:`log_likelihood` of the
        whole episodes up to ``(1 - alpha)^burn_in``. A ``q0`` tensor (learned, per agent and action) only
        applies to slices that start at round 1; the others start from the learner's constant ``q0``, which
        the logit policy ignores (it is shift-invariant), so a slice's state differs from the episode's only
        by contributions decayed by ``(1 - alpha)^burn_in`` or more (the rounds before the slice, ``q0``).

        Args:
            mechanism, learner, alpha, epsilon, agents: as in :func:`~diml_inverse.likelihood.trace_terms`.
            actions: Validated actions of every episode, ``[E, T, N]`` on the mechanism's device.
            items: Item indices ``[B]`` (``episode * n_windows + window``) on the same device.
            q0: Initial scores ``Q(1)`` of the episodes: a scalar or a tensor broadcastable to ``[N, A]``;
                ``None`` for ``learner.q0``.

        Returns:
            ``(log_probs, payoffs, scored)``: the terms and realised payoffs of the slices, both
            ``[B, L-1, K]``, and the boolean mask ``[B, L-1, 1]`` of the terms each window scores.
        """
        _check_forgetting_learner(learner)
        episodes, windows = items // self.n_windows, items % self.n_windows
        starts = self.starts[windows]
        rounds = starts[:, None] + torch.arange(self.length, device=starts.device)
        batch = actions[episodes[:, None], rounds]  # [B, L, N]
        if isinstance(q0, Tensor):
            constant = float(learner.params()["q0"])
            shape = (items.shape[0], mechanism.n_agents, mechanism.n_actions)
            q0 = torch.where((starts == 0)[:, None, None], q0, constant).expand(shape)
        log_probs, payoffs = trace_terms(
            mechanism, batch, learner, q0, alpha=alpha, epsilon=epsilon, agents=agents, validate=False
        )
        return log_probs, payoffs, self.scored[windows][..., None]


def _round_windows(n_rounds: int, window: int, burn_in: int, device: torch.device) -> RoundWindows | None:
    """The windows of a fit, or ``None`` (whole episodes) when a window's slice would cover the episode."""
    if burn_in + window + 1 >= n_rounds:
        logger.info("burn_in %d + round_window %d + 1 >= %d rounds: fitting whole episodes", burn_in, window, n_rounds)
        return None
    return RoundWindows.build(n_rounds, window, burn_in, device)


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
            family, random init: StructMLE) or a :class:`~mechgym.mechanisms.Mechanism` instance.
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
        model_kwargs: Extra constructor arguments of the model family.
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

    Returns:
        A :class:`FitResult`.

    Raises:
        TraceDatasetError: traces that do not match the environment.
        ConfigurationError: bad options (unknown model, bad sizes, ...).
        FitDivergedError: the loss or parameters became non-finite (lower ``lr`` or raise ``payoff_l2``).
    """
    traces = _resolve_traces(traces, env_id)
    env_id, resolved_env_kwargs, truth_like = _resolve_game(env_id, traces, env_kwargs)
    _check_options(epochs, batch_size, lr, valid_fraction, patience, select, traces.n_episodes, traces.n_rounds)
    _check_window_options(round_window, burn_in)
    assumed = learner if learner is not None else traces.learner()
    assumed = _check_assumed_learner(
        assumed, traces, learn_q0=learn_q0, learn_alpha=learn_alpha, learn_epsilon=learn_epsilon
    )
    if round_window is not None:
        _check_forgetting_learner(assumed)
    target = resolve_device(device)
    init_seed, order_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    mechanism = build_model(model, truth_like, seed=init_seed, model_kwargs=model_kwargs).to(target)
    model_name = model if isinstance(model, str) else type(model).__name__
    if model_name == "auto":
        model_name = auto_model_name(truth_like)
    if any(not torch.isfinite(p).all() for p in mechanism.parameters()):
        raise ConfigurationError("the model's initial parameters contain NaN or infinite values")
    extras = LearnerParameters(
        assumed, truth_like.n_agents, truth_like.n_actions, q0=learn_q0, alpha=learn_alpha, epsilon=learn_epsilon
    ).to(target)

    actions = traces.actions_tensor(target)
    n_valid = 0 if valid_fraction == 0 else max(1, round(valid_fraction * traces.n_episodes))
    n_valid = min(n_valid, traces.n_episodes - 1)
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
    n_agents = truth_like.n_agents
    if agent_batch_size is not None and (
        isinstance(agent_batch_size, bool) or not isinstance(agent_batch_size, int) or agent_batch_size < 1
    ):
        raise ConfigurationError(f"agent_batch_size must be None or an integer >= 1; got {agent_batch_size!r}")
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
    for epoch in bar:
        started = time.perf_counter()
        mechanism.train()
        total_on_device, terms = torch.zeros((), device=target), 0  # summed on the device: no sync per step
        if round_window is not None:
            epoch_burn_in = burn_in
            if epoch_burn_in is None:  # one host sync per epoch for a learned alpha
                alpha = extras.alpha()
                epoch_burn_in = default_burn_in(assumed.params()["alpha"] if alpha is None else float(alpha.detach()))
            if epoch_burn_in != windows_burn_in:
                windows_burn_in = epoch_burn_in
                windows = _round_windows(traces.n_rounds, round_window, epoch_burn_in, target)
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
            # the published penalty: mean squared payoff of the observed joint actions (rounds 1..T-1), or of the
            # scored terms of round windows
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
                f"the fit diverged at epoch {epoch}: the training loss is {total} and the parameters are {finiteness}. "
                f"Lower lr (now {lr}), raise payoff_l2 (now {payoff_l2}) or enable grad_clip (now {grad_clip})."
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
        history.append(row)
        bar.set_postfix({k: f"{row[k]:.4f}" for k in ("train_nll", "valid_nll") if k in row})
        logger.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.5g}" for k, v in row.items() if k != "epoch"))
        score = row.get("valid_nll", row["train_nll"])
        if best is None or score < best[0]:
            state = {"mechanism": copy.deepcopy(mechanism.state_dict()), "extras": copy.deepcopy(extras.state_dict())}
            best, since_best = (score, epoch, state), 0
        else:
            since_best += 1
        if patience is not None and valid.shape[0] and since_best >= patience:
            logger.info("early stop at epoch %d: no better held-out likelihood for %d epochs", epoch, patience)
            break
    bar.close()
    assert best is not None  # at least one epoch ran
    best_epoch = best[1]
    if select == "best_valid" and valid.shape[0]:
        mechanism.load_state_dict(best[2]["mechanism"])
        extras.load_state_dict(best[2]["extras"])
        selected = best_epoch
    else:
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
