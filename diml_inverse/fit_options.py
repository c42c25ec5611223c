"""The checks of a fit's options that need the traces, and the memory estimate.

The options themselves are validated where they are made (:class:`~diml_inverse.config.FitConfig`);
:func:`check_fit_options_against_traces` and :func:`check_assumed_learner` do the checks that need the traces;
:func:`estimate_fit_memory` bounds the memory a fit would hold, from sizes alone, before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

from diml_inverse.dynamics import dynamics_for
from diml_inverse.models import activation_elements
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism
from mechgym.memory import format_bytes
from mechgym.traces import TraceDataset

__all__ = [
    "FIT_OVERHEAD_BYTES",
    "LIKELIHOOD_COPIES",
    "PARAMETER_COPIES",
    "FitMemoryEstimate",
    "check_assumed_learner",
    "check_fit_options_against_traces",
    "estimate_fit_memory",
    "unrecorded_learner_note",
]


def check_fit_options_against_traces(valid_fraction: float, n_episodes: int, n_rounds: int) -> None:
    """The checks of :func:`~diml_inverse.fit.fit`'s options that need the traces' sizes.

    Args:
        valid_fraction: The ``valid_fraction`` option.
        n_episodes: Episodes ``E`` of the traces.
        n_rounds: Rounds ``T`` per episode.

    Raises:
        ConfigurationError: fewer than 2 rounds, or a validation split of fewer than 2 episodes.
    """
    if n_rounds < 2:
        raise ConfigurationError(f"the traces need at least 2 rounds per episode to have a likelihood; got {n_rounds}")
    if valid_fraction > 0 and n_episodes < 2:
        raise ConfigurationError(
            f"a validation split needs at least 2 episodes; got {n_episodes}. Use valid_fraction=0"
        )


def unrecorded_learner_note(traces: TraceDataset) -> str:
    """Who played traces that record no learner, for error messages: ``" (they were played by ...)"`` or ``""``."""
    sb3 = traces.metadata.extra.get("sb3")
    if isinstance(sb3, dict) and "algorithm" in sb3:
        return (
            f" (they were played by Stable-Baselines3 {str(sb3['algorithm']).upper()} agents, which have no "
            "likelihood model)"
        )
    return ""


def check_assumed_learner(
    assumed: Learner | None, traces: TraceDataset, *, learn_q0: bool, learn_alpha: bool, learn_epsilon: bool
) -> Learner:
    """The assumed learner of a fit, if it has a parallel likelihood and the parameters to learn.

    Args:
        assumed: The ``learner`` option, or the learner recorded in the traces (``None``: neither).
        traces: The traces (the error for a missing learner names the agents that played them, if recorded).
        learn_q0, learn_alpha, learn_epsilon: The options of :func:`~diml_inverse.fit.fit`.

    Returns:
        ``assumed``.

    Raises:
        ConfigurationError: no learner, one without a parallel likelihood (no registered
            :func:`~diml_inverse.dynamics.dynamics_for` entry), or parameters it cannot learn (not in its
            ``learnable``).
    """
    if assumed is None:
        played_by = unrecorded_learner_note(traces)
        raise ConfigurationError(
            f"the traces record no learner{played_by}; pass the learning model to assume, e.g. "
            "learner=LogitQ(alpha, beta, epsilon) or learner=Hedge(eta)"
        )
    try:
        learnable = dynamics_for(assumed).learnable
    except ConfigurationError as error:
        raise ConfigurationError(f"fit cannot assume this learner: {error}") from None
    asked = (("alpha", learn_alpha), ("epsilon", learn_epsilon), ("q0", learn_q0))
    refused = [f"learn_{name}" for name, on in asked if on and name not in learnable]
    if refused:
        raise ConfigurationError(
            f"{' and '.join(refused)} {'is' if len(refused) == 1 else 'are'} not supported for the assumed "
            f"{type(assumed).__name__} (its parameters: {sorted(assumed.params())}; a fit can learn its "
            f"{', '.join(sorted(learnable)) or 'none of q0, alpha and epsilon'}); "
            f"pass {', '.join(f'{name}=False' for name in refused)}"
        )
    return assumed


#: Copies of every parameter a fit holds at once: the weights, their gradients, Adam's two moments and its two
#: temporaries (the weight-decayed gradient, the moments' square root), and up to three epoch snapshots (the best
#: and the last done epoch's, one of them briefly twice while it is replaced).
PARAMETER_COPIES = 9
#: Float tensors of the likelihood terms' shape ``[items, terms, K, A]`` alive at once in a training step (the
#: counterfactual payoffs, the filter's input, output and chunk copies, the scores, the log-policy's terms and
#: their gradients; measured: 17) and in a held-out step (no graph is kept).
LIKELIHOOD_COPIES = {True: 20, False: 6}
#: Added to every estimate: torch's and the allocator's working memory, which small fits are dominated by.
FIT_OVERHEAD_BYTES = 64 * 2**20


@dataclass(frozen=True)
class FitMemoryEstimate:
    """A rough upper bound of the memory a fit holds at once (see :func:`estimate_fit_memory`).

    Attributes:
        n_parameters: Parameters of the model and of the learned learner quantities.
        parameter_bytes: :data:`PARAMETER_COPIES` copies of them.
        data_bytes: The traces' actions on the device (``int64 [E, T, N]``).
        step_bytes: The activations of the larger of one training minibatch and one held-out minibatch.
        minibatch: ``(items, likelihood terms per item, agents, actions)`` of a training minibatch.
    """

    n_parameters: int
    parameter_bytes: int
    data_bytes: int
    step_bytes: int
    minibatch: tuple[int, int, int, int]

    @property
    def total_bytes(self) -> int:
        """The estimate: parameters + data + activations + :data:`FIT_OVERHEAD_BYTES`."""
        return self.parameter_bytes + self.data_bytes + self.step_bytes + FIT_OVERHEAD_BYTES

    def describe(self, model_name: str) -> str:
        """What the memory is for, with the parts, for :func:`mechgym.memory.check_memory`'s message."""
        items, terms, agents, actions = self.minibatch
        return (
            f"a fit of model={model_name!r} with {self.n_parameters:,} parameters "
            f"({format_bytes(self.parameter_bytes)} for {PARAMETER_COPIES} copies: weights, gradients, Adam's moments "
            f"and temporaries, epoch snapshots) and minibatches of {items} items x {terms} terms x {agents} agents x "
            f"{actions} actions (activations: {format_bytes(self.step_bytes)})"
        )


