"""Mechanism model families for the fit: neural joint, anonymous count, tabular and structured."""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch

from mechgym.errors import ConfigurationError, suggest
from mechgym.mechanisms import (
    MECHANISM_FAMILIES,
    AnonymousCountMechanism,
    Mechanism,
    NeuralJointMechanism,
    PublicGoodsMechanism,
    TabularMechanism,
)
from mechgym.mechanisms.base import DEFAULT_MAX_TABLE_SIZE

ModelName = Literal["auto", "neural", "anonymous", "tabular", "structured"]
MODEL_NAMES: tuple[str, ...] = ("auto", "neural", "anonymous", "tabular", "structured")


def auto_model_name(truth_like: Mechanism) -> str:
    """The family ``model="auto"`` picks for a game.

    Anonymous games too large for a payoff table get the anonymous count network (E4); every other game
    gets the unstructured neural joint network, as in the paper's E1-E3.
    """
    too_large = truth_like.n_joint_actions > DEFAULT_MAX_TABLE_SIZE
    if truth_like.family == "anonymous" or (truth_like.anonymous and too_large):
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


def build_model(
    model: str | Mechanism,
    truth_like: Mechanism,
    *,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
) -> Mechanism:
    """The mechanism model to fit, sized like ``truth_like`` (the environment's mechanism).

    Args:
        model: ``"auto"``, ``"neural"`` (the reference joint network), ``"anonymous"`` (count network),
            ``"tabular"`` (a free table of all ``A**N`` joint actions, zero init), ``"structured"`` (the
            environment's own family, random init), or a :class:`~mechgym.mechanisms.Mechanism` instance
            (any subclass works as a model).
        truth_like: A mechanism with the game's sizes and family; only its architecture is used.
        seed: Seed of the model's initialisation.
        model_kwargs: Extra constructor arguments (e.g. ``{"hidden": 64}``).

    Raises:
        ConfigurationError: for an unknown model name, a size mismatch, or a table too large.
    """
    n, a = truth_like.n_agents, truth_like.n_actions
    if isinstance(model, Mechanism):
        if (model.n_agents, model.n_actions) != (n, a):
            raise ConfigurationError(
                f"the model has {model.n_agents} agents x {model.n_actions} actions but the game has {n} x {a}"
            )
        return model
    if not isinstance(model, str) or model not in MODEL_NAMES:
        raise ConfigurationError(suggest(str(model), MODEL_NAMES, "model"))
    kwargs = dict(model_kwargs or {})
    name = auto_model_name(truth_like) if model == "auto" else model
    if name == "neural":
        return NeuralJointMechanism(n, a, seed=seed, **kwargs)
    if name == "anonymous":
        return AnonymousCountMechanism(n, a, seed=seed, **kwargs)
    if name == "tabular":
        return TabularMechanism(n, a, seed=seed, **kwargs)
    if truth_like.family not in MECHANISM_FAMILIES:
        raise ConfigurationError(f"model='structured' needs a registered family; got {truth_like.family!r}")
    return _structured_model(truth_like, seed)
