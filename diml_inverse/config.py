"""``FitConfig``: every option of :func:`diml_inverse.fit`, with its rule, its default and its meaning.

:class:`FitConfig` is the one home of the options: their defaults are its field defaults, their meanings its
field docstrings (which become ``diml fit --help``), and :data:`FIT_OPTION_RULES` says what each accepts.
:func:`check_fit_options` applies the rules: ``FitConfig.__post_init__`` calls it on every field, and
:func:`~diml_inverse.fit.fit` on its own arguments (``env_id``, ``learner``, ``callback``), so a refused value
raises a :class:`~mechgym.errors.ConfigurationError` naming the option before any traces are read.

>>> from diml_inverse import FitConfig
>>> FitConfig(epochs=5, lr=1e-2).batch_size
32
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from diml_inverse.models import MODEL_NAMES, ModelName
from mechgym.devices import DeviceLike, resolve_device
from mechgym.errors import ConfigurationError, suggest
from mechgym.learners import Learner
from mechgym.mechanisms import Mechanism
from mechgym.validation import is_integer

__all__ = [
    "FIT_ARGUMENTS",
    "FIT_OPTION_RULES",
    "FitConfig",
    "ModelSelection",
    "Optimizer",
    "OptionRule",
    "Select",
    "check_fit_options",
    "fit_config",
]

#: Which epoch's parameters a fit returns: the best held-out likelihood's or the last one's.
Select = Literal["best_valid", "last"]
Optimizer = Literal["auto", "adam", "lbfgs"]
PriorSelection = Literal["auto", "valid", "evidence"]
#: How ``model="auto"`` chooses among its families: the simplest within one standard error, or the best held-out NLL.
ModelSelection = Literal["one_se", "best_valid"]


def _is_int(value: object) -> bool:
    return is_integer(value, numpy=False)  # options are stored as JSON: Python ints only


def _is_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_keywords(value: object) -> bool:
    return value is None or (isinstance(value, Mapping) and all(isinstance(key, str) for key in value))


def _device_problem(value: object) -> str:
    """Why ``value`` does not name a device mechgym runs on (``""`` when it does).

    A CUDA device is not looked for here but when a fit starts (:func:`mechgym.devices.resolve_device`), so that
    a configuration (or a fit file) made on a GPU machine loads on any other.
    """
    try:
        if torch.device(value).type == "cuda":  # type: ignore[call-overload]
            return ""
    except (RuntimeError, TypeError):  # "auto", or not a device: resolve_device says which
        pass
    try:
        resolve_device(value)  # type: ignore[arg-type]
    except ConfigurationError as error:
        return str(error)
    return ""


def _candidates_problem(value: object) -> str:
    """Why ``value`` is not an ``auto_candidates`` (``""`` when it is one: ``None`` or distinct family names)."""
    if value is None:
        return ""
    families = [name for name in MODEL_NAMES if name != "auto"]
    if isinstance(value, (list, tuple)) and value:
        for name in value:
            if name == "auto":
                return "auto_candidates lists the families model='auto' fits, so 'auto' is not one of them"
            if not isinstance(name, str) or name not in families:
                return f"auto_candidates: {suggest(str(name), families, 'model family')} Pass family names."
        if len(set(value)) < len(value):
            return f"auto_candidates names a family twice: {list(value)!r}; name each family once"
        return ""
    return (
        "auto_candidates must be None (the families auto_model_candidates gives the game) or a non-empty list of "
        f"model family names, simplest first, e.g. ['interaction', 'neural']; got {value!r} ({type(value).__name__})"
    )


def _model_problem(value: object) -> str:
    if isinstance(value, str):
        return f"{suggest(value, MODEL_NAMES, 'model')} Pass one of those names or a mechgym Mechanism instance."
    return (
        f"model must be one of {', '.join(map(repr, MODEL_NAMES))} or a mechgym Mechanism instance; got {value!r} "
        f"({type(value).__name__})"
    )


@dataclass(frozen=True)
class OptionRule:
    """What one option of :func:`~diml_inverse.fit.fit` accepts.

    Attributes:
        expected: The accepted values, as the error message states them (``"an integer >= 1"``).
        accepts: Whether a value is accepted.
        explain: Builds the whole message for a refused value instead (a did-you-mean, the device's reason).
    """

    expected: str
    accepts: Callable[[Any], bool]
    explain: Callable[[Any], str] | None = None


_INT = "(a Python int, not a bool)"
_BOOL = OptionRule("True or False", lambda v: isinstance(v, bool))
#: The rule of every option of :func:`~diml_inverse.fit.fit` (every :class:`FitConfig` field and the arguments of
#: :data:`FIT_ARGUMENTS`): the one place where they are validated.
FIT_OPTION_RULES: dict[str, OptionRule] = {
    "env_id": OptionRule("None or a registered environment id", lambda v: v is None or isinstance(v, str)),
    "learner": OptionRule(
        "None or a mechgym Learner (e.g. LogitQ(...))", lambda v: v is None or isinstance(v, Learner)
    ),
    "callback": OptionRule("None or a callable callback(epoch, mechanism) -> dict", lambda v: v is None or callable(v)),
    "model": OptionRule(
        "a model name or a Mechanism instance",
        lambda v: isinstance(v, Mechanism) or (isinstance(v, str) and v in MODEL_NAMES),
        _model_problem,
    ),
    "model_kwargs": OptionRule("None or a dict of constructor arguments with string keys", _is_keywords),
    "env_kwargs": OptionRule("None or a dict of environment arguments with string keys", _is_keywords),
    "epochs": OptionRule(f"an integer >= 1 {_INT}", lambda v: _is_int(v) and v >= 1),
    "batch_size": OptionRule(f"an integer >= 1 {_INT}", lambda v: _is_int(v) and v >= 1),
    "lr": OptionRule("a finite number > 0", lambda v: _is_number(v) and v > 0),
    "weight_decay": OptionRule("a finite number >= 0", lambda v: _is_number(v) and v >= 0),
    "payoff_l2": OptionRule("a finite number >= 0", lambda v: _is_number(v) and v >= 0),
    "grad_clip": OptionRule(
        "None (no clipping) or a finite number > 0 (the largest gradient norm)",
        lambda v: v is None or (_is_number(v) and v > 0),
    ),
    "valid_fraction": OptionRule("a finite number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
    "patience": OptionRule(f"None or an integer >= 1 {_INT}", lambda v: v is None or (_is_int(v) and v >= 1)),
    "select": OptionRule("'best_valid' or 'last'", lambda v: isinstance(v, str) and v in ("best_valid", "last")),
    "optimizer": OptionRule(
        "'auto', 'adam' or 'lbfgs'", lambda v: isinstance(v, str) and v in ("auto", "adam", "lbfgs")
    ),
    "tune_prior": _BOOL,
    "prior_selection": OptionRule(
        "'auto', 'valid' or 'evidence'", lambda v: isinstance(v, str) and v in ("auto", "valid", "evidence")
    ),
    "model_selection": OptionRule(
        "'one_se' or 'best_valid'", lambda v: isinstance(v, str) and v in ("one_se", "best_valid")
    ),
    "auto_candidates": OptionRule(
        "None or a non-empty list of distinct model family names",
        lambda v: not _candidates_problem(v),
        _candidates_problem,
    ),
    "learn_q0": _BOOL,
    "learn_alpha": _BOOL,
    "learn_epsilon": _BOOL,
    "device": OptionRule("'auto', 'cpu', 'cuda' or 'cuda:N'", lambda v: not _device_problem(v), _device_problem),
    "seed": OptionRule(f"an integer in [0, 2**64) {_INT}", lambda v: _is_int(v) and 0 <= v < 2**64),
    "agent_batch_size": OptionRule(f"None or an integer >= 1 {_INT}", lambda v: v is None or (_is_int(v) and v >= 1)),
    "round_window": OptionRule(f"None or an integer >= 1 {_INT}", lambda v: v is None or (_is_int(v) and v >= 1)),
    "burn_in": OptionRule(f"None or an integer >= 0 {_INT}", lambda v: v is None or (_is_int(v) and v >= 0)),
    "compile": _BOOL,
    "progress": _BOOL,
    "check_memory": _BOOL,
}
#: The options of :func:`~diml_inverse.fit.fit` that are its own arguments, not :class:`FitConfig` fields: what
#: the fit is of (the game and the assumed learner) and the per-epoch hook. All default to ``None``.
FIT_ARGUMENTS: tuple[str, ...] = ("env_id", "learner", "callback")


def _default(name: str) -> Any:
    """The default of option ``name``: its :class:`FitConfig` field's, ``None`` for :data:`FIT_ARGUMENTS`."""
    field = next((f for f in dataclasses.fields(FitConfig) if f.name == name), None)
    return None if field is None else field.default


def check_fit_options(**options: Any) -> None:
    """Check options of :func:`~diml_inverse.fit.fit`, given by name, each against its rule in :data:`FIT_OPTION_RULES`.

    Type (a bool is not an integer), finiteness and range of every number, the names of the model and the
    device, then the options that depend on each other (``burn_in`` needs ``round_window``, when both are
    given). The checks that need the traces (their sizes, the learner), the machine (is the device there?) and
    the model family (``model_kwargs`` against its constructor) come later in :func:`~diml_inverse.fit.fit`.

    Args:
        **options: Any :class:`FitConfig` fields and :data:`FIT_ARGUMENTS`.

    Raises:
        ConfigurationError: naming the first refused option, what it accepts, what it got and a value to pass.
    """
    for name, value in options.items():
        rule = FIT_OPTION_RULES.get(name)
        if rule is None:
            raise ConfigurationError(suggest(name, FIT_OPTION_RULES, "fit option"))
        if rule.accepts(value):
            continue
        if rule.explain is not None:
            raise ConfigurationError(rule.explain(value))
        raise ConfigurationError(
            f"{name} must be {rule.expected}; got {value!r} ({type(value).__name__}). "
            f"Pass e.g. {name}={_default(name)!r} (the default)"
        )
    model = options.get("model", "auto")
    if options.get("auto_candidates") is not None and not (isinstance(model, str) and model == "auto"):
        shown = model if isinstance(model, str) else type(model).__name__
        raise ConfigurationError(
            f"auto_candidates lists the families model='auto' fits, but model={shown!r} fits one family; pass "
            "model='auto' with them, or auto_candidates=None"
        )
    if options.get("optimizer") == "lbfgs":
        for name in ("round_window", "agent_batch_size"):
            if options.get(name) is not None:
                raise ConfigurationError(
                    "optimizer='lbfgs' takes full-batch steps over whole episodes and every agent, so it does not "
                    f"take {name}={options[name]!r}; pass {name}=None or optimizer='adam'"
                )
    if options.get("prior_selection") == "evidence":
        for name in ("learn_q0", "learn_alpha", "learn_epsilon"):
            if options.get(name):
                raise ConfigurationError(
                    f"prior_selection='evidence' needs a prior on every fitted quantity, and {name}=True learns one "
                    f"without a prior; pass {name}=False or prior_selection='valid'"
                )
    if options.get("burn_in") is not None and "round_window" in options and options["round_window"] is None:
        raise ConfigurationError("burn_in only applies to round windows; pass round_window=... as well")


@dataclass(frozen=True)
class FitConfig:
    """The options of :func:`diml_inverse.fit`: how to fit, not what was measured (that is in the result).

    Every field is checked when the config is made (:func:`check_fit_options`); ``diml fit`` has one option per
    field, of the same name, with its default and the first paragraph of its docstring as help.

    >>> import dataclasses
    >>> published = FitConfig()  # the paper's E1-E3 settings
    >>> dataclasses.replace(published, epochs=200, batch_size=8).lr  # E4's
    0.001
    """

    model: ModelName | Mechanism = "auto"
    """model family: auto fits the families that apply and keeps one (model_selection); tabular is Tabular MLE,
    structured the game's own family from a random start (StructMLE)

    ``"neural"`` is the paper's joint network, ``"anonymous"`` E4's count network, ``"tabular"`` a free table of every
    joint action. ``"auto"`` fits :func:`~diml_inverse.models.auto_model_candidates`: the interaction model (with three
    agents or more, then the same with totals tables where their evidence is predicted to be higher) and the joint
    network for small games, the additive and aggregate count models and the count network for larger anonymous ones,
    the joint network otherwise. A :class:`~mechgym.mechanisms.Mechanism` instance is trained as a copy: the caller's
    module (and any earlier result) is never changed."""
    model_kwargs: Mapping[str, Any] | None = None
    """extra constructor arguments of a named model family, e.g. {"hidden": 64} (default: none)

    Checked against the family's constructor before anything is allocated; not for ``"structured"`` or an
    instance. On the command line, a JSON object."""
    env_kwargs: Mapping[str, Any] | None = None
    """arguments of the environment (default: the ones recorded in the traces)

    On the command line, a JSON object."""
    epochs: int = 100
    """passes over the training episodes

    Published: 100 for E1-E3, 200 for E4."""
    batch_size: int = 32
    """episodes (or round windows) per minibatch

    Published: 32 for E1-E3, 8 for E4."""
    lr: float = 1e-3
    """Adam learning rate"""
    weight_decay: float = 1e-6
    """Adam weight decay"""
    payoff_l2: float = 1e-4
    """weight of the mean squared payoff of the observed joint actions in the loss

    The published 1e-4. It pins the otherwise free gauge of the payoffs gently toward zero."""
    grad_clip: float | None = 1.0
    """largest gradient norm (none: no clipping)"""
    valid_fraction: float = 0.2
    """share of episodes held out to select the epoch (the last ones; 0: train on every episode)

    Selection never looks at the ground truth."""
    patience: int | None = None
    """stop after this many epochs without a better held-out likelihood (default: run every epoch)"""
    select: Select = "best_valid"
    """which epoch to return: best_valid (the best held-out likelihood) or last

    Without a validation split, the last epoch."""
    optimizer: Optimizer = "auto"
    """auto, adam (minibatch steps, the paper's) or lbfgs (full-batch quasi-Newton steps)

    ``"auto"`` picks ``"lbfgs"`` for the model families with a prior (``"interaction"``, the default for small
    games), whose loss is convex in the payoffs, and ``"adam"`` for every other family and whenever
    ``round_window`` or ``agent_batch_size`` is set. With ``"lbfgs"`` an epoch
    is up to 20 L-BFGS iterations on the whole training set (strong Wolfe line search); the fit stops early once
    an epoch no longer lowers the loss. It does not take ``round_window`` or ``agent_batch_size``."""
    tune_prior: bool = True
    """choose the prior of a model family with one (its scale and decay, ...) by its evidence or held-out NLL

    For families with a prior (``"interaction"``, ``"interaction_totals"``, ``"additive_counts"``,
    ``"aggregate_counts"``) whose ``model_kwargs`` do not set the prior's arguments. How candidates are scored is
    ``prior_selection``: by default their Laplace evidence on the training episodes, a few rounds of fit, expand and
    maximise (``docs/inverse.md``); with ``"valid"``, a coordinate search over ``diml_inverse.models.PRIOR_SEARCH`` (for
    ``"interaction"``: decay 0.25, 0.5, 1 at scale 1, then scales 0.3 and 3 at the best decay), each candidate trained
    on the training episodes and scored on the validation episodes, which then needs a validation split
    (``valid_fraction > 0``). The candidates are in :attr:`FitResult.model_search`."""
    prior_selection: PriorSelection = "auto"
    """how ``tune_prior`` scores a candidate prior: auto, valid (its held-out NLL) or evidence (its Laplace evidence)

    ``"evidence"`` scores each candidate by the Laplace approximation of the marginal likelihood of the *training*
    episodes under that prior (:func:`~diml_inverse.uncertainty.evidence.laplace_log_evidence`: the MAP fit's
    NLL and prior penalty plus half the log determinant of the posterior precision over the prior's), so it needs
    no held-out episodes and uses every training episode to choose; with a validation split, the held-out NLL then
    picks among the few trained candidates. It costs one Hessian per trained candidate. The rows of
    :attr:`FitResult.model_search` then carry ``evidence_nll`` (minus the log evidence per agent-round).
    ``"auto"`` (the default) is ``"evidence"``, or ``"valid"`` when the fit learns learner quantities
    (``learn_q0``, ``learn_alpha``, ``learn_epsilon``), which have no prior and so no evidence, or when the model has
    more parameters than :data:`~diml_inverse.full_batch.EVIDENCE_MAX_PARAMETERS` (8,192: the evidence's dense
    Hessians would take gigabytes)."""
    model_selection: ModelSelection = "one_se"
    """how model="auto" chooses among its families: one_se (the simplest within one standard error of the best
    held-out NLL) or best_valid (the best held-out NLL)

    ``model="auto"`` fits its families (:func:`~diml_inverse.models.auto_model_candidates`) simplest first. With
    ``"one_se"`` (Breiman's one-standard-error rule) it keeps the first whose held-out NLL is above the best one's
    by at most the standard error of their paired per-episode difference over the validation episodes: a richer
    family must win by more than the validation episodes can resolve. With fewer than two validation episodes
    there is no standard error, and the best held-out NLL is kept. Every family's held-out NLL and its standard
    error are in :attr:`FitResult.model_search`."""
    auto_candidates: tuple[str, ...] | None = None
    """the families model="auto" fits, simplest first (default: the game's, from auto_model_candidates)

    ``None`` takes :func:`~diml_inverse.models.auto_model_candidates`: on a small game the interaction model and, with
    three agents or more, its totals tables; on a larger anonymous game the additive and aggregate count models and
    the count network; the neural network otherwise. A list replaces them, e.g. ``["interaction",
    "interaction_totals", "neural"]``, the default before 2026-12-04, which also fitted the network on small games
    (docs/results.md measures both). ``model_selection`` keeps one of them; a family that nests an earlier one
    (``interaction_totals`` after ``interaction``) starts from its fit and is screened by its evidence."""
    learn_q0: bool = False
    """learn the initial scores Q(1) per agent and action"""
    learn_alpha: bool = False
    """learn the learning rate alpha jointly (logit-q)

    Kept in (0, 1) by a sigmoid. Only for learners whose dynamics declare ``alpha`` learnable
    (:func:`~diml_inverse.dynamics.dynamics_for`)."""
    learn_epsilon: bool = False
    """learn the exploration rate epsilon jointly (logit-q)

    ``beta`` is never learned: it is confounded with the payoff scale (Remark 1)."""
    device: DeviceLike = "auto"
    """auto, cpu, cuda, cuda:N

    ``"auto"`` picks CUDA when available. Whether the machine has the device is checked when the fit starts."""
    seed: int = 0
    """seed of the model initialisation and minibatch order

    The two are independent streams derived from it. Same seed, same fit."""
    agent_batch_size: int | None = None
    """agents per minibatch, for large games (default: all agents)

    Drawn at random for each minibatch. The learner-state tensors ``[B, T, K, A]`` scale with it; the
    counterfactual payoffs still see every agent's action."""
    round_window: int | None = None
    """score windows of this many rounds, for long episodes (default: whole episodes)

    Each minibatch item is ``round_window`` likelihood terms of one episode. An epoch visits every (training
    episode, window) pair once, in a seeded random order: more Adam steps per epoch, and memory per step that
    scales with ``burn_in + round_window`` instead of the episode length. Only for a learner whose state forgets
    exponentially (logit-Q); a window that would cover the whole episode falls back to whole episodes. The
    held-out likelihood is still computed on whole episodes."""
    burn_in: int | None = None
    """rounds before each round window (default: enough for float32-exact windows)

    They update the learner state but are not scored. ``None``: the smallest ``b`` with
    ``(1 - alpha)^b <= 1e-7`` (re-computed each epoch with ``learn_alpha`` and recorded in the history as
    ``burn_in``). Needs ``round_window``. A smaller burn-in is cheaper but approximate."""
    compile: bool = False
    """torch.compile each step (see docs/benchmarks.md)

    ``dynamic=False``. Measured on the CPU: a compiled step is 1.5-2.6x faster, but compiling costs 7-36 s, plus
    more for each new minibatch shape; the published fits and a 1,000-agent fit with 100-agent minibatches came
    out slower overall. Needs a working C++ compiler on the CPU. It compiles minibatch (Adam) steps; the full-batch
    L-BFGS fits of the prior families (``optimizer="auto"`` on the interaction and count models) are not compiled."""
    progress: bool = True
    """show a progress bar with the train/valid NLL (otherwise log each epoch at INFO level)"""
    check_memory: bool = True
    """refuse a fit whose estimated memory exceeds what the device has available, before building the model

    See :func:`~diml_inverse.fit_options.estimate_fit_memory`."""

    def __post_init__(self) -> None:
        check_fit_options(**{field.name: getattr(self, field.name) for field in dataclasses.fields(self)})
        if self.auto_candidates is not None:  # a list (JSON, the command line) is stored as a tuple
            object.__setattr__(self, "auto_candidates", tuple(self.auto_candidates))

    def prior_scoring(self) -> Literal["valid", "evidence"]:
        """What scores a candidate prior: ``prior_selection``, with ``"auto"`` resolved (see its field)."""
        if self.prior_selection != "auto":
            return self.prior_selection
        learns = self.learn_q0 or self.learn_alpha or self.learn_epsilon
        return "valid" if learns else "evidence"

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values: a :class:`~mechgym.mechanisms.Mechanism` instance as its class name, a
        ``torch.device`` as its name, mappings as dicts."""
        data: dict[str, Any] = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if isinstance(self.model, Mechanism):
            data["model"] = type(self.model).__name__
        data["device"] = str(self.device)
        for name in ("model_kwargs", "env_kwargs"):
            if data[name] is not None:
                data[name] = dict(data[name])
        if self.auto_candidates is not None:
            data["auto_candidates"] = list(self.auto_candidates)
        return data


def fit_config(config: FitConfig | None, overrides: Mapping[str, Any], *, known: tuple[str, ...] = ()) -> FitConfig:
    """``config`` (default: ``FitConfig()``) with ``overrides`` applied, as :func:`~diml_inverse.fit.fit` takes them.

    Args:
        config: A :class:`FitConfig`, or ``None`` for the defaults.
        overrides: Field values to change (``dataclasses.replace(config, **overrides)``).
        known: Further names the caller accepts, offered by the did-you-mean of an unknown name.

    Raises:
        ConfigurationError: ``config`` is not a :class:`FitConfig`, an override is not a field (with a
            did-you-mean) or a value is refused.
    """
    if config is None:
        config = FitConfig()
    elif not isinstance(config, FitConfig):
        raise ConfigurationError(
            f"config must be None or a diml_inverse.FitConfig; got {type(config).__name__}. "
            "Pass options as keywords (fit(..., epochs=5)) or config=FitConfig(epochs=5)"
        )
    names = [field.name for field in dataclasses.fields(FitConfig)]
    for name in overrides:
        if name not in names:
            raise ConfigurationError(suggest(name, [*names, *known], "fit option"))
    return dataclasses.replace(config, **overrides) if overrides else config
