"""Mechanism model families for the fit: neural joint, anonymous count, tabular and structured."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from mechgym.errors import ConfigurationError, suggest
from mechgym.mechanisms import (
    MECHANISM_FAMILIES,
    AdditiveCountMechanism,
    AggregateCountMechanism,
    AnonymousCountMechanism,
    InteractionMechanism,
    Mechanism,
    NeuralJointMechanism,
    PublicGoodsMechanism,
    TabularMechanism,
    TotalsInteractionMechanism,
    aggregate_parameter_count,
)
from mechgym.mechanisms.base import DEFAULT_MAX_TABLE_SIZE
from mechgym.mechanisms.interaction import interaction_parameter_count
from mechgym.memory import MemoryBudgetError

ModelName = Literal[
    "auto",
    "neural",
    "anonymous",
    "tabular",
    "interaction",
    "interaction_totals",
    "additive_counts",
    "aggregate_counts",
    "structured",
]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)


#: The largest interaction model ``model="auto"`` builds (parameters): 2 MB of float32.
MAX_AUTO_INTERACTION_PARAMETERS = 1 << 19


@dataclass(frozen=True)
class PriorGrid:
    """What ``tune_prior`` searches for one family with a prior (see :func:`~diml_inverse.full_batch.search_prior`).

    A coordinate search: each constructor argument in turn takes its candidate values with the others at their
    best so far (the first value of each is where the search starts). ``sweeps`` passes over the arguments are
    made while the last one moved some argument; a best value at the edge of its values is extended past it, by
    the ratio of its two outermost values, up to ``extend`` times per argument and pass, for as long as that
    improves the held-out NLL (so a prior's scale is not clipped by the grid when the payoffs are large).
    """

    coordinates: tuple[tuple[str, tuple[float, ...]], ...]
    """(constructor argument, candidate values), in search order."""
    sweeps: int = 1
    """Passes over the arguments at most."""
    extend: int = 0
    """Values past a winning edge per argument and pass at most."""

    @property
    def arguments(self) -> tuple[str, ...]:
        """The constructor arguments the search chooses."""
        return tuple(name for name, _ in self.coordinates)


#: Families whose parameters have a prior (``Mechanism.prior_penalty``), fitted full-batch by ``optimizer="auto"``,
#: and the grid ``tune_prior`` searches. The interaction search is five candidates (small games keep the fit within
#: a few times the network's); the additive count search may go on where the payoffs' scale asks for it.
PRIOR_SEARCH: dict[str, PriorGrid] = {
    "interaction": PriorGrid((("prior_decay", (0.25, 0.5, 1.0)), ("prior_scale", (1.0, 0.3, 3.0)))),
    "interaction_totals": PriorGrid(
        (("prior_decay", (0.25, 0.5, 1.0)), ("prior_scale", (1.0, 0.3, 3.0)), ("prior_total", (1.0, 0.1, 3.0)))
    ),
    "additive_counts": PriorGrid(
        (
            ("prior_cross", (1.0, 0.1, 0.01)),
            ("prior_step", (0.1, 0.03, 0.3, 1.0)),
            ("prior_scale", (3.0, 30.0)),
            ("prior_curvature", (1.0, 0.1, 0.01)),
        ),
        sweeps=2,
        extend=2,
    ),
    "aggregate_counts": PriorGrid(
        (
            ("prior_cross", (1.0, 0.1, 0.01)),
            ("prior_step", (0.1, 0.03, 0.3, 1.0)),
            ("prior_scale", (3.0, 30.0)),
            ("prior_curvature", (1.0, 0.1, 0.01)),
            ("prior_total", (1.0, 0.1, 10.0)),
        ),
        sweeps=2,
        extend=2,
    ),
}
#: Families that nest another: (the nested family, the argument whose small values make them equal). ``model="auto"``
#: starts such a family from the nested one's fit (its class's ``starting_from``) and trains it only where its
#: evidence is predicted to be higher (``diml_inverse.fit.nested_start``).
NESTED_FAMILIES: dict[str, tuple[str, str]] = {"interaction_totals": ("interaction", "prior_total")}
#: The families with a prior and the constructor arguments the search chooses.
PRIOR_FAMILIES: dict[str, tuple[str, ...]] = {family: grid.arguments for family, grid in PRIOR_SEARCH.items()}


#: The largest additive count model ``model="auto"`` tries (parameters ``A + A * A * N``).
MAX_AUTO_ADDITIVE_PARAMETERS = 1 << 20
#: The largest aggregate count model ``model="auto"`` tries (parameters ``A + A * A * N + A * ((A - 1) (N - 1) + 1)``):
#: its totals curves grow as ``A**2 N`` again, and its fit is the slowest of the three anonymous candidates.
MAX_AUTO_AGGREGATE_PARAMETERS = 1 << 18


def auto_model_candidates(truth_like: Mechanism) -> list[str]:
    """The families ``model="auto"`` fits by default, simplest first (``FitConfig.auto_candidates`` replaces them);
    :func:`~diml_inverse.fit` keeps one by ``FitConfig.model_selection`` (by default the simplest within one standard
    error of the best held-out NLL).

    Small games (see :func:`auto_model_name`): the interaction model (main effects and interactions under a tuned
    prior), and with three agents or more the interaction model with totals tables (curves in the others' total
    ``sum_{j != i} a_j``, which represent aggregative games such as threshold participation), when it fits in
    :data:`MAX_AUTO_INTERACTION_PARAMETERS`. The interaction model of every order represents any payoff table, so
    the neural joint network (E1-E3's) adds no mechanism it cannot hold, only another prior; chosen over it by the
    held-out NLL of a few validation episodes, the network was worse on every zoo and paper fit where that happened
    (docs/results.md, "The network as a small-game candidate"), and it is not a default candidate.

    Larger anonymous games: the additive count model (free curves in the others' counts under a tuned prior), when
    the curves fit in :data:`MAX_AUTO_ADDITIVE_PARAMETERS`; then
    the aggregate count model (the additive curves plus curves in the others' total ``sum_b b c_b``, which
    represent aggregative games such as threshold public goods), when there are more than two actions (with two,
    the total is a count the additive curves already hold) and it fits in :data:`MAX_AUTO_AGGREGATE_PARAMETERS`;
    then E4's anonymous count network. Other games: the neural joint network.
    """
    name = auto_model_name(truth_like)
    n, a = truth_like.n_agents, truth_like.n_actions
    if name == "interaction":
        if n >= 3 and interaction_parameter_count(n, a, totals=True) <= MAX_AUTO_INTERACTION_PARAMETERS:
            return ["interaction", "interaction_totals"]
        return ["interaction"]
    if name == "anonymous" and a + a * a * n <= MAX_AUTO_ADDITIVE_PARAMETERS:
        if a > 2 and aggregate_parameter_count(n, a) <= MAX_AUTO_AGGREGATE_PARAMETERS:
            return ["additive_counts", "aggregate_counts", "anonymous"]
        return ["additive_counts", "anonymous"]
    return [name]


def auto_family_for(
    truth_like: Mechanism, model_kwargs: dict[str, Any] | None, candidates: Sequence[str] | None = None
) -> str:
    """The family ``model="auto"`` builds for ``model_kwargs``: with none, the first of ``candidates`` (default
    :func:`auto_model_candidates`); otherwise the candidate whose constructor takes the most of the keys (a key
    close to one of its arguments counts half, so that a typo is reported against the family it was meant for).
    Without ``candidates``, a small game's neural joint network is a candidate here too (``hidden=...`` builds it).
    """
    if candidates is None:
        candidates = auto_model_candidates(truth_like)
        if candidates[0] == "interaction":
            candidates = [*candidates, "neural"]
    candidates = list(candidates)
    if not model_kwargs:
        return candidates[0]

    def score(name: str) -> float:
        allowed = _model_arguments(MODEL_FAMILIES[name])
        return sum(
            1.0 if key in allowed else 0.5 * bool(difflib.get_close_matches(key, allowed)) for key in model_kwargs
        )

    return max(candidates, key=score)  # the first of the best


def auto_model_name(truth_like: Mechanism) -> str:
    """The family ``model="auto"`` picks for a game.

    Games with a payoff table of at most ``Mechanism.max_table_size`` (4,096) joint actions, whose interaction
    model has at most :data:`MAX_AUTO_INTERACTION_PARAMETERS` parameters, get ``"interaction"`` (main effects and
    interactions under a tuned prior, fitted full-batch: the estimator docs/results.md chose on the recovery zoo).
    Larger anonymous games get the anonymous count network (E4); every other game the neural joint network
    (E1-E3's).
    """
    small = truth_like.n_joint_actions <= DEFAULT_MAX_TABLE_SIZE
    if (
        small
        and interaction_parameter_count(truth_like.n_agents, truth_like.n_actions) <= MAX_AUTO_INTERACTION_PARAMETERS
    ):
        return "interaction"
    if truth_like.family == "anonymous" or truth_like.anonymous:
        return "anonymous"
    return "neural"


def _structured_model(truth_like: Mechanism, seed: int) -> Mechanism:
    """The game's own family with a random initialisation (the StructMLE baseline)."""
    config = truth_like.config()
    cls = type(truth_like)
    if isinstance(truth_like, PublicGoodsMechanism):
        generator = torch.Generator().manual_seed(seed)
        k, scale, cost = (
            low + (high - low) * float(torch.rand((), generator=generator))
            for low, high in ((1.0, 3.0), (0.5, 1.5), (0.4, 1.2))
        )
        return PublicGoodsMechanism(**config, k=k, scale=scale, cost=cost, seed=seed)
    if "seed" not in inspect.signature(cls).parameters:
        raise ConfigurationError(
            f"model='structured' needs a mechanism family whose constructor takes a seed; {cls.__name__} does not"
        )
    return cls(**config, seed=seed)  # type: ignore[call-arg]


#: The classes the model names build (``"auto"`` picks one of the first two; ``"structured"`` is the game's own).
MODEL_FAMILIES: dict[str, type[Mechanism]] = {
    "neural": NeuralJointMechanism,
    "anonymous": AnonymousCountMechanism,
    "tabular": TabularMechanism,
    "interaction": InteractionMechanism,
    "interaction_totals": TotalsInteractionMechanism,
    "additive_counts": AdditiveCountMechanism,
    "aggregate_counts": AggregateCountMechanism,
}
#: Constructor arguments that :func:`build_model` sets itself (sizes from the game, the seed from the fit).
RESERVED_MODEL_ARGUMENTS: tuple[str, ...] = ("n_agents", "n_actions", "seed")


def _model_arguments(cls: type[Mechanism]) -> list[str]:
    """The keyword arguments of ``cls``'s constructor that ``model_kwargs`` may set."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        name
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.kind in kinds and name not in RESERVED_MODEL_ARGUMENTS
    ]


def _check_model_kwargs(model: str | Mechanism, name: str, model_kwargs: dict[str, Any]) -> None:
    """Refuse keys the model family's constructor does not take (with a did-you-mean) and kwargs nothing reads."""
    if not model_kwargs:
        return
    if isinstance(model, Mechanism) or name == "structured":
        built = (
            f"the {type(model).__name__} instance is trained as given"
            if isinstance(model, Mechanism)
            else "model='structured' builds the game's own family with the game's sizes"
        )
        raise ConfigurationError(
            f"model_kwargs only apply to model='neural', 'anonymous' or 'tabular' (and 'auto'); {built}, so "
            f"model_kwargs={model_kwargs!r} would be ignored. Pass model_kwargs=None"
        )
    cls = MODEL_FAMILIES[name]
    allowed = _model_arguments(cls)
    for key in model_kwargs:
        if key in RESERVED_MODEL_ARGUMENTS:
            raise ConfigurationError(
                f"model_kwargs may not set {key!r}: fit takes the sizes from the game and the model seed from its "
                f"own seed; remove {key!r} from model_kwargs (pass seed=... to fit instead of a model seed)"
            )
        if key not in allowed:
            raise ConfigurationError(
                f"{suggest(str(key), allowed, f'model_kwargs key for model={name!r} ({cls.__name__})')} "
                "Fix or remove that key."
            )


def build_model(
    model: str | Mechanism,
    truth_like: Mechanism,
    *,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
) -> Mechanism:
    """The mechanism model to fit, sized like ``truth_like`` (the environment's mechanism).

    Build it under ``with torch.device("meta"):`` to get its architecture and parameter count without
    allocating anything (as :func:`diml_inverse.fit` does before its memory check).

    Args:
        model: ``"auto"``, ``"neural"`` (the reference joint network), ``"anonymous"`` (count network),
            ``"tabular"`` (a free table of all ``A**N`` joint actions, zero init), ``"structured"`` (the
            environment's own family, random init), or a :class:`~mechgym.mechanisms.Mechanism` instance
            (any subclass works as a model; it is returned as it is, not copied).
        truth_like: A mechanism with the game's sizes and family; only its architecture is used.
        seed: Seed of the model's initialisation.
        model_kwargs: Extra constructor arguments of a named family (e.g. ``{"hidden": 64}``); the keys must be
            arguments of its constructor other than ``n_agents``, ``n_actions`` and ``seed``.

    Raises:
        ConfigurationError: for an unknown model name (with a did-you-mean), an unknown ``model_kwargs`` key
            (with a did-you-mean), ``model_kwargs`` the constructor refuses, ``model_kwargs`` with a model
            instance or ``"structured"`` (nothing would read them), a size mismatch, or a table too large.
    """
    n, a = truth_like.n_agents, truth_like.n_actions
    if isinstance(model, Mechanism):
        _check_model_kwargs(model, "", dict(model_kwargs or {}))
        if (model.n_agents, model.n_actions) != (n, a):
            raise ConfigurationError(
                f"the model has {model.n_agents} agents x {model.n_actions} actions but the game has {n} x {a}"
            )
        return model
    if not isinstance(model, str) or model not in MODEL_NAMES:
        raise ConfigurationError(
            f"{suggest(str(model), MODEL_NAMES, 'model')} Pass one of those names or a mechgym Mechanism instance."
        )
    kwargs = dict(model_kwargs or {})
    name = auto_family_for(truth_like, model_kwargs) if model == "auto" else model
    _check_model_kwargs(model, name, kwargs)
    if name == "structured":
        if truth_like.family not in MECHANISM_FAMILIES:
            raise ConfigurationError(f"model='structured' needs a registered family; got {truth_like.family!r}")
        return _structured_model(truth_like, seed)
    cls = MODEL_FAMILIES[name]
    if not kwargs:  # the constructor's own errors (a table too large, ...) are not about model_kwargs
        return cls(n, a, seed=seed)  # type: ignore[call-arg]
    try:
        return cls(n, a, seed=seed, **kwargs)  # type: ignore[call-arg]
    except MemoryBudgetError:
        raise
    except (TypeError, ValueError, RuntimeError) as error:  # ConfigurationError is a ValueError
        raise ConfigurationError(
            f"model_kwargs={kwargs!r} were refused by {cls.__name__} (model={name!r}): {error}. Fix the values in "
            f"model_kwargs (its arguments: {', '.join(_model_arguments(cls))})"
        ) from error


def model_skeleton(
    model: str | Mechanism, truth_like: Mechanism, *, model_kwargs: dict[str, Any] | None = None
) -> Mechanism:
    """The model :func:`build_model` would build, without allocating it: to size it before building it.

    A named family is built on the ``meta`` device (``torch.device("meta")``: shapes and dtypes, no storage),
    which runs every check of :func:`build_model` and of the constructor; ``"structured"`` is the game's own
    family with the game's sizes, so ``truth_like`` itself stands for it; an instance is itself.

    Raises:
        ConfigurationError: as :func:`build_model`.
    """
    name = auto_family_for(truth_like, model_kwargs) if model == "auto" else model
    if isinstance(name, str) and name == "structured":
        _check_model_kwargs(model, name, dict(model_kwargs or {}))
        return truth_like
    with torch.device("meta"):
        return build_model(model, truth_like, model_kwargs=model_kwargs)


#: Activation tensors of a family's largest shape alive at once, with gradients (values kept for the backward
#: pass and their gradients) and without. Measured peaks: 4.8 for the neural network's deviation path, 8.6 for
#: the anonymous network's rows (5.5 when checkpointed in chunks).
_ACTIVATION_COPIES = {"neural": {True: 6, False: 3}, "anonymous": {True: 10, False: 4}}


def activation_elements(model: Mechanism, n_rows: int, n_scored_agents: int, *, grad: bool) -> int:
    """A rough upper bound of the float elements ``model.counterfactual_payoffs`` holds for one minibatch.

    ``n_rows`` is the number of joint actions (rounds) in the minibatch, ``n_scored_agents`` the ``K`` agents
    whose rows ``[rows, K, A]`` are computed. Each family's largest activations, times the copies alive at once
    (6 with gradients and 3 without for the neural network, 10 and 4 for the anonymous one):

    * a game with at most ``model.max_table_size`` joint actions: one forward pass over all ``J = A**N`` joint
      actions (the payoff table), ``J x N x H`` for the anonymous network, ``J x H`` for the neural one;
    * :class:`~mechgym.mechanisms.NeuralJointMechanism` otherwise: the deviation pre-activations
      ``rows x K x A x H``;
    * :class:`~mechgym.mechanisms.AnonymousCountMechanism` otherwise: the ``A x A x H`` (own action,
      alternative) pre-activations of every row, at most ``rows_chunk_size`` rows at a time when there are more
      (the chunks are checkpointed), plus the ``rows x A x A`` rows themselves;
    * :class:`~mechgym.mechanisms.TabularMechanism` and other families: only the gathered payoffs and their
      ``int64`` indices, ``4 x rows x K x A`` (a custom family's own activations are not estimated).

    Args:
        model: The model (its tensors may be on the ``meta`` device: only sizes are read).
        n_rows: Joint actions in the minibatch (items x rounds).
        n_scored_agents: Agents whose counterfactual rows are computed.
        grad: Whether the step records gradients.

    Returns:
        The number of elements (a Python int: large sizes do not overflow).
    """
    n, a = model.n_agents, model.n_actions
    gathered = 4 * n_rows * n_scored_agents * a
    hidden = int(getattr(model, "hidden", 0) or 0)
    anonymous = isinstance(model, AnonymousCountMechanism)
    copies = _ACTIVATION_COPIES["anonymous" if anonymous else "neural"][grad]
    if model.n_joint_actions <= model.max_table_size and not isinstance(model, TabularMechanism):
        return copies * model.n_joint_actions * ((n * hidden if anonymous else hidden) + n) + gathered
    if isinstance(model, NeuralJointMechanism):
        return copies * n_rows * n_scored_agents * a * hidden + gathered
    if isinstance(model, AnonymousCountMechanism):
        live_rows = n_rows if n_rows <= model.rows_chunk_size else model.rows_chunk_size
        return copies * live_rows * a * a * hidden + 2 * n_rows * a * a + gathered
    return gathered
