"""``FitResult``: the fitted mechanism, its learner, the training history; gauge-fixed payoffs; save/load."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechgym.devices import DeviceLike, resolve_device
from mechgym.errors import ConfigurationError, MechGymError
from mechgym.learners import Learner, learner_from_dict
from mechgym.mechanisms import MECHANISM_FAMILIES, Mechanism, build_mechanism, validate_joint_actions
from mechgym.rollout import simulate
from mechgym.traces import TraceDataset, TraceMetadata

#: Identifies files written by :meth:`FitResult.save`.
FIT_FILE_FORMAT = "diml_inverse.fit/1"


@dataclass
class FitResult:
    """The outcome of :func:`diml_inverse.fit`.

    Attributes:
        mechanism: The fitted torch module (same interface as mechgym's mechanisms).
        learner: The assumed learner, with any jointly learned ``alpha``/``epsilon`` filled in.
        q0: Learned initial scores ``[N, A]``, or ``None`` when ``Q(1)`` was the learner's ``q0``.
        history: One dict per epoch: ``epoch``, ``train_nll``, ``valid_nll`` (per agent-round), ``seconds``
            and whatever the fit's callback returned.
        config: Every option of the fit (see :class:`diml_inverse.fit.FitConfig`).
        selected_epoch: The epoch whose parameters :attr:`mechanism` holds.
        best_epoch: The epoch with the best held-out likelihood.
    """

    mechanism: Mechanism
    learner: Learner
    q0: Tensor | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    selected_epoch: int = 0
    best_epoch: int = 0

    @property
    def env_id(self) -> str | None:
        """The game the traces came from."""
        return self.config.get("env_id")

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        valid = f", valid_nll={last['valid_nll']:.4f}" if "valid_nll" in last else ""
        return (
            f"FitResult({type(self.mechanism).__name__} on {self.env_id}, epochs={len(self.history)}, "
            f"selected_epoch={self.selected_epoch}{valid})"
        )

    # -- payoffs, up to the gauge ---------------------------------------------------------------
    def _joint(self, joint_actions: Tensor | Any) -> Tensor:
        joint = torch.as_tensor(joint_actions, device=self.mechanism._device())
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
        if mechanism._device() != target:
            import copy

            mechanism = copy.deepcopy(mechanism).to(target)
        actions, rewards = simulate(mechanism, learner, n_episodes, n_rounds, seed, initial_state=self.q0)
        metadata = TraceMetadata(
            n_agents=mechanism.n_agents,
            n_actions=mechanism.n_actions,
            env_id=self.env_id,
            env_kwargs=dict(self.config.get("env_kwargs", {})),
            learner=learner.to_dict(),
            seed=seed,
            extra={"mechanism": "fitted"},
        )
        return TraceDataset(actions=actions.cpu().numpy(), rewards=rewards.float().cpu().numpy(), metadata=metadata)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write weights and a JSON description to ``path`` atomically (temp file, then rename).

        The file holds only tensors, strings and numbers: :func:`load` reads it with
        ``torch.load(weights_only=True)``, so no code is unpickled.
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
            "config": self.config,
            "selected_epoch": self.selected_epoch,
            "best_epoch": self.best_epoch,
        }
        payload = {
            "description": json.dumps(description),
            "state_dict": {k: v.detach().cpu() for k, v in self.mechanism.state_dict().items()},
            "q0": None if self.q0 is None else self.q0.detach().cpu(),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(payload, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


class FitFileError(MechGymError):
    """A fit file that is missing, corrupted or not written by :meth:`FitResult.save`."""


def load(path: str | Path, *, device: DeviceLike = "cpu") -> FitResult:
    """Load a :class:`FitResult` written by :meth:`FitResult.save` (no arbitrary code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FitFileError(f"no fit file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        description = json.loads(payload["description"])
    except Exception as error:  # corrupted, truncated or foreign files
        raise FitFileError(
            f"{path} is not a readable diml_inverse fit file ({type(error).__name__}: {error})"
        ) from None
    if description.get("format") != FIT_FILE_FORMAT:
        raise FitFileError(f"{path} has format {description.get('format')!r}; expected {FIT_FILE_FORMAT!r}")
    mechanism = build_mechanism(description["family"], **description["mechanism_config"])
    try:
        mechanism.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise FitFileError(f"{path}: the weights do not fit a {description['family']} mechanism: {error}") from None
    target = resolve_device(device)
    q0 = payload.get("q0")
    return FitResult(
        mechanism=mechanism.to(target).eval(),
        learner=learner_from_dict(description["learner"]),
        q0=None if q0 is None else q0.to(target),
        history=description["history"],
        config=description["config"],
        selected_epoch=description["selected_epoch"],
        best_epoch=description["best_epoch"],
    )
