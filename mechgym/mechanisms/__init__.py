"""Mechanism families: torch modules from joint actions to payoffs, with fast counterfactual paths."""

from __future__ import annotations

from typing import Any

from mechgym.errors import ConfigurationError, suggest
from mechgym.mechanisms.additive_counts import AdditiveCountMechanism
from mechgym.mechanisms.aggregate_counts import AggregateCountMechanism, aggregate_parameter_count
from mechgym.mechanisms.anonymous import AnonymousCountMechanism
from mechgym.mechanisms.base import (
    AnonymousMechanism,
    Mechanism,
    action_counts,
    all_joint_actions,
    gather_counterfactuals,
    validate_joint_actions,
)
from mechgym.mechanisms.congestion import CongestionMechanism
from mechgym.mechanisms.interaction import InteractionMechanism, TotalsInteractionMechanism
from mechgym.mechanisms.neural import NeuralJointMechanism
from mechgym.mechanisms.public_goods import PublicGoodsMechanism
from mechgym.mechanisms.tabular import TabularMechanism

#: Mechanism classes by family name; :func:`register_family` adds third-party ones.
MECHANISM_FAMILIES: dict[str, type[Mechanism]] = {
    cls.family: cls
    for cls in (
        NeuralJointMechanism,
        CongestionMechanism,
        PublicGoodsMechanism,
        AnonymousCountMechanism,
        TabularMechanism,
        InteractionMechanism,
        TotalsInteractionMechanism,
        AdditiveCountMechanism,
        AggregateCountMechanism,
    )
}


def register_family(cls: type[Mechanism]) -> type[Mechanism]:
    """Make a third-party mechanism class buildable by name (usable as a class decorator)."""
    if not cls.family:
        raise ConfigurationError(f"{cls.__name__} needs a non-empty class attribute `family` to be registered")
    MECHANISM_FAMILIES[cls.family] = cls
    return cls


def build_mechanism(family: str, **config: Any) -> Mechanism:
    """Build a mechanism of a registered family from its :meth:`Mechanism.config` keyword arguments."""
    if family not in MECHANISM_FAMILIES:
        raise ConfigurationError(suggest(family, MECHANISM_FAMILIES, "mechanism family"))
    return MECHANISM_FAMILIES[family](**config)


__all__ = [
    "MECHANISM_FAMILIES",
    "AdditiveCountMechanism",
    "AggregateCountMechanism",
    "AnonymousCountMechanism",
    "AnonymousMechanism",
    "CongestionMechanism",
    "InteractionMechanism",
    "Mechanism",
    "NeuralJointMechanism",
    "PublicGoodsMechanism",
    "TabularMechanism",
    "TotalsInteractionMechanism",
    "action_counts",
    "aggregate_parameter_count",
    "all_joint_actions",
    "build_mechanism",
    "gather_counterfactuals",
    "register_family",
    "validate_joint_actions",
]
