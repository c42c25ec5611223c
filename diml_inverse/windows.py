"""Round windows of a fit: windows of an episode's likelihood terms, each read after a burn-in of unscored rounds.

A logit-Q learner forgets its state exponentially, so a window read ``burn_in`` rounds early scores its terms as
the whole episode would, up to ``(1 - alpha)^burn_in`` (:func:`default_burn_in`). :func:`window_slices` says
where every window reads and scores, :class:`RoundWindows` batches them, and :func:`round_windows` gives a
fit's windows (``None``: whole episodes).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diml_inverse.config import check_fit_options
from diml_inverse.dynamics import dynamics_for
from diml_inverse.likelihood import trace_terms
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism

__all__ = [
    "BURN_IN_TOLERANCE",
    "RoundWindows",
    "check_forgetting_learner",
    "default_burn_in",
    "round_windows",
    "window_slices",
]

logger = logging.getLogger(__name__)


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


def check_forgetting_learner(learner: Learner) -> None:
    """Check that round windows suit ``learner``: they are exact only for a state that forgets exponentially.

    Args:
        learner: The assumed learner.

    Raises:
        ConfigurationError: ``learner``'s state never forgets (``dynamics_for(learner).forgets`` is false: every
            built-in rule but :class:`~mechgym.learners.LogitQ`).
    """
    if not dynamics_for(learner).forgets:
        raise ConfigurationError(
            f"round_window needs a learner whose state forgets exponentially (e.g. LogitQ); the assumed "
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
    check_fit_options(round_window=window, burn_in=burn_in)
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

        Summed where ``scored`` over all items of all episodes, the terms are
        :func:`~diml_inverse.likelihood.log_likelihood` of the whole episodes up to ``(1 - alpha)^burn_in``. A
        ``q0`` tensor (learned, per agent and action) only applies to slices that start at round 1; the others
        start from the learner's constant ``q0``, which the logit policy ignores (it is shift-invariant), so a
        slice's state differs from the episode's only by contributions decayed by ``(1 - alpha)^burn_in`` or
        more (the rounds before the slice, ``q0``).

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
        check_forgetting_learner(learner)
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


def round_windows(n_rounds: int, window: int, burn_in: int, device: torch.device) -> RoundWindows | None:
    """The windows of a fit, or ``None`` (whole episodes) when a window's slice would cover the episode.

    Args:
        n_rounds, window, burn_in: As in :func:`window_slices`.
        device: Where the windows' tensors live (the fit's device).

    Returns:
        :meth:`RoundWindows.build`'s windows, or ``None`` when ``burn_in + window + 1 >= n_rounds``.
    """
    if burn_in + window + 1 >= n_rounds:
        logger.info("burn_in %d + round_window %d + 1 >= %d rounds: fitting whole episodes", burn_in, window, n_rounds)
        return None
    return RoundWindows.build(n_rounds, window, burn_in, device)
