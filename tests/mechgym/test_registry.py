"""The registry: make/spec/register/registered_ids/pprint_registry, kwargs, provenance and suggestions."""

from __future__ import annotations

import json

import gymnasium
import pettingzoo
import pytest
import torch

from mechgym import envs
from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError, MechGymError, UnknownEnvironmentError
from mechgym.learners import LogitQ
from mechgym.registration import make, pprint_registry, register, registered_ids, spec

BUILTINS = {
    # id: (family, n_agents, n_actions, n_rounds, default learner)
    "mechgym/NeuralMechanism-v0": ("neural", 3, 6, 60, LogitQ(0.25, 3.0, 0.06)),
    "mechgym/Congestion-v0": ("congestion", 4, 5, 60, LogitQ(0.25, 3.0, 0.06)),
    "mechgym/PublicGoods-v0": ("public_goods", 3, 7, 60, LogitQ(0.25, 3.0, 0.06)),
    "mechgym/AnonymousGame-v0": ("anonymous", 40, 10, 30, LogitQ(alpha=0.2, beta=6.0, epsilon=0.02)),
}


def same_payoffs(a: MechanismGameEnv, b: MechanismGameEnv) -> bool:
    joint = torch.randint(0, a.n_actions, (16, a.n_agents), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.mechanism(joint), b.mechanism(joint))


@pytest.mark.parametrize("env_id", list(BUILTINS))
def test_builtin_defaults(env_id: str) -> None:
    family, n_agents, n_actions, n_rounds, learner = BUILTINS[env_id]
    assert env_id in registered_ids()
    env = make(env_id)
    assert isinstance(env, MechanismGameEnv)
    assert (env.mechanism.family, env.n_agents, env.n_actions, env.n_rounds) == (family, n_agents, n_actions, n_rounds)
    assert env.default_learner == learner
    assert env.mechanism.frozen
    assert env.env_id == env_id
    assert {"n_agents", "n_actions", "n_rounds", "mechanism_seed"} <= set(env.env_kwargs)
    assert "render_mode" not in env.env_kwargs
    assert json.loads(json.dumps(env.env_kwargs)) == env.env_kwargs


@pytest.mark.parametrize("env_id", list(BUILTINS))
def test_env_kwargs_rebuild_the_same_game(env_id: str) -> None:
    env = make(env_id, mechanism_seed=3, n_rounds=9)
    rebuilt = make(env_id, **env.env_kwargs)
    assert rebuilt.env_kwargs == env.env_kwargs
    assert rebuilt.n_rounds == 9
    assert same_payoffs(env, rebuilt)
    assert not same_payoffs(env, make(env_id))  # the seed matters


def test_family_specific_kwargs() -> None:
    env = make("mechgym/Congestion-v0", pricing="subsidy", n_agents=6, n_actions=3)
    assert env.mechanism.pricing == "subsidy"  # type: ignore[comparison-overlap]
    assert (env.n_agents, env.n_actions) == (6, 3)
    assert env.env_kwargs["pricing"] == "subsidy"
    goods = make("mechgym/PublicGoods-v0", cost=0.5, hidden=8)
    assert float(goods.mechanism.cost) == 0.5 and goods.mechanism.hidden == 8
    assert make("mechgym/AnonymousGame-v0", n_agents=5, hidden=16).mechanism.hidden == 16
    assert make("mechgym/NeuralMechanism-v0", embed_dim=4).mechanism.embed_dim == 4


def test_default_learner_override() -> None:
    learner = LogitQ(alpha=0.5, beta=1.0, epsilon=0.1)
    from_object = make("mechgym/Congestion-v0", default_learner=learner)
    assert from_object.default_learner == learner
    assert from_object.env_kwargs["default_learner"] == learner.to_dict()
    from_dict = make("mechgym/Congestion-v0", **from_object.env_kwargs)
    assert from_dict.default_learner == learner
    with pytest.raises(ConfigurationError, match="learner"):
        make("mechgym/Congestion-v0", default_learner={"name": "logit_qq", "params": {}})


@pytest.mark.parametrize(
    "wrong", ["mechgym/Congestion-v1", "Congestion-v0", "mechgym/congestion-v0", "mechgym/Congestoin-v0", "congestion"]
)
def test_unknown_id_suggests_a_close_one(wrong: str) -> None:
    with pytest.raises(UnknownEnvironmentError, match=r"Did you mean 'mechgym/Congestion-v0'") as info:
        make(wrong)
    assert isinstance(info.value, KeyError) and isinstance(info.value, MechGymError)
    assert "mechgym/PublicGoods-v0" in str(info.value)  # the known ids are listed


def test_unknown_id_far_from_everything() -> None:
    with pytest.raises(UnknownEnvironmentError, match=r"mechgym\.register"):
        spec("elsewhere/Nothing-v3")


