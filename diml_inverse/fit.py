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
        batch_size: Episodes per minibatch (published: 32 for E1-E3, 8 for E4).
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
    assumed = learner if learner is not None else traces.learner()
    assumed = _check_assumed_learner(
        assumed, traces, learn_q0=learn_q0, learn_alpha=learn_alpha, learn_epsilon=learn_epsilon
    )
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
    bar = tqdm(range(1, epochs + 1), desc=f"fit {env_id}", unit="epoch", disable=not progress)
    for epoch in bar:
        started = time.perf_counter()
        mechanism.train()
        total_on_device, terms = torch.zeros((), device=target), 0  # summed on the device: no sync per step
        for index in torch.randperm(train.shape[0], generator=generator).split(batch_size):
            batch = train[index.to(target)]
            agents = None
            if agent_batch_size is not None and agent_batch_size < n_agents:
                agents = torch.randperm(n_agents, generator=generator)[:agent_batch_size].sort().values.to(target)
            log_probs, realised = trace_terms(
                mechanism,
                batch,
                extras.learner,
                extras.q0,
                alpha=extras.alpha(),
                epsilon=extras.epsilon(),
                agents=agents,
                validate=False,
            )
            n_terms = log_probs.numel()
            nll = -log_probs.sum() / n_terms
            # the published penalty: mean squared payoff of the observed joint actions (rounds 1..T-1)
            loss = nll + payoff_l2 * realised.pow(2).mean() if payoff_l2 else nll
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