def estimate_fit_memory(
    model: Mechanism,
    *,
    n_train_episodes: int,
    n_valid_episodes: int,
    n_rounds: int,
    batch_size: int,
    agent_batch_size: int | None = None,
    window_rounds: int | None = None,
    n_learner_parameters: int = 0,
) -> FitMemoryEstimate:
    """A rough upper bound of the memory :func:`~diml_inverse.fit.fit` holds at once, computed from sizes alone.

    * parameters: :data:`PARAMETER_COPIES` (9) x their bytes: weights, gradients, Adam's two moments and two
      temporaries, up to three epoch snapshots (the best and the last done epoch's);
    * data: the actions ``int64 [E, T, N]`` on the device;
    * activations: the larger of a training minibatch (``min(batch_size, items)`` episodes or windows of
      ``L`` rounds, ``K = agent_batch_size`` agents, with gradients) and a held-out one (``batch_size`` whole
      episodes, all ``N`` agents, no gradients): the model family's activations
      (:func:`~diml_inverse.models.activation_elements`) plus :data:`LIKELIHOOD_COPIES` (20 with gradients, 6
      without) float32 tensors ``[items, L-1, K, A]`` of the likelihood (payoffs, filter, log-policy);
    * :data:`FIT_OVERHEAD_BYTES` (64 MiB).

    Measured against the peak resident memory of 2-epoch CPU fits at eight sizes of 145-560 MB (the neural
    network's table and deviation paths, the anonymous network's rows with and without chunks, a tabular
    model on 400-round episodes, 1,000-round episodes whole and in round windows), the estimate was 1.4-2.2x the
    peak (7x for a 10 MB fit, where the overhead dominates). A custom model family's own activations are not
    counted.

    Args:
        model: The model (its tensors may live on the ``meta`` device: only sizes are read).
        n_train_episodes: Training episodes ``E_train``.
        n_valid_episodes: Held-out episodes.
        n_rounds: Rounds ``T`` per episode.
        batch_size: Episodes (or windows) per minibatch.
        agent_batch_size: Agents per training minibatch (``None``: all).
        window_rounds: Rounds ``L`` a round window reads (``burn_in + round_window + 1``), ``None`` for whole
            episodes.
        n_learner_parameters: Learned ``Q(1)``, ``alpha`` and ``epsilon`` entries.

    Returns:
        The estimate and its parts.
    """
    n_agents, n_actions = model.n_agents, model.n_actions
    parameters = list(model.parameters())
    n_parameters = sum(p.numel() for p in parameters) + n_learner_parameters
    parameter_bytes = PARAMETER_COPIES * (
        sum(p.numel() * p.element_size() for p in parameters) + 4 * n_learner_parameters
    )
    data_bytes = 8 * (n_train_episodes + n_valid_episodes) * n_rounds * n_agents
    length = n_rounds if window_rounds is None or window_rounds >= n_rounds else window_rounds
    n_windows = 1 if length == n_rounds else -(-(n_rounds - 1) // (length - 1))  # at least this many
    items = max(1, min(batch_size, n_train_episodes * n_windows))
    agents = n_agents if agent_batch_size is None else min(agent_batch_size, n_agents)

    def step_elements(n_items: int, n_terms: int, n_scored: int, grad: bool) -> int:
        rows = n_items * n_terms
        return (
            activation_elements(model, rows, n_scored, grad=grad)
            + LIKELIHOOD_COPIES[grad] * rows * n_scored * n_actions
        )

    train = step_elements(items, length - 1, agents, True)
    valid = step_elements(min(batch_size, n_valid_episodes), n_rounds - 1, n_agents, False) if n_valid_episodes else 0
    return FitMemoryEstimate(
        n_parameters=n_parameters,
        parameter_bytes=parameter_bytes,
        data_bytes=data_bytes,
        step_bytes=4 * max(train, valid),
        minibatch=(items, length - 1, agents, n_actions),
    )
