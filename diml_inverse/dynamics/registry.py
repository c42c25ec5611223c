"""The dispatch table of the parallel likelihoods: one :class:`Dynamics` entry per learning rule.

:func:`~diml_inverse.log_likelihood`, :func:`~diml_inverse.trace_terms` and :func:`~diml_inverse.fit` look the
assumed learner up with :func:`dynamics_for`. An entry holds the rule's parallel log-probabilities (a
:class:`TraceLogProbs`: a function of the learner and of an :class:`Unroll` of the traces) and declares what a
fit may learn of the rule and whether its state forgets. A third-party rule plugs in with
:func:`register_dynamics`; the built-in ones are registered by :mod:`diml_inverse.dynamics`.

Shapes: ``E`` episodes, ``T' = T - 1`` updates, ``N`` agents (or ``K`` of them), ``A`` actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Set
from dataclasses import dataclass
from typing import Literal, Protocol

from torch import Tensor

from mechgym.errors import ConfigurationError, suggest
from mechgym.learners import Learner

__all__ = [
    "DYNAMICS",
    "LEARNABLE_PARAMETERS",
    "Dynamics",
    "TraceLogProbs",
    "Unroll",
    "dynamics_for",
    "next_action_log_probs",
    "register_dynamics",
]

#: The learner quantities a fit can learn besides the mechanism (``fit``'s ``learn_q0``/``learn_alpha``/...).
LEARNABLE_PARAMETERS: frozenset[str] = frozenset({"q0", "alpha", "epsilon"})


OverrideName = Literal["q0", "alpha", "epsilon"]


@dataclass(frozen=True)
class Unroll:
    """What every rule's parallel log-probabilities read: traces unrolled over their ``T'`` updates.

    :func:`~diml_inverse.trace_terms` builds one per call and hands it, with the learner, to the rule's
    :class:`TraceLogProbs`. The overrides stand in for the learner's own values (``None`` keeps those); tensor
    overrides must stay differentiable, since ``fit`` learns through them. Shapes are checked by the rules'
    filters, where the message can name the rule.

    Example:
        >>> payoffs = mechanism.counterfactual_payoffs(actions[:, :-1])  # u(1..T'), Eq. (1)
        >>> unroll = Unroll(payoffs, actions[:, 1:], own_actions=actions[:, :-1], alpha=0.3)
        >>> logit_q_log_probs(LogitQ(), unroll)  # [E, T', N], with alpha = 0.3
    """

    payoffs: Tensor
    """Counterfactual payoffs ``u(1..T')`` (paper Eq. 1), ``[E, T', N, A]``."""
    next_actions: Tensor
    """Actions of rounds ``2..T``, ``[E, T', N]``: the ones whose log-probabilities are returned."""
    own_actions: Tensor | None = None
    """Actions of rounds ``1..T'``, ``[E, T', N]`` (the realised payoffs are ``payoffs`` read at them), or
    ``None`` where a full-information rule is called without them."""
    q0: Tensor | float | None = None
    """Initial state overriding the learner's (a scalar or broadcastable to ``[E, N, A]``), or ``None``."""
    alpha: Tensor | float | None = None
    """Learning rate overriding the learner's, or ``None``."""
    epsilon: Tensor | float | None = None
    """Exploration overriding the learner's, or ``None``."""
    chunk_size: int | None = None
    """Rounds per chunk of the rule's filter, or ``None`` for its default (rules that need no chunks ignore it)."""
    realised: Tensor | None = None
    """The realised payoffs ``[E, T', N]`` (``payoffs`` read at ``own_actions``) where the caller has them
    already (:meth:`~mechgym.mechanisms.Mechanism.counterfactual_and_realised_payoffs`), or ``None``."""

    def value(self, name: OverrideName, own: Tensor | float) -> Tensor | float:
        """The override ``name`` if one was given, else ``own`` (the learner's value, e.g. ``learner.alpha``)."""
        override: Tensor | float | None = getattr(self, name)
        return own if override is None else override

    def refuse(self, learner: Learner, *names: OverrideName) -> None:
        """Raise for overrides among ``names`` that the learner has no parameter for (``alpha`` of Hedge...).

        Raises:
            ConfigurationError: one of ``names`` is overridden (not ``None``).
        """
        given = sorted(name for name in names if getattr(self, name) is not None)
        if given:
            raise ConfigurationError(
                f"{type(learner).__name__} has no {' or '.join(given)} to override; its parameters are "
                f"{sorted(learner.params())}. Pass None (fit: learn_alpha=False, learn_epsilon=False"
                f"{', learn_q0=False' if 'q0' in given else ''})"
            )

    def played(self) -> Tensor:
        """``own_actions``, for a rule that needs them (bandit feedback).

        Raises:
            ConfigurationError: ``own_actions`` is ``None``.
        """
        if self.own_actions is None:
            raise ConfigurationError(
                "this rule learns from realised payoffs and needs own_actions (the actions of rounds 1..T', "
                "[E, T', N]); pass Unroll(..., own_actions=actions[:, :-1])"
            )
        return self.own_actions

    def realised_payoffs(self) -> Tensor:
        """``payoffs`` read at ``own_actions``: ``r(t) = u(a(t), a_-i(t))``, ``[E, T', N]``.

        Raises:
            ConfigurationError: ``own_actions`` is ``None`` (and no ``realised`` was given).
        """
        if self.realised is not None:
            return self.realised
        return self.payoffs.gather(-1, self.played().long()[..., None]).squeeze(-1)

    def log_probs_of(self, log_policy: Tensor) -> Tensor:
        """``log_policy [E, T', N, A]`` read at ``next_actions``: the ``[E, T', N]`` terms of Eq. (5)."""
        return next_action_log_probs(log_policy, self.next_actions)


class TraceLogProbs(Protocol):
    """A rule's parallel log-probabilities: ``log_probs(learner, unroll)``, ``[E, T', N]``.

    ``learner`` is the assumed learner (an instance of the class the rule is registered for, or of a subclass)
    and ``unroll`` the traces and overrides (:class:`Unroll`). A rule raises
    :class:`~mechgym.errors.ConfigurationError` for another learner and for an override it has no parameter
    for (:meth:`Unroll.refuse`).
    """

    def __call__(self, learner: Learner, unroll: Unroll, /) -> Tensor: ...


@dataclass(frozen=True)
class Dynamics:
    """A learning rule's parallel likelihood and what DIML may do with it.

    Attributes:
        learner_class: The :class:`~mechgym.learners.Learner` subclass (its subclasses share the entry).
        log_probs: The rule's parallel log-probabilities, ``log_probs(learner, unroll)`` (:class:`TraceLogProbs`).
        learnable: Which of :data:`LEARNABLE_PARAMETERS` a fit may learn jointly with the mechanism; each
            must be a field of ``learner_class`` and an override that ``log_probs`` accepts as a tensor.
        forgets: Whether the rule's state decays exponentially, so that round windows with a burn-in
            (``fit(round_window=...)``) approximate the whole-episode likelihood. Cumulative sums, counts and
            the scores of unplayed actions never decay.

    Raises:
        ConfigurationError: a ``learner_class`` that is not a Learner subclass, a ``log_probs`` that is not
            callable, or a ``learnable`` name that is unknown or not a field of the learner.
    """

    learner_class: type[Learner]
    log_probs: TraceLogProbs
    learnable: frozenset[str] = frozenset()
    forgets: bool = False

    def __post_init__(self) -> None:
        cls = self.learner_class
        if not (isinstance(cls, type) and issubclass(cls, Learner)):
            raise ConfigurationError(f"learner_class must be a mechgym Learner subclass; got {cls!r}")
        if not callable(self.log_probs):
            raise ConfigurationError(
                f"log_probs of {cls.__name__} must be a function (see diml_inverse.dynamics.TraceLogProbs); "
                f"got {type(self.log_probs).__name__}"
            )
        if not isinstance(self.learnable, frozenset) or not all(isinstance(name, str) for name in self.learnable):
            raise ConfigurationError(
                f"learnable must be a frozenset of parameter names, e.g. frozenset({{'q0'}}); got {self.learnable!r}"
            )
        unknown = sorted(self.learnable - LEARNABLE_PARAMETERS)
        if unknown:
            what = f"learnable parameter of {cls.__name__}"
            raise ConfigurationError(suggest(unknown[0], LEARNABLE_PARAMETERS, what))
        fields: set[str] = {field.name for field in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        missing = sorted(self.learnable - fields)
        if missing:
            raise ConfigurationError(
                f"{cls.__name__} declares {missing[0]!r} learnable but has no such field (its fields: "
                f"{sorted(fields)}); a fit starts the learned value from the learner's own"
            )
        if not isinstance(self.forgets, bool):
            raise ConfigurationError(f"forgets must be True or False; got {self.forgets!r}")


#: The registered rules by learner class; :func:`register_dynamics` adds more.
DYNAMICS: dict[type[Learner], Dynamics] = {}


def register_dynamics(
    learner_class: type[Learner],
    log_probs: TraceLogProbs,
    *,
    learnable: Set[str] = frozenset(),
    forgets: bool = False,
) -> Dynamics:
    """Make ``log_likelihood``, ``trace_terms`` and ``fit`` accept ``learner_class`` (and its subclasses).

    Registering a class again replaces its entry.

    Args:
        learner_class: A :class:`~mechgym.learners.Learner` subclass (a frozen dataclass of hyperparameters).
        log_probs: Its parallel log-probabilities, ``log_probs(learner, unroll) -> [E, T', N]``
            (:class:`TraceLogProbs` over an :class:`Unroll`), checked against a step-by-step recursion of the
            rule in the tests, as the built-in rules are.
        learnable: The parameters a fit may learn, a subset of :data:`LEARNABLE_PARAMETERS`.
        forgets: Whether the state decays exponentially (round windows are refused otherwise).

    Returns:
        The new entry.

    Raises:
        ConfigurationError: bad arguments (see :class:`Dynamics`).

    Example:
        >>> register_dynamics(DiscountedHedge, discounted_hedge_log_probs, learnable=frozenset({"q0"}))
        >>> log_likelihood(mechanism, actions, DiscountedHedge(eta=0.2, gamma=0.9))
    """
    if not isinstance(learnable, Set):
        raise ConfigurationError(
            f"learnable must be a set of parameter names, e.g. frozenset({{'q0'}}); got {learnable!r}"
        )
    entry = Dynamics(learner_class, log_probs, frozenset(learnable), forgets)
    DYNAMICS[learner_class] = entry
    return entry


def dynamics_for(learner: Learner) -> Dynamics:
    """The registered dynamics of ``learner``: those of its class, else of its nearest registered base class.

    Args:
        learner: The assumed learner.

    Returns:
        Its :class:`Dynamics`.

    Raises:
        ConfigurationError: ``learner`` is not a Learner, or no class of its MRO is registered (the message
            names the known learners and how to register one).
    """
    if not isinstance(learner, Learner):
        raise ConfigurationError(f"learner must be a mechgym Learner (e.g. LogitQ()); got {type(learner).__name__}")
    for cls in type(learner).__mro__:
        if cls in DYNAMICS:
            return DYNAMICS[cls]
    name = type(learner).__name__
    known = [cls.__name__ for cls in DYNAMICS]
    raise ConfigurationError(
        f"{name} has no parallel likelihood: {suggest(name, known, 'learning rule')} Pass one of those learners, "
        f"or register the rule with diml_inverse.dynamics.register_dynamics({name}, log_probs)"
    )


def next_action_log_probs(log_policy: Tensor, next_actions: Tensor) -> Tensor:
    """``log_policy [..., A]`` read at ``next_actions [...]``: the terms ``[...]`` of Eq. (5)."""
    return log_policy.gather(-1, next_actions.long()[..., None]).squeeze(-1)
