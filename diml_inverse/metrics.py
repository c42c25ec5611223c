"""Evaluation metrics of an inverse-learned mechanism (paper §6.3), vectorised and explicitly seeded.

* :func:`diff_mse` — payoff-difference error on held-out contexts (the identifiable part of a mechanism,
  Theorem 1), with :func:`zero_baseline_diff_mse`, the same error of the zero mechanism.
* :func:`cfkl_params` — KL between the joint-action distributions that the true and the fitted mechanism
  induce under a shifted learner, with :func:`cfkl_noise_floor`, the same plug-in KL between two
  independent simulations of the truth (the plug-in estimate is dominated by sampling noise).
* :func:`heldout_nll` — negative log-likelihood per agent-round on held-out traces (Eq. 5), with
  :func:`uniform_nll` = ``log A``.
* The joint-action histograms and their plug-in KL (:func:`joint_action_histogram`, :func:`empirical_kl`,
  :func:`histogram_kl`) live in :mod:`diml_inverse.histograms` and are re-exported here.
* :func:`evaluate` computes all of them (an :class:`Evaluator` reuses the truth's share across fits);
  :func:`format_metrics_table` prints rows of them as Markdown.

Randomness: every metric takes a ``seed`` and derives its own streams from it with :func:`derive_seed`
(a hash of the seed and the metric's purpose), so evaluation never consumes a training stream nor the
global torch generator, and the same seed gives the same value on the CPU and on CUDA.

Shapes: ``E`` episodes, ``T`` rounds, ``N`` agents, ``A`` actions, ``K`` sampled contexts.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from diml_inverse.histograms import (
    KL_FLOOR,
    MAX_JOINT_HISTOGRAM_SIZE,
    HistogramKind,
    empirical_kl,
    histogram_kl,
    joint_action_histogram,
    resolve_kind,
)
from mechgym.errors import ConfigurationError, InvalidActionError, TraceDatasetError
from mechgym.learners import Learner
from mechgym.mechanisms import AnonymousMechanism, Mechanism, action_counts, validate_joint_actions
from mechgym.rollout import simulate
from mechgym.traces.dataset import TraceDataset

__all__ = [
    "DEFAULT_SHIFT",
    "KL_FLOOR",
    "MAX_JOINT_HISTOGRAM_SIZE",
    "METRIC_DESCRIPTIONS",
    "DiffContexts",
    "Evaluator",
    "cfkl_noise_floor",
    "cfkl_params",
    "derive_seed",
    "diff_mse",
    "empirical_kl",
    "evaluate",
    "format_metrics_table",
    "heldout_nll",
    "histogram_kl",
    "joint_action_histogram",
    "rescaled_diff_mse",
    "sample_diff_contexts",
    "uniform_nll",
    "zero_baseline_diff_mse",
]

Traces = TraceDataset | Tensor

#: The learner shift of cfkl_params: ``alpha x 0.6, beta x 1.4, epsilon x 1.5`` (epsilon capped at 0.5).
DEFAULT_SHIFT: tuple[float, float, float] = (0.6, 1.4, 1.5)
#: Generic forward passes of diff_mse handle at most about this many joint-action entries at once.
_FORWARD_CHUNK_ELEMENTS = 1 << 22

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


# -- seeds and inputs ----------------------------------------------------------------------------
def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one use of an evaluation seed, independent across purposes.

    Hashes ``(seed, crc32(purpose))`` with NumPy's ``SeedSequence``, so ``derive_seed(0, "cfkl/truth")``
    shares no stream with a rollout or a fit that was given the raw seed 0.

    Raises:
        ConfigurationError: ``seed`` is not a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer; got {seed!r}")
    words = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())]).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)


def _check_same_game(truth: Mechanism, estimate: Mechanism) -> None:
    if (truth.n_agents, truth.n_actions) != (estimate.n_agents, estimate.n_actions):
        raise ConfigurationError(
            f"the estimate plays a different game from the truth: estimate {type(estimate).__name__} has "
            f"n_agents={estimate.n_agents}, n_actions={estimate.n_actions} but truth {type(truth).__name__} has "
            f"n_agents={truth.n_agents}, n_actions={truth.n_actions}; build the model for the truth's game"
        )


def _trace_actions(traces: Traces, n_agents: int, n_actions: int) -> Tensor:
    """The actions of a dataset or an action tensor as a validated LongTensor ``[E, T, N]``."""
    if isinstance(traces, TraceDataset):
        if (traces.n_agents, traces.n_actions) != (n_agents, n_actions):
            raise TraceDatasetError(
                f"the traces have n_agents={traces.n_agents}, n_actions={traces.n_actions} but the mechanism has "
                f"n_agents={n_agents}, n_actions={n_actions}; evaluate on traces of the same game"
            )
        return traces.actions_tensor()
    if not isinstance(traces, Tensor) or traces.dim() != 3:
        shape = tuple(traces.shape) if isinstance(traces, Tensor) else type(traces).__name__
        raise InvalidActionError(
            f"traces must be a TraceDataset or an integer tensor [E, T, N] = [episodes, rounds, {n_agents}]; got "
            f"{shape}. Add an episode axis with actions[None] for a single episode."
        )
    validate_joint_actions(traces, n_agents, n_actions, where="the evaluation traces")
    return traces.long()


def _no_grad_float(value: Tensor) -> float:
    return float(value.detach().double().cpu())


# -- diff_mse ------------------------------------------------------------------------------------
class DiffContexts(NamedTuple):
    """The ``K`` contexts of :func:`diff_mse`: agent ``i`` at round ``t`` of episode ``e``, two actions.

    Attributes:
        joint: Observed joint actions ``a(e, t)``, LongTensor ``[K, N]``.
        episode: Episode index ``e``, ``[K]``.
        round: Round index ``t``, ``[K]``.
        agent: Deviating agent ``i``, ``[K]``.
        deviations: The two actions ``(a, a')`` of agent ``i``, ``[K, 2]`` (independent, may be equal).
    """

    joint: Tensor
    episode: Tensor
    round: Tensor
    agent: Tensor
    deviations: Tensor


def sample_diff_contexts(
    traces: Traces, n_agents: int, n_actions: int, n_samples: int = 20_000, seed: int = 0
) -> DiffContexts:
    """Draw :func:`diff_mse`'s contexts: ``K = min(n_samples, E*T*N)`` (episode, round, agent) triples.

    The triples are drawn uniformly *without* replacement (so with ``n_samples >= E*T*N`` every context is
    used exactly once), the two actions of each uniformly and independently from ``[0, A)``. The draws come
    from a CPU ``torch.Generator`` seeded with ``derive_seed(seed, "diff_mse")``, so they are the same for
    every device and every mechanism.

    Args:
        traces: Held-out traces, a :class:`TraceDataset` or a LongTensor ``[E, T, N]``.
        n_agents: ``N`` of the game.
        n_actions: ``A`` of the game.
        n_samples: Number of contexts wanted.
        seed: Evaluation seed.

    Returns:
        The contexts, on the traces' device (the CPU for a dataset).

    Raises:
        ConfigurationError: ``n_samples < 1`` or a bad seed.
        InvalidActionError, TraceDatasetError: traces of another game or malformed traces.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigurationError(f"n_samples must be an integer >= 1; got {n_samples!r}")
    actions = _trace_actions(traces, n_agents, n_actions)
    n_episodes, n_rounds, _ = actions.shape
    n_contexts = n_episodes * n_rounds * n_agents
    generator = torch.Generator().manual_seed(derive_seed(seed, "diff_mse"))
    flat = torch.randperm(n_contexts, generator=generator)[: min(n_samples, n_contexts)]
    deviations = torch.randint(0, n_actions, (flat.numel(), 2), generator=generator)
    flat, deviations = flat.to(actions.device), deviations.to(actions.device)
    rows, agent = flat // n_agents, flat % n_agents
    return DiffContexts(
        joint=actions.reshape(-1, n_agents)[rows],
        episode=rows // n_rounds,
        round=rows % n_rounds,
        agent=agent,
        deviations=deviations,
    )


def _use_table(mechanism: Mechanism, n_rows: int) -> bool:
    """Whether reading ``n_rows`` payoffs from the payoff table is cheaper than forward passes."""
    n_joint = mechanism.n_joint_actions
    return n_joint <= mechanism.max_table_size and (mechanism.frozen or n_joint <= n_rows)


@torch.no_grad()
def _payoff_differences(mechanism: Mechanism, contexts: DiffContexts) -> Tensor:
    """``u_i(a, a_-i) - u_i(a', a_-i)`` for every context, ``[K]``, on the mechanism's device.

    Small games gather from the payoff table; anonymous games call ``payoff_from_counts`` on the others'
    counts (two evaluations per context instead of ``2 N``); other games run one batched forward pass over
    the deviated joint actions ``[K, 2, N]`` (in chunks of bounded size) and read agent ``i``'s entry.
    """
    n, a = mechanism.n_agents, mechanism.n_actions
    device = mechanism._device()
    joint, agent, deviations = (x.to(device) for x in (contexts.joint, contexts.agent, contexts.deviations))
    k = joint.shape[0]
    own = joint.gather(-1, agent[:, None])  # [K, 1]
    if _use_table(mechanism, 2 * k):
        strides = a ** torch.arange(n - 1, -1, -1, device=device)
        index = (joint * strides).sum(-1, keepdim=True) + (deviations - own) * strides[agent][:, None]  # [K, 2]
        payoffs = mechanism.payoff_table()[index, agent[:, None]]
    elif isinstance(mechanism, AnonymousMechanism):
        dtype = mechanism._dtype()
        others = action_counts(joint, a, dtype) - torch.nn.functional.one_hot(own[:, 0], a).to(dtype)  # [K, A]
        payoffs = mechanism.payoff_from_counts(deviations, others[:, None, :].expand(k, 2, a))
    else:
        deviated = joint[:, None, :].repeat(1, 2, 1)  # [K, 2, N]
        deviated.scatter_(-1, agent[:, None, None].expand(k, 2, 1), deviations[..., None])
        chunk = max(1, _FORWARD_CHUNK_ELEMENTS // (2 * n))
        pieces = [
            mechanism(deviated[s : s + chunk]).gather(-1, agent[s : s + chunk, None, None].expand(-1, 2, 1))
            for s in range(0, k, chunk)
        ]
        payoffs = torch.cat(pieces).squeeze(-1)
    return payoffs[:, 0] - payoffs[:, 1]


def diff_mse(truth: Mechanism, estimate: Mechanism, traces: Traces, n_samples: int = 20_000, seed: int = 0) -> float:
    """Payoff-difference error (paper §6.3), the identifiable part of a mechanism (Theorem 1)::

        E_(e,t,i) E_(a,a' ~ U(A)) [ ((u_i(a, a_-i) - u_i(a', a_-i)) - (û_i(a, a_-i) - û_i(a', a_-i)))^2 ]

    with ``a_-i`` the others' actions at round ``t`` of held-out episode ``e``. The contexts are drawn by
    :func:`sample_diff_contexts` (``K = min(n_samples, E*T*N)``, without replacement); each mechanism
    evaluates all of them in one vectorised call on its own device. Invariant to adding any ``c_i(a_-i)``
    to either mechanism's payoffs.

    Args:
        truth: The true mechanism ``M*``.
        estimate: The fitted mechanism ``M̂`` (may live on another device).
        traces: Held-out traces, a :class:`TraceDataset` or a LongTensor ``[E, T, N]``.
        n_samples: Contexts to average over (the reference: 20,000 for E1-E3, 50,000 for E4).
        seed: Evaluation seed (see :func:`derive_seed`); the same seed gives the same contexts.

    Returns:
        The mean squared error (a float, computed in float64 from the float payoff differences).

    Raises:
        ConfigurationError: the two mechanisms differ in ``N`` or ``A``, or bad ``n_samples``/``seed``.
        InvalidActionError, TraceDatasetError: traces of another game or malformed traces.
    """
    _check_same_game(truth, estimate)
    contexts = sample_diff_contexts(traces, truth.n_agents, truth.n_actions, n_samples, seed)
    reference = _payoff_differences(truth, contexts)
    fitted = _payoff_differences(estimate, contexts).to(reference.device)
    return _no_grad_float(((reference.double() - fitted.double()) ** 2).mean())


def rescaled_diff_mse(
    truth: Mechanism, estimate: Mechanism, traces: Traces, n_samples: int = 20_000, seed: int = 0
) -> tuple[float, float]:
    """The estimate's payoff-difference scale and its :func:`diff_mse` after the best rescaling by it.

    The scale is ``c* = max(0, <d, d̂> / <d̂, d̂>)`` over :func:`diff_mse`'s contexts (``d`` true, ``d̂`` fitted
    differences), the error ``E[(d - c* d̂)^2]``. A logit learner's inverse temperature ``beta`` and the
    payoff scale are confounded (Remark 1), so a fit that assumes the wrong ``beta`` (or a learner of
    another kind) can recover the *shape* of the incentives but not their units: this error measures the
    shape alone. It is at most both :func:`diff_mse` (``c = 1``) and the zero baseline (``c = 0``).

    Returns:
        ``(c*, rescaled error)``; ``c* = 0`` when the estimate's differences are all zero.
    """
    _check_same_game(truth, estimate)
    contexts = sample_diff_contexts(traces, truth.n_agents, truth.n_actions, n_samples, seed)
    reference = _payoff_differences(truth, contexts).double()
    fitted = _payoff_differences(estimate, contexts).to(reference.device).double()
    scale = _best_scale(reference, fitted)
    return scale, _no_grad_float(((reference - scale * fitted) ** 2).mean())


def _best_scale(reference: Tensor, fitted: Tensor) -> float:
    """``max(0, <reference, fitted> / <fitted, fitted>)`` (0 for an all-zero ``fitted``)."""
    norm = float((fitted * fitted).sum())
    return max(0.0, float((reference * fitted).sum()) / norm) if norm > 0 else 0.0


def zero_baseline_diff_mse(truth: Mechanism, traces: Traces, n_samples: int = 20_000, seed: int = 0) -> float:
    """:func:`diff_mse` of the zero mechanism, ``E[(u_i(a, a_-i) - u_i(a', a_-i))^2]``, on the same contexts.

    With the same arguments it equals ``diff_mse(truth, zero_mechanism, ...)`` exactly; report it next to
    every diff_mse (behaviour is near-uniform, so a small diff_mse alone says little).
    """
    contexts = sample_diff_contexts(traces, truth.n_agents, truth.n_actions, n_samples, seed)
    return _no_grad_float((_payoff_differences(truth, contexts).double() ** 2).mean())


# -- counterfactual KL under a learner shift -----------------------------------------------------
def _shifted_learner(learner: Learner, shift: tuple[float, float, float] | None) -> Learner:
    if shift is None:
        return learner
    shifted = getattr(learner, "shifted", None)
    if not callable(shifted):
        raise ConfigurationError(
            f"cfkl_params shifts the learner with learner.shifted(*shift), which {type(learner).__name__} lacks; "
            "pass a LogitQ learner, or shift=None and an already shifted learner"
        )
    result: Learner = shifted(*shift)
    return result


def _simulated_actions(
    mechanism: Mechanism, learner: Learner, n_episodes: int, n_rounds: int, seed: int, purpose: str
) -> Tensor:
    """Joint actions ``[E*T, N]`` of a fresh simulation from the learner's initial state."""
    actions, _ = simulate(mechanism, learner, n_episodes, n_rounds, derive_seed(seed, purpose))
    return actions.reshape(-1, mechanism.n_agents)


def cfkl_params(
    truth: Mechanism,
    estimate: Mechanism,
    learner: Learner,
    n_episodes: int = 300,
    n_rounds: int = 50,
    seed: int = 0,
    *,
    shift: tuple[float, float, float] | None = DEFAULT_SHIFT,
    kind: HistogramKind = "auto",
    floor: float = KL_FLOOR,
) -> float:
    """Counterfactual validity under a learner shift (paper §6.3)::

        KL( p_{M*}^{(alpha', beta', epsilon')} || p_{M̂}^{(alpha', beta', epsilon')} )

    Simulates ``n_episodes x n_rounds`` of fresh play from the learner's initial scores ``Q0`` under
    ``learner.shifted(*shift)`` (LogitQ: ``alpha x 0.6, beta x 1.4, epsilon x 1.5`` capped at 0.5) with the
    true and with the fitted mechanism, each on its own device, pools every joint action over episodes and
    time, and returns the plug-in KL of the two histograms (:func:`empirical_kl`, 1e-12 floor).

    The truth's simulation uses the seed ``derive_seed(seed, "cfkl/truth")``, the fit's
    ``derive_seed(seed, "cfkl/estimate")``: independent streams, so the value includes sampling noise.
    :func:`cfkl_noise_floor` measures that noise with the same two seeds, hence
    ``cfkl_params(truth, truth, ...) == cfkl_noise_floor(truth, ...)`` (not 0); always report both.

    Args:
        truth: The true mechanism.
        estimate: The fitted mechanism (same ``N`` and ``A``).
        learner: The generating learner before the shift (the true one, also for a misspecified fit).
        n_episodes: Simulated episodes per mechanism (reference: 300 for E1-E3, 120 for E4).
        n_rounds: Rounds per episode (reference: 50 for E1-E3, 30 for E4).
        seed: Evaluation seed.
        shift: Factors ``(alpha, beta, epsilon)`` for ``learner.shifted``; ``None`` simulates ``learner``
            unchanged.
        kind: Histogram binning (see :func:`joint_action_histogram`).
        floor: Lower bound on the fit's probabilities inside the logarithm.

    Raises:
        ConfigurationError: different games, a learner without ``shifted`` (with a shift), bad sizes or seed.
    """
    _check_same_game(truth, estimate)
    shifted = _shifted_learner(learner, shift)
    p = _simulated_actions(truth, shifted, n_episodes, n_rounds, seed, "cfkl/truth")
    q = _simulated_actions(estimate, shifted, n_episodes, n_rounds, seed, "cfkl/estimate")
    return empirical_kl(p, q, truth.n_actions, kind, floor)


def cfkl_noise_floor(
    truth: Mechanism,
    learner: Learner,
    n_episodes: int = 300,
    n_rounds: int = 50,
    seed: int = 0,
    *,
    shift: tuple[float, float, float] | None = DEFAULT_SHIFT,
    kind: HistogramKind = "auto",
    floor: float = KL_FLOOR,
) -> float:
    """:func:`cfkl_params` of the truth against itself: the plug-in KL's sampling noise at this size.

    Two simulations of the truth with the seeds of :func:`cfkl_params` (``"cfkl/truth"`` and
    ``"cfkl/estimate"``). The reference measured 0.014 (E1), 0.045 (E2), 0.027 (E3) at 300 x 50 and 0.10
    (E4, 40 agents) at 120 x 30: a fit cannot be told apart from the truth below this level.
    """
    return cfkl_params(truth, truth, learner, n_episodes, n_rounds, seed, shift=shift, kind=kind, floor=floor)


# -- held-out likelihood -------------------------------------------------------------------------
def heldout_nll(mechanism: Mechanism, traces: Traces, learner: Learner, q0: Tensor | float | None = None) -> float:
    """Negative log-likelihood per agent-round of held-out traces (Eq. 5, rounds ``t >= 2``).

    Args:
        mechanism: The mechanism whose counterfactual payoffs drive the learners.
        traces: Held-out traces, a :class:`TraceDataset` or a LongTensor ``[E, T, N]`` with ``T >= 2``.
        learner: The learning rule assumed for every agent.
        q0: Initial scores (see :func:`~diml_inverse.likelihood.log_likelihood`); ``None`` for ``learner.q0``.

    Returns:
        ``-mean log pi_i(t)(a_i(t))`` over episodes, rounds ``t >= 2`` and agents; compare with
        :func:`uniform_nll`.
    """
    from diml_inverse.likelihood import log_likelihood

    actions = _trace_actions(traces, mechanism.n_agents, mechanism.n_actions)
    with torch.no_grad():
        return -_no_grad_float(log_likelihood(mechanism, actions, learner, q0, reduction="mean"))


def uniform_nll(n_actions: int) -> float:
    """``log A``: the NLL per agent-round of uniformly random play."""
    if isinstance(n_actions, bool) or not isinstance(n_actions, int) or n_actions < 1:
        raise ConfigurationError(f"n_actions must be an integer >= 1; got {n_actions!r}")
    return math.log(n_actions)


# -- everything at once --------------------------------------------------------------------------
class Evaluator:
    """All metrics of fits against one truth (see :data:`METRIC_DESCRIPTIONS`), truth-only work done once.

    The constructor computes what depends on the truth alone: the diff_mse contexts and the truth's
    payoff differences on them, the truth's ``"cfkl/truth"`` simulation, the noise floor and the truth's
    held-out NLL. Each call then costs one payoff-difference pass, one simulation and one likelihood of
    the estimate, so per-epoch evaluation is cheap. Values equal those of :func:`diff_mse`,
    :func:`zero_baseline_diff_mse`, :func:`cfkl_params`, :func:`cfkl_noise_floor` and :func:`heldout_nll`
    with the same arguments.

    Args:
        truth: The true mechanism (frozen for speed; evaluated under ``torch.no_grad``).
        test_traces: Held-out traces (never the training episodes).
        learner: The generating learner: shifted for the counterfactual simulations and used for the
            truth's held-out NLL.
        diff_samples: Contexts of diff_mse.
        cf_episodes: Simulated episodes per mechanism of cfkl_params.
        cf_rounds: Rounds per simulated episode.
        seed: Evaluation seed.
        shift: Learner shift of cfkl_params (``None``: simulate ``learner`` itself).
        kind: Histogram binning of cfkl_params.

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
        seed: int = 0,
        shift: tuple[float, float, float] | None = DEFAULT_SHIFT,
        kind: HistogramKind = "auto",
    ) -> None:
        self.truth, self.learner, self.kind = truth, learner, kind
        self.test_actions = _trace_actions(test_traces, truth.n_agents, truth.n_actions)
        self.cf_episodes, self.cf_rounds, self.seed = cf_episodes, cf_rounds, seed
        self.shifted_learner = _shifted_learner(learner, shift)
        resolve_kind(kind, truth.n_agents, truth.n_actions)
        self.contexts = sample_diff_contexts(self.test_actions, truth.n_agents, truth.n_actions, diff_samples, seed)
        self.truth_differences = _payoff_differences(truth, self.contexts).double()
        self.truth_play = self._simulate(truth, "cfkl/truth")
        truth_replay = self._simulate(truth, "cfkl/estimate")
        self.truth_metrics = {
            "zero_diff_mse": _no_grad_float((self.truth_differences**2).mean()),
            "cfkl_noise_floor": empirical_kl(self.truth_play, truth_replay, truth.n_actions, kind),
            "truth_heldout_nll": heldout_nll(truth, self.test_actions, learner),
            "uniform_nll": uniform_nll(truth.n_actions),
        }

    def _simulate(self, mechanism: Mechanism, purpose: str) -> Tensor:
        return _simulated_actions(mechanism, self.shifted_learner, self.cf_episodes, self.cf_rounds, self.seed, purpose)

    def __call__(self, estimate: Mechanism, model_learner: Learner | None = None) -> dict[str, float]:
        """Metrics of ``estimate``; ``model_learner`` (default: the true learner) is the learner the fit
        assumed, used for its held-out NLL only (e.g. DIML-Wrong's ``beta x 0.6``).

        Returns:
            ``{"diff_mse", "zero_diff_mse", "cfkl_params", "cfkl_noise_floor", "heldout_nll",
            "truth_heldout_nll", "uniform_nll", "rescaled_diff_mse", "diff_scale"}`` as floats, in that order.
        """
        _check_same_game(self.truth, estimate)
        fitted = _payoff_differences(estimate, self.contexts).to(self.truth_differences.device).double()
        fit_play = self._simulate(estimate, "cfkl/estimate")
        scale = _best_scale(self.truth_differences, fitted)
        metrics = {
            "diff_mse": _no_grad_float(((self.truth_differences - fitted) ** 2).mean()),
            "rescaled_diff_mse": _no_grad_float(((self.truth_differences - scale * fitted) ** 2).mean()),
            "diff_scale": scale,
            "cfkl_params": empirical_kl(self.truth_play, fit_play, self.truth.n_actions, self.kind),
            "heldout_nll": heldout_nll(estimate, self.test_actions, model_learner or self.learner),
            **self.truth_metrics,
        }
        return {name: metrics[name] for name in METRIC_DESCRIPTIONS}


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

    Returns:
        ``{"diff_mse", "zero_diff_mse", "cfkl_params", "cfkl_noise_floor", "heldout_nll",
        "truth_heldout_nll", "uniform_nll"}`` as floats, in that order.
    """
    evaluator = Evaluator(
        truth,
        test_traces,
        learner,
        diff_samples=diff_samples,
        cf_episodes=cf_episodes,
        cf_rounds=cf_rounds,
        seed=seed,
        shift=shift,
        kind=kind,
    )
    return evaluator(estimate, model_learner)


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        text = format(float(value), float_format)
    elif isinstance(value, Tensor) and value.numel() == 1:
        text = format(value.item(), float_format) if value.is_floating_point() else str(value.item())
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def format_metrics_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, float_format: str = ".4g"
) -> str:
    """A Markdown table of metric rows (e.g. ``{"model": "DIML", **evaluate(...)}`` per fit).

    Args:
        rows: One mapping per table row.
        columns: Column order; ``None`` for every key in order of first appearance.
        float_format: Format spec of floats (``".4g"``: four significant digits).

    Returns:
        The table, one line per row after the header; numeric columns are right-aligned, missing
        entries are empty, ``|`` in text is escaped.

    Raises:
        ConfigurationError: no rows or no columns.

    Example:
        >>> print(format_metrics_table([{"model": "DIML", "diff_mse": 0.0099}]))
        | model | diff_mse |
        | ----- | -------: |
        | DIML  |   0.0099 |
    """
    if not rows:
        raise ConfigurationError("format_metrics_table needs at least one row")
    names = list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    if not names:
        raise ConfigurationError("format_metrics_table needs at least one column")
    cells = [[_cell(row.get(name), float_format) for name in names] for row in rows]
    numeric = [all(_is_number(row.get(name)) for row in rows if row.get(name) is not None) for name in names]
    widths = [max(3, len(name), *(len(line[j]) for line in cells)) for j, name in enumerate(names)]

    def line(parts: Sequence[str]) -> str:
        return "| " + " | ".join(parts) + " |"

    header = line([name.ljust(width) for name, width in zip(names, widths, strict=True)])
    rule = line([("-" * (w - 1) + ":") if num else "-" * w for w, num in zip(widths, numeric, strict=True)])
    body = [
        line([c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)])
        for row in cells
    ]
    return "\n".join([header, rule, *body])
