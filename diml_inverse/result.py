"""``FitResult``: the fitted mechanism, its learner, the training history; gauge-fixed payoffs; save/load."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from diml_inverse.config import FIT_OPTION_RULES, FitConfig
from diml_inverse.errors import FitFileError
from diml_inverse.models import MODEL_NAMES
from mechgym.devices import DeviceLike, device_of, resolve_device
from mechgym.errors import ConfigurationError, MechGymError, suggest
from mechgym.files import ContentHasher, atomic_write, is_sha256_hex, parse_json
from mechgym.learners import Learner, learner_from_dict
from mechgym.mechanisms import MECHANISM_FAMILIES, Mechanism, build_mechanism, validate_joint_actions
from mechgym.rollout import simulate
from mechgym.traces import TraceDataset, TraceMetadata

logger = logging.getLogger(__name__)

#: Identifies files written by :meth:`FitResult.save`.
FIT_FILE_FORMAT = "diml_inverse.fit/2"
#: The format of files written before the options and the measured values were separated: their ``config``
#: holds both (see :func:`_split_legacy_config`). :func:`load` reads them too.
LEGACY_FIT_FILE_FORMAT = "diml_inverse.fit/1"


@dataclass
class FitResult:
    """The outcome of :func:`diml_inverse.fit`: what was fitted, with which options, and what the fit measured.

    Attributes:
        mechanism: The fitted torch module (same interface as mechgym's mechanisms).
        learner: The assumed learner, with any jointly learned ``alpha``/``epsilon`` filled in.
        q0: Learned initial scores ``[N, A]``, or ``None`` when ``Q(1)`` was the learner's ``q0``.
        history: One dict per epoch: ``epoch``, ``train_nll``, ``valid_nll`` (per agent-round), ``seconds``
            and whatever the fit's callback returned.
        config: The options of the fit, as given (:class:`~diml_inverse.config.FitConfig`).
        selected_epoch: The epoch whose parameters :attr:`mechanism` holds.
        best_epoch: The epoch with the best held-out likelihood.
        env_id: The game the traces came from, as used.
        env_kwargs: Its arguments, as used (the recorded ones unless ``config.env_kwargs`` said otherwise).
        model_name: The model family, as used (``"auto"`` resolved; a model instance's class name).
        assumed_learner: The learner the fit assumed, before any learned ``alpha``/``epsilon`` (``None`` in fit
            files too old to record it).
        fit_device: The device the fit ran on (``"cpu"``, ``"cuda:0"``).
        n_train_episodes: Episodes trained on.
        n_valid_episodes: Episodes held out to select the epoch.
        seconds: Wall-clock seconds of the whole fit (NaN in fit files too old to record it).
        model_search: The candidates ``model="auto"`` and the prior search (``tune_prior``) tried, one row each:
            ``model`` (the family), the prior's arguments, ``valid_nll`` (held-out NLL per agent-round of its
            selected epoch), ``epochs``, ``seconds``, ``selected`` (1 for the candidate :attr:`mechanism` is);
            with ``model_selection="one_se"``, ``family_gap`` and ``family_gap_se`` (the family's held-out NLL
            minus the best family's, and that paired difference's standard error over the validation episodes).
            A nested family that was not trained (the interaction model with totals tables, whose log evidence at
            the interaction model's fit was predicted to gain less than ``full_batch.NESTED_MIN_GAIN`` nats) has
            one row with ``model``, ``evidence_gain`` (that prediction) and ``selected`` 0. Empty when a single
            model was trained.
    """

    mechanism: Mechanism
    learner: Learner
    q0: Tensor | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    config: FitConfig = field(default_factory=FitConfig)
    selected_epoch: int = 0
    best_epoch: int = 0
    env_id: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""
    assumed_learner: Learner | None = None
    fit_device: str = "cpu"
    n_train_episodes: int = 0
    n_valid_episodes: int = 0
    seconds: float = math.nan
    model_search: list[dict[str, float | str]] = field(default_factory=list)

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        valid = f", valid_nll={last['valid_nll']:.4f}" if "valid_nll" in last else ""
        return (
            f"FitResult({type(self.mechanism).__name__} on {self.env_id}, epochs={len(self.history)}, "
            f"selected_epoch={self.selected_epoch}{valid})"
        )

    # -- payoffs, up to the gauge ---------------------------------------------------------------
    def _joint(self, joint_actions: Tensor | Any) -> Tensor:
        joint = torch.as_tensor(joint_actions, device=device_of(self.mechanism))
        validate_joint_actions(joint, self.mechanism.n_agents, self.mechanism.n_actions, "the fitted mechanism")
        return joint.long()

    @torch.no_grad()
    def gauge_fixed_payoffs(self, joint_actions: Tensor | Any) -> Tensor:
        """Payoffs ``[..., N]`` normalised to mean zero over each agent's own actions (Corollary 1).

        ``u_i(a) - mean_a' u_i(a', a_-i)``: the part of the payoffs that behaviour identifies.
        """
        joint = self._joint(joint_actions)
        cf = self.mechanism.counterfactual_payoffs(joint)
        return cf.gather(-1, joint[..., None]).squeeze(-1) - cf.mean(-1)

    @torch.no_grad()
    def payoff_differences(self, joint_actions: Tensor | Any) -> Tensor:
        """``[..., N, A]``: entry ``[i, a]`` is ``u_i(a, a_-i) - u_i(a_i, a_-i)`` (identified, Theorem 1)."""
        joint = self._joint(joint_actions)
        cf = self.mechanism.counterfactual_payoffs(joint)
        return cf - cf.gather(-1, joint[..., None])

    def oracle_gap(
        self, truth: Mechanism, test_traces: TraceDataset | Tensor, *, truth_learner: Learner | None = None
    ) -> float:
        """Held-out NLL of the fit minus that of the true mechanism, per agent-round (nats).

        The check that tells a simulation user what limits recovery. Near 0 (within the sampling noise of the
        held-out set): the fit explains the held-out play as well as the truth does, so a remaining payoff error
        is what these data cannot tell apart, and more episodes are what helps. Clearly positive: the estimator
        leaves likelihood on the table (too little capacity, too much regularisation, stopped too early, or the
        wrong learning model), and a better fit of the same data helps. Negative values are sampling noise or
        overfitting to the held-out episodes' particular draws.

        Args:
            truth: The true mechanism (same agents and actions).
            test_traces: Held-out episodes, never seen by the fit.
            truth_learner: The generating learner; default: the one the traces record, else :attr:`learner`.

        Returns:
            ``heldout_nll(fit) - heldout_nll(truth)``; the fit is scored with its own learner and ``Q(1)``.

        Example:
            >>> result.oracle_gap(mechgym.make("mechgym/Congestion-v0").mechanism, test)
        """
        from diml_inverse.metrics import heldout_nll

        if truth_learner is None:
            recorded = test_traces.learner() if isinstance(test_traces, TraceDataset) else None
            truth_learner = recorded if isinstance(recorded, Learner) else self.learner
        if device_of(truth) != device_of(self.mechanism):
            truth = copy.deepcopy(truth).to(device_of(self.mechanism))  # never move the caller's module
        fitted = heldout_nll(self.mechanism, test_traces, self.learner, self.q0)
        return fitted - heldout_nll(truth, test_traces, truth_learner)

    # -- counterfactual prediction -------------------------------------------------------------
    def simulate(
        self,
        learner: Learner | None = None,
        n_episodes: int = 100,
        n_rounds: int = 60,
        seed: int = 0,
        *,
        device: DeviceLike = "cpu",
    ) -> TraceDataset:
        """Traces of ``learner`` (default: the fitted learner) playing the fitted mechanism.

        This is the counterfactual prediction: how would other learners behave under the recovered rule?
        A learned ``Q(1)`` is used as the initial state.
        """
        learner = learner if learner is not None else self.learner
        mechanism = self.mechanism
        target = resolve_device(device)
        if device_of(mechanism) != target:
            mechanism = copy.deepcopy(mechanism).to(target)
        actions, rewards = simulate(mechanism, learner, n_episodes, n_rounds, seed, initial_state=self.q0)
        metadata = TraceMetadata(
            n_agents=mechanism.n_agents,
            n_actions=mechanism.n_actions,
            env_id=self.env_id,
            env_kwargs=dict(self.env_kwargs),
            learner=learner.to_dict(),
            seed=seed,
            extra={"mechanism": "fitted"},
        )
        return TraceDataset(actions=actions.cpu().numpy(), rewards=rewards.float().cpu().numpy(), metadata=metadata)

    # -- the fit report ---------------------------------------------------------------------------
    def report(
        self,
        path: str | Path,
        test_traces: TraceDataset | None = None,
        bootstrap: Any = None,
        *,
        traces: TraceDataset | None = None,
        overwrite: bool = False,
        **options: Any,
    ) -> Path:
        """Write one self-contained HTML page about this fit (:func:`diml_inverse.report.write_report`).

        Learning curves (the selected epoch marked), calibration by round (on ``test_traces`` when given), the
        support of the training ``traces`` and the payoff differences of the most frequent joint actions,
        off-support contexts flagged, with intervals when a ``bootstrap`` is given.

        Args:
            path: The ``.html`` file to write (never replaced unless ``overwrite``).
            test_traces: Held-out episodes.
            bootstrap: ``diml_inverse.bootstrap``'s result (its ``payoff_differences`` and
                ``payoff_differences_interval``), or ``None``.
            traces: The training traces (their support; calibration too without ``test_traces``).
            overwrite: Replace an existing page.
            **options: ``joint_actions``, ``n_joint_actions``, ``level`` of :func:`~diml_inverse.report.write_report`.

        Returns:
            The path written.
        """
        from diml_inverse.report import write_report

        return write_report(self, path, test_traces, bootstrap, traces=traces, overwrite=overwrite, **options)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write weights and a JSON description to ``path`` atomically (see :func:`mechgym.files.atomic_write`).

        The file holds only tensors, strings and numbers: :func:`load` reads it with
        ``torch.load(weights_only=True)``, so no code is unpickled. It also holds the SHA-256 of its content
        (every tensor's name, dtype, shape and bytes, and the description JSON), which :func:`load` verifies.

        Returns:
            The path written (missing parent directories are created).

        Raises:
            ConfigurationError: if the mechanism's family is not registered or the config or history is not
                JSON-serialisable.
            OSError: if the file cannot be written.
        """
        family = self.mechanism.family
        if family not in MECHANISM_FAMILIES or not isinstance(self.mechanism, MECHANISM_FAMILIES[family]):
            raise ConfigurationError(
                f"{type(self.mechanism).__name__} is not a registered mechanism family; register it with "
                "mechgym.mechanisms.register_family before saving"
            )
        description = {
            "format": FIT_FILE_FORMAT,
            "family": family,
            "mechanism_config": self.mechanism.config(),
            "learner": self.learner.to_dict(),
            "history": self.history,
            "config": self.config.to_dict(),
            "selected_epoch": self.selected_epoch,
            "best_epoch": self.best_epoch,
            **{name: getattr(self, name) for name in _MEASURED},
            "assumed_learner": None if self.assumed_learner is None else self.assumed_learner.to_dict(),
        }
        try:
            description_json = json.dumps(description)
        except (TypeError, ValueError, RecursionError) as error:
            raise ConfigurationError(
                "cannot save the fit: its config, history and mechanism config must be JSON-serialisable "
                f"(numbers, strings, lists, dicts); {error}"
            ) from None
        state_dict = {k: v.detach().cpu() for k, v in self.mechanism.state_dict().items()}
        q0 = None if self.q0 is None else self.q0.detach().cpu()
        payload = {
            "description": description_json,
            "state_dict": state_dict,
            "q0": q0,
            "sha256": _content_hash(state_dict, q0, description_json),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(file: IO[bytes]) -> None:
            torch.save(payload, file)

        return atomic_write(path, write)


#: What :meth:`FitResult.save` writes (``sha256`` is absent from files written before content hashes).
_PAYLOAD_KEYS = frozenset({"description", "state_dict", "q0", "sha256"})


def _hash_tensor(hasher: ContentHasher, name: str, tensor: Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    try:
        hasher.update_array(name, tensor.numpy())
    except TypeError:  # a dtype numpy lacks (e.g. bfloat16): torch's name and the raw bytes
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        hasher.update_bytes(name, str(tensor.dtype), tuple(tensor.shape), raw)


def _content_hash(state_dict: dict[str, Tensor], q0: Tensor | None, description_json: str) -> str:
    """SHA-256 over every tensor of the state dict (by name), ``q0`` and the description JSON."""
    hasher = ContentHasher()
    for name in sorted(state_dict):
        _hash_tensor(hasher, f"state_dict/{name}", state_dict[name])
    if q0 is not None:
        _hash_tensor(hasher, "q0", q0)
    hasher.update_text("description", description_json)
    return hasher.hexdigest()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _read_payload(path: Path) -> dict[str, Any]:
    """The payload of a fit file, after every zip member passed its CRC-32 check and the content its hash."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as error:
        raise FitFileError(
            f"{path} is not a readable diml_inverse fit file (truncated or corrupted?): {type(error).__name__}: "
            f"{_one_line(error)}"
        ) from None
    if bad is not None:
        raise FitFileError(f"{path}: member {bad!r} fails its CRC-32 check; the file is truncated or corrupted")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupted, truncated or foreign files
        raise FitFileError(
            f"{path} is not a readable diml_inverse fit file ({type(error).__name__}: {_one_line(error)})"
        ) from None
    if not isinstance(payload, dict) or not {"description", "state_dict"} <= set(payload) <= _PAYLOAD_KEYS:
        found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise FitFileError(
            f"{path} is not a diml_inverse fit file: it holds {found}, expected {sorted(_PAYLOAD_KEYS)}; "
            "write fits with FitResult.save"
        )
    state_dict, q0 = payload["state_dict"], payload.get("q0")
    if not isinstance(payload["description"], str):
        raise FitFileError(f"{path}: the description must be a JSON string; the file is truncated or corrupted")
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state_dict.items()
    ):
        raise FitFileError(f"{path}: the weights must map names to tensors; the file is truncated or corrupted")
    if q0 is not None and not isinstance(q0, Tensor):
        raise FitFileError(f"{path}: q0 must be a tensor or None; got {type(q0).__name__}")
    stored = payload.get("sha256")
    if stored is None:
        logger.warning(
            "%s has no content checksum (written by an older diml_inverse): its content cannot be verified. "
            "Save it again to add one.",
            path,
        )
    elif not is_sha256_hex(stored) or stored != _content_hash(state_dict, q0, payload["description"]):
        raise FitFileError(
            f"{path}: the content does not match its SHA-256 checksum; the file is truncated or corrupted. "
            "Restore it from a backup or fit again"
        )
    return payload


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: What a fit measured (fields of :class:`FitResult`), saved next to its options: (check, what is expected).
_MEASURED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "env_id": (lambda v: v is None or isinstance(v, str), "a registered environment id (str) or None"),
    "env_kwargs": (lambda v: isinstance(v, dict), "a JSON object"),
    "model_name": (lambda v: isinstance(v, str), "a model name (str)"),
    "fit_device": (lambda v: isinstance(v, str), "a device name (str)"),
    "n_train_episodes": (_is_count, "an integer >= 0"),
    "n_valid_episodes": (_is_count, "an integer >= 0"),
    "seconds": (_is_number, "a number"),
    "model_search": (
        lambda v: (
            isinstance(v, list)
            and all(
                isinstance(row, dict)
                and all(
                    isinstance(k, str) and (_is_number(x) or (k == "model" and isinstance(x, str)))
                    for k, x in row.items()
                )
                for row in v
            )
        ),
        "a list of {name: number} rows (and a 'model' name), one per candidate",
    ),
}
#: Where a legacy file's config kept what the fit measured: config key -> :class:`FitResult` field (``extra``:
#: always empty, dropped). Its ``model`` and ``device`` were the ones used: both an option and a measured value.
_LEGACY_MEASURED: dict[str, str | None] = {
    "env_id": "env_id",
    "env_kwargs": "env_kwargs",
    "learner": "assumed_learner",
    "n_train_episodes": "n_train_episodes",
    "n_valid_episodes": "n_valid_episodes",
    "extra": None,
}
_OPTIONS = tuple(field.name for field in dataclasses.fields(FitConfig))


def _bad(path: Path, field_name: str, expected: str, value: Any) -> FitFileError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return FitFileError(f"{path}: {field_name} must be {expected}; got {shown} ({type(value).__name__})")


def _split_legacy_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """A legacy config's options, measured values and where each measured value was (for error messages)."""
    options = {key: value for key, value in config.items() if key not in _LEGACY_MEASURED}
    measured, where = {}, {}
    for key, name in (*_LEGACY_MEASURED.items(), ("model", "model_name"), ("device", "fit_device")):
        if name is not None and key in config:
            measured[name], where[name] = config[key], f"config[{key!r}]"
    return options, measured, where


def _read_description(description: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the types and ranges of every field :func:`load` uses; the options and the measured values.

    Raises:
        FitFileError: naming the first bad field.
    """
    if not isinstance(description, dict):
        raise _bad(path, "the description", "a JSON object", description)
    file_format = description.get("format")
    if file_format not in (FIT_FILE_FORMAT, LEGACY_FIT_FILE_FORMAT):
        raise FitFileError(f"{path} has format {file_format!r}; expected {FIT_FILE_FORMAT!r}")
    family = description.get("family")
    if not isinstance(family, str) or family not in MECHANISM_FAMILIES:
        raise _bad(path, "family", f"a registered mechanism family ({', '.join(sorted(MECHANISM_FAMILIES))})", family)
    for name in ("mechanism_config", "learner", "config"):
        if not isinstance(description.get(name), dict):
            raise _bad(path, name, "a JSON object", description.get(name))
    history = description.get("history")
    if not isinstance(history, list) or not all(
        isinstance(row, dict) and all(isinstance(k, str) and _is_number(v) for k, v in row.items()) for row in history
    ):
        raise _bad(path, "history", "a list of {name: number} rows, one per epoch", history)
    last = max(len(history), 1)
    for name in ("selected_epoch", "best_epoch"):
        value = description.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= last:
            raise _bad(path, name, f"an epoch number in [0, {last}]", value)
    if file_format == LEGACY_FIT_FILE_FORMAT:
        options, measured, where = _split_legacy_config(description["config"])
    else:
        options = dict(description["config"])
        measured = {name: description[name] for name in (*_MEASURED, "assumed_learner") if name in description}
        where = {name: name for name in measured}
    for name, (ok, expected) in _MEASURED.items():
        if name in measured and not ok(measured[name]):
            raise _bad(path, where[name], expected, measured[name])
    if not isinstance(measured.get("assumed_learner"), dict | None):
        raise _bad(path, where["assumed_learner"], "a JSON object or null", measured["assumed_learner"])
    for name, value in options.items():
        if name not in _OPTIONS:
            raise FitFileError(f"{path}: {suggest(name, _OPTIONS, 'fit option')} (config[{name!r}])")
        rule = FIT_OPTION_RULES[name]
        if not (isinstance(value, str) if name == "model" else rule.accepts(value)):  # a model instance: its name
            raise _bad(path, f"config[{name!r}]", rule.expected, value)
    return options, measured


def load(path: str | Path, *, device: DeviceLike = "cpu") -> FitResult:
    """Load a :class:`FitResult` written by :meth:`FitResult.save` (no arbitrary code is unpickled).

    The CRC-32 of every zip member, the content hash (if the file has one; older files load with a warning)
    and every field of the description are verified.

    Args:
        path: The file.
        device: Where to put the mechanism and ``q0``.

    Returns:
        The result, equal to the one saved.

    Raises:
        FitFileError: if the file is missing, truncated, corrupted, not a fit file, or holds a description,
            weights or ``q0`` that do not make a valid result.
    """
    path = Path(path)
    if not path.is_file():
        raise FitFileError(f"no fit file at {path}; check the path (write one with FitResult.save or `diml fit`)")
    payload = _read_payload(path)
    try:
        description = parse_json(payload["description"], allow_nan=True)
    except ValueError as error:
        raise FitFileError(
            f"{path}: the description is unusable: {error} (the file is damaged or was edited by hand)"
        ) from None
    options, measured = _read_description(description, path)
    family = description["family"]
    try:
        mechanism = build_mechanism(family, **description["mechanism_config"])
        learner = learner_from_dict(description["learner"])
        assumed = measured.get("assumed_learner")
        assumed_learner = None if assumed is None else learner_from_dict(assumed)
    except (MechGymError, TypeError, ValueError, OverflowError, RuntimeError) as error:
        raise FitFileError(f"{path}: the description does not make a valid fit: {_one_line(error)}") from None
    try:
        mechanism.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise FitFileError(f"{path}: the weights do not fit a {family} mechanism: {_one_line(error)}") from None
    for name, tensor in mechanism.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FitFileError(f"{path}: weight {name!r} holds NaN or infinite values; the file is corrupted")
    q0 = payload.get("q0")
    if q0 is not None:
        expected = (mechanism.n_agents, mechanism.n_actions)
        if tuple(q0.shape) != expected or not q0.is_floating_point() or not bool(torch.isfinite(q0).all()):
            raise FitFileError(
                f"{path}: q0 must be finite floats of shape [n_agents, n_actions] = {list(expected)}; got "
                f"{q0.dtype} of shape {list(q0.shape)}"
            )
    target = resolve_device(device)
    mechanism = mechanism.to(target).eval()
    if options.get("model", "auto") not in MODEL_NAMES:  # fitted from an instance, which the file does not hold
        options["model"] = copy.deepcopy(mechanism)
    try:
        config = FitConfig(**options)
    except ConfigurationError as error:
        raise FitFileError(f"{path}: the config does not make valid fit options: {_one_line(error)}") from None
    return FitResult(
        mechanism=mechanism,
        learner=learner,
        q0=None if q0 is None else q0.to(target),
        history=description["history"],
        config=config,
        selected_epoch=description["selected_epoch"],
        best_epoch=description["best_epoch"],
        assumed_learner=assumed_learner,
        **{name: measured[name] for name in _MEASURED if name in measured},
    )
