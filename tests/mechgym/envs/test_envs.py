"""The built-in games as data: the records, the one GameFactory, explicit registration and the generated docs table."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import gymnasium
import pytest
import torch
from torch import Tensor

import mechgym
from mechgym import envs
from mechgym.env import MechanismGameEnv
from mechgym.envs import BUILTIN_ENVS, GameFactory, markdown_table
from mechgym.errors import ConfigurationError
from mechgym.learners import Hedge, LogitQ
from mechgym.mechanisms import AnonymousMechanism, CongestionMechanism, TabularMechanism

ROOT = Path(__file__).resolve().parents[3]  # tests/mechgym/envs/ -> the repository
TABLE = re.compile(
    r"<!-- BEGIN mechgym list --markdown \(generated: do not edit\) -->\n(.*?)<!-- END mechgym list --markdown -->",
    re.DOTALL,
)


class Minority(AnonymousMechanism):
    """A minority game without a seed: ``u_i = bonus * a_i - (share of the others on a_i)``."""

    family = "test_envs_minority"

    def __init__(self, n_agents: int = 3, n_actions: int = 2, bonus: float = 0.5) -> None:
        super().__init__(n_agents, n_actions)
        self.bonus = float(bonus)

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        crowd = other_counts.gather(-1, actions[..., None]).squeeze(-1) / (self.n_agents - 1)
        return self.bonus * actions / max(self.n_actions - 1, 1) - crowd


def test_the_docs_table_is_the_generated_one() -> None:
    found = TABLE.search((ROOT / "docs" / "environments.md").read_text(encoding="utf-8"))
    assert found is not None, "docs/environments.md lost its generated table markers"
    assert found.group(1) == markdown_table(), "regenerate the table of docs/environments.md: mechgym list --markdown"


def test_the_table_has_a_row_per_record_from_the_data() -> None:
    lines = markdown_table().splitlines()
    assert len(lines) == 2 + len(BUILTIN_ENVS)
    for record, line in zip(BUILTIN_ENVS, lines[2:], strict=True):
        factory = record.factory
        assert line.startswith(f"| `{record.env_id}` | {record.description} |")
        assert f"| {factory.n_agents} × {factory.n_actions} | {factory.n_rounds} |" in line
        assert f"`{factory.default_learner!r}`" in line and factory.mechanism.__name__ in line
    assert '`pricing="toll"`' in lines[3] and "`hidden=64`" in lines[4]


def test_every_record_is_registered_once_with_its_factory() -> None:
    for record in BUILTIN_ENVS:
        spec = mechgym.spec(record.env_id)
        assert spec.entry_point is record.factory
        assert spec.kwargs == record.factory.spec_kwargs()
        assert record.env_id in gymnasium.registry
        env = mechgym.make(record.env_id)
        assert isinstance(env.mechanism, record.factory.mechanism)
        assert env.default_learner == record.factory.default_learner
    with warnings.catch_warnings(record=True) as caught:  # registering again is a no-op, not an override
        warnings.simplefilter("always")
        envs.register_builtins()
    assert caught == []


def test_the_make_functions_are_the_factories() -> None:
    assert envs.make_congestion_env is BUILTIN_ENVS[1].factory
    env = envs.make_congestion_env(n_agents=2, pricing="subsidy")
    assert isinstance(env, MechanismGameEnv) and env.mechanism.pricing == "subsidy"
    assert (env.n_agents, env.n_actions, env.n_rounds) == (2, 5, 60)


def test_the_signature_lists_the_game_and_the_family_options() -> None:
    parameters = inspect.signature(envs.make_public_goods_env).parameters
    assert list(parameters) == [
        "n_agents",
        "n_actions",
        "n_rounds",
        "mechanism_seed",
        "k",
        "scale",
        "cost",
        "hidden",
        "default_learner",
        "counterfactual_info",
        "render_mode",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert parameters["cost"].default == 0.8 and parameters["n_actions"].default == 7
    assert envs.make_congestion_env.family_options() == {"pricing": "toll"}


def test_the_factory_checks_its_keyword_arguments() -> None:
    with pytest.raises(ConfigurationError, match=r"'hiden'.*Did you mean 'hidden'.*GameFactory\(PublicGoods"):
        envs.make_public_goods_env(hiden=8)
    with pytest.raises(ConfigurationError, match="pricing"):
        envs.make_congestion_env(pricing="free")


def test_the_mechanism_seed_is_the_mechanism_seed() -> None:
    a, b = envs.make_neural_env(mechanism_seed=4), envs.make_neural_env(mechanism_seed=4)
    joint = torch.tensor([[0, 1, 2], [5, 4, 3]])
    assert torch.equal(a.mechanism(joint), b.mechanism(joint))
    assert not torch.equal(a.mechanism(joint), envs.make_neural_env().mechanism(joint))


def test_a_third_party_game_through_the_factory() -> None:
    factory = GameFactory(Minority, n_agents=4, n_actions=3, n_rounds=6, default_learner=Hedge())
    assert "mechanism_seed" not in inspect.signature(factory).parameters  # Minority takes no seed
    mechgym.register("testenvs/Minority-v0", factory, factory.spec_kwargs())
    env = mechgym.make("testenvs/Minority-v0", bonus=0.25)
    assert env.mechanism.bonus == 0.25 and env.default_learner == Hedge()
    assert env.env_kwargs == {
        "n_agents": 4,
        "n_actions": 3,
        "n_rounds": 6,
        "bonus": 0.25,
        "default_learner": None,
        "counterfactual_info": True,
    }
    assert mechgym.make("testenvs/Minority-v0", **env.env_kwargs).mechanism.bonus == 0.25
    traces = mechgym.rollout(env, n_episodes=2, seed=0)
    assert traces.metadata.env_id == "testenvs/Minority-v0"


def test_pinned_options_override_the_constructor_default() -> None:
    subsidy = GameFactory(CongestionMechanism, n_agents=3, n_actions=2, n_rounds=5, options={"pricing": "subsidy"})
    assert subsidy.spec_kwargs()["pricing"] == "subsidy"
    assert subsidy().mechanism.pricing == "subsidy"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mechanism": LogitQ}, "Mechanism subclass"),
        ({"mechanism": CongestionMechanism, "n_agents": 0}, "n_agents"),
        ({"mechanism": CongestionMechanism, "default_learner": "logit_q"}, "default_learner"),
        ({"mechanism": CongestionMechanism, "options": {"prcing": "toll"}}, "Did you mean 'pricing'"),
    ],
)
def test_factory_validation(kwargs: dict[str, object], message: str) -> None:
    arguments = {"n_agents": 3, "n_actions": 2, "n_rounds": 5, **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        GameFactory(**arguments)  # type: ignore[arg-type]


def test_a_constructor_with_kwargs_is_refused() -> None:
    class Loose(TabularMechanism):
        def __init__(self, n_agents: int = 2, n_actions: int = 2, **kwargs: object) -> None:
            super().__init__(n_agents, n_actions)

    with pytest.raises(ConfigurationError, match=r"\*\*kwargs"):
        GameFactory(Loose, n_agents=2, n_actions=2, n_rounds=3)