@pytest.mark.parametrize("wrong", [None, 3, "bad id!"])
def test_malformed_ids(wrong: object) -> None:
    with pytest.raises(UnknownEnvironmentError, match="mechgym/Congestion-v0"):
        make(wrong)  # type: ignore[arg-type]


def test_pettingzoo_game_is_not_a_mechgym_game() -> None:
    with pytest.raises(UnknownEnvironmentError, match="PettingZoo environment"):
        make("classic/rps-v2")


def test_unversioned_id_resolves_to_the_latest_version() -> None:
    assert spec("mechgym/Congestion").id == "mechgym/Congestion-v0"
    assert make("mechgym/Congestion").env_id == "mechgym/Congestion-v0"


def test_bad_kwargs_name_the_accepted_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"'n_agent'.*Did you mean 'n_agents'.*pricing"):
        make("mechgym/Congestion-v0", n_agent=3)
    with pytest.raises(ConfigurationError, match="JSON"):
        make("mechgym/Congestion-v0", mechanism_seed=object())
    with pytest.raises(ConfigurationError, match="pricing"):
        make("mechgym/Congestion-v0", pricing="free")
    with pytest.raises(ConfigurationError, match="n_rounds"):
        make("mechgym/Congestion-v0", n_rounds=0)


def test_spec_is_pettingzoos() -> None:
    found = spec("mechgym/Congestion-v0")
    assert isinstance(found, pettingzoo.EnvSpec)
    assert found.kwargs == {"n_agents": 4, "n_actions": 5, "n_rounds": 60, "mechanism_seed": 0, "pricing": "toll"}
    assert isinstance(pettingzoo.make("parallel", "mechgym/Congestion-v0"), MechanismGameEnv)


def test_pprint_registry(capsys: pytest.CaptureFixture[str]) -> None:
    text = pprint_registry(disable_print=True)
    assert text is not None
    for env_id, (family, n_agents, n_actions, n_rounds, _) in BUILTINS.items():
        line = next(line for line in text.splitlines() if line.startswith(env_id))
        assert family in line and f"{n_agents} agents" in line and f"{n_actions} actions" in line
        assert f"{n_rounds} rounds" in line
    assert pprint_registry() is None
    assert capsys.readouterr().out.strip() == text.strip()


# -- third-party registration ------------------------------------------------------------------------
def test_register_a_string_entry_point() -> None:
    register("testreg/TwoCommuters-v0", "mechgym.envs:make_congestion_env", {"n_agents": 2, "n_rounds": 5})
    assert "testreg/TwoCommuters-v0" in registered_ids()
    env = make("testreg/TwoCommuters-v0", n_actions=3)
    assert (env.n_agents, env.n_actions, env.n_rounds) == (2, 3, 5)
    assert env.env_id == "testreg/TwoCommuters-v0" and env.env_kwargs["n_agents"] == 2
    view = gymnasium.make("testreg/TwoCommuters-v0")
    assert view.unwrapped.env.env_id == "testreg/TwoCommuters-v0"  # type: ignore[attr-defined]


def test_register_without_single_agent_view() -> None:
    register("testreg/ParallelOnly-v0", envs.make_public_goods_env, single_agent=False)
    assert make("testreg/ParallelOnly-v0").n_agents == 3
    assert "testreg/ParallelOnly-v0" not in gymnasium.registry


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bad id!", envs.make_congestion_env), "Malformed"),
        (("testreg/Bad-v0", 42), "entry_point"),
        (("testreg/Bad-v0", "no_colon_here"), "entry_point"),
        (("testreg/Bad-v0", envs.make_congestion_env, {"n_agent": 2}), "Did you mean 'n_agents'"),
        (("testreg/Bad-v0", envs.make_congestion_env, {"n_agents": object()}), "JSON"),
    ],
)
def test_register_validation(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        register(*args)  # type: ignore[arg-type]
    assert "testreg/Bad-v0" not in registered_ids()


def test_entry_point_that_is_not_a_mechanism_game() -> None:
    register("testreg/NotAGame-v0", lambda: object(), single_agent=False)
    with pytest.warns(UserWarning, match="ParallelEnv"), pytest.raises(ConfigurationError, match="MechanismGameEnv"):
        make("testreg/NotAGame-v0")
    with pytest.warns(UserWarning, match="ParallelEnv"):
        listing = pprint_registry(disable_print=True) or ""
    assert "testreg/NotAGame-v0  (cannot be built" in listing


def test_suggestions_put_the_same_name_in_another_namespace_first() -> None:
    from mechgym.errors import suggest

    ids = ["zoo/BPRCongestion-v0", "zoo/BPRCongestionStrong-v0", "mechgym/Congestion-v0"]
    for wrong in ("Congestion-v0", "congestion", "mechgym/congestion-v0", "other/Congestion-v0"):
        assert suggest(wrong, ids, "id").split("Did you mean ")[1].startswith("'mechgym/Congestion-v0'"), wrong
