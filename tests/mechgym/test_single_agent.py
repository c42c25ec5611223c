"""The single-agent Gymnasium view: registry, Gymnasium and SB3 checkers, the simulated others, seeding."""

from __future__ import annotations

import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as check_gymnasium_env
from gymnasium.utils.env_checker import data_equivalence

from mechgym.errors import ConfigurationError, InvalidActionError
from mechgym.learners import LearnerPolicy, LogitQ
from mechgym.loop import play_episodes
from mechgym.registration import make, registered_ids, spec
from mechgym.single_agent import FixedPolicy, SingleAgentView


def short_kwargs(env_id: str) -> dict[str, int]:
    return {"n_rounds": 5} if "n_rounds" in spec(env_id).kwargs else {}


RENDER_MODES = [None, *SingleAgentView.metadata["render_modes"]]


@pytest.mark.parametrize("render_mode", RENDER_MODES)
@pytest.mark.parametrize("env_id", registered_ids())
def test_gymnasium_make_and_check_env(env_id: str, render_mode: str | None) -> None:
    """Gymnasium's checker, which also renders every declared mode of the spec (nothing may warn)."""
    env = gymnasium.make(env_id, render_mode=render_mode, **short_kwargs(env_id))
    view = env.unwrapped
    assert isinstance(view, SingleAgentView)
    assert view.env.env_id == env_id and view.render_mode == render_mode
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings
        check_gymnasium_env(view)


@pytest.mark.parametrize("render_mode", RENDER_MODES)
@pytest.mark.parametrize("env_id", registered_ids())
def test_stable_baselines3_check_env(env_id: str, render_mode: str | None) -> None:
    env_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    view = gymnasium.make(env_id, render_mode=render_mode, **short_kwargs(env_id)).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env_checker.check_env(view, warn=True, skip_render_check=False)


def test_gymnasium_make_with_module_prefix() -> None:
    view = gymnasium.make("mechgym:mechgym/PublicGoods-v0").unwrapped
    assert isinstance(view, SingleAgentView) and view.env.env_id == "mechgym/PublicGoods-v0"


def test_gymnasium_make_passes_view_and_game_kwargs() -> None:
    view = gymnasium.make(
        "mechgym/Congestion-v0", agent=2, others="uniform", n_rounds=7, pricing="subsidy", render_mode="ansi"
    ).unwrapped
    assert isinstance(view, SingleAgentView)
    assert view.agent == "agent_2" and view.env.n_rounds == 7
    assert view.env.env_kwargs["pricing"] == "subsidy" and view.render_mode == "ansi"
    view.reset(seed=0)
    view.step(1)
    assert "actions:" in (view.render() or "")


def test_episode_truncates_after_n_rounds() -> None:
    view = SingleAgentView(make("mechgym/PublicGoods-v0", n_rounds=3))
    observation, info = view.reset(seed=0)
    assert view.observation_space.contains(observation) and info == {}
    for t in range(3):
        observation, reward, terminated, truncated, info = view.step(t)
        assert type(reward) is float and terminated is False and truncated is (t == 2)
        assert info["round"] == t and info["counterfactual_payoffs"].shape == (7,)


def test_others_are_learner_policies_with_the_rollout_draws() -> None:
    """Driving agent 0 with its own LearnerPolicy reproduces the PettingZoo loop's episode exactly."""
    game = make("mechgym/Congestion-v0", n_rounds=10)
    reference = play_episodes(game, None, n_episodes=1, seed=4)
    view = SingleAgentView(make("mechgym/Congestion-v0", n_rounds=10))
    view.reset(seed=4)
    me = LearnerPolicy(game.default_learner, game.n_actions, 0, seed=4, episode=0)
    rewards = []
    for _ in range(10):
        action = me.act()
        _, reward, _, _, info = view.step(action)
        me.observe(info["counterfactual_payoffs"], action)
        rewards.append(reward)
    assert reference.rewards is not None
    np.testing.assert_array_equal(np.asarray(rewards, dtype=np.float32), reference.rewards[0, :, 0])
    assert view.env.state().reshape(4, 5).argmax(-1).tolist() == reference.actions[0, -1].tolist()


def test_unseeded_resets_play_the_next_episodes_of_the_last_seed() -> None:
    def trajectory(view: SingleAgentView, seed: int | None) -> list[float]:
        view.reset(seed=seed)
        return [view.step(0)[1] for _ in range(6)]

    a = SingleAgentView(make("mechgym/Congestion-v0", n_rounds=6))
    b = SingleAgentView(make("mechgym/Congestion-v0", n_rounds=6))
    first, second = trajectory(a, 9), trajectory(a, None)
    assert trajectory(b, 9) == first and trajectory(b, None) == second
    assert first != second
    assert a.others["agent_1"].episode == 1


@pytest.mark.parametrize("others", ["uniform", [0.0, 0.0, 1.0, 0.0, 0.0]])
def test_fixed_others(others: str | list[float]) -> None:
    view = SingleAgentView(make("mechgym/Congestion-v0", n_rounds=5), agent=1, others=others)
    view.reset(seed=0)
    assert all(isinstance(policy, FixedPolicy) for policy in view.others.values())
    assert set(view.others) == {"agent_0", "agent_2", "agent_3"}
    view.step(0)
    played = view.env.state().reshape(4, 5).argmax(-1)
    if not isinstance(others, str):
        assert played.tolist() == [2, 0, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agent": 4}, r"agent must be an index in \[0, 4\)"),
        ({"others": "random"}, "'learners', 'uniform' or a probability vector"),
        ({"others": [0.5, 0.5]}, r"shape \(5,\)"),
        ({"others": [0.5, 0.5, 0.5, -0.5, 0.0]}, "non-negative and sum to 1"),
        ({"others_learner": "logit_q"}, "Learner"),
    ],
)
def test_view_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SingleAgentView(make("mechgym/Congestion-v0"), **kwargs)  # type: ignore[arg-type]


def test_learners_need_counterfactual_infos() -> None:
    with pytest.raises(ConfigurationError, match="counterfactual_info=True"):
        SingleAgentView(make("mechgym/Congestion-v0", counterfactual_info=False))
    SingleAgentView(make("mechgym/Congestion-v0", counterfactual_info=False), others="uniform")


def test_others_learner_and_invalid_action() -> None:
    learner = LogitQ(alpha=0.9, beta=9.0, epsilon=0.0)
    view = gymnasium.make("mechgym/Congestion-v0", others_learner=learner.to_dict()).unwrapped
    assert isinstance(view, SingleAgentView)
    view.reset(seed=0)
    assert all(policy.learner == learner for policy in view.others.values())  # type: ignore[union-attr]
    with pytest.raises(InvalidActionError, match="got 5 for agent_0"):
        view.step(5)


def test_pickled_view_continues_identically() -> None:
    view = SingleAgentView(make("mechgym/NeuralMechanism-v0", n_rounds=5))
    view.reset(seed=1)
    view.step(3)
    other = pickle.loads(pickle.dumps(view))
    for part_a, part_b in zip(view.step(2), other.step(2), strict=True):
        assert data_equivalence(part_a, part_b, exact=True)


@pytest.mark.slow
def test_ppo_trains_on_the_view() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    env = gymnasium.make("mechgym/Congestion-v0", n_rounds=16)
    model = sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    env.step(action)
