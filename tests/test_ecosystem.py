"""The ecosystem's standard calls on mechgym ids, and the rendering they rely on.

Stable-Baselines3's ``make_vec_env`` and PPO, Gymnasium's ``make_vec`` (sync and async), PettingZoo's
``render_test``, the ``rgb_array`` frame, and ``gymnasium.make("mechgym:...")`` in a fresh interpreter.
PettingZoo's four API and seed checks on every id are in tests/test_conformance.py; Gymnasium's and SB3's
``check_env`` on the single-agent view, in every render mode, in tests/mechgym/test_single_agent.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from typing import Any

import gymnasium
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test as check_parallel_api
from pettingzoo.test import render_test as check_render
from pettingzoo.utils.conversions import parallel_to_aec

from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError
from mechgym.registration import make, registered_ids, spec
from mechgym.single_agent import SingleAgentView

#: Colours of the rgb_array frame (docs/environments.md, "Rendering").
PLAYED, GAIN, LOSS, PROGRESS = (31, 119, 180), (44, 160, 44), (214, 39, 40), (110, 110, 110)


def short_kwargs(env_id: str, n_rounds: int = 6) -> dict[str, int]:
    return {"n_rounds": n_rounds} if "n_rounds" in spec(env_id).kwargs else {}


# -- Stable-Baselines3 ---------------------------------------------------------------------------------
def test_sb3_make_vec_env_and_ppo() -> None:
    """SB3's standard call: it asks for render_mode="rgb_array" and falls back only on a TypeError."""
    sb3 = pytest.importorskip("stable_baselines3")
    env_util = pytest.importorskip("stable_baselines3.common.env_util")
    vec_env = env_util.make_vec_env("mechgym/Congestion-v0", n_envs=2)
    assert vec_env.num_envs == 2 and vec_env.render_mode == "rgb_array"
    model = sb3.PPO("MlpPolicy", vec_env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    assert model.num_timesteps == 128
    frames = vec_env.get_images()
    assert len(frames) == 2
    assert all(frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 for frame in frames)
    actions, _ = model.predict(vec_env.reset(), deterministic=True)
    assert actions.shape == (2,) and all(0 <= action < 5 for action in actions)


@pytest.mark.parametrize("env_id", registered_ids())
def test_sb3_make_vec_env_builds_every_id(env_id: str) -> None:
    env_util = pytest.importorskip("stable_baselines3.common.env_util")
    vec_env = env_util.make_vec_env(env_id, n_envs=2, seed=0, env_kwargs=short_kwargs(env_id))
    observations = vec_env.reset()
    assert observations.shape == (2, *vec_env.observation_space.shape)
    vec_env.step(np.zeros(2, dtype=np.int64))
    assert all(isinstance(frame, np.ndarray) for frame in vec_env.get_images())
    vec_env.close()


# -- Gymnasium -------------------------------------------------------------------------------------
def play_vector(mode: str, n_rounds: int = 5) -> list[tuple[np.ndarray, ...]]:
    """One episode of ``gymnasium.make_vec`` with fixed actions, and the autoreset step after it."""
    vec_env = gymnasium.make_vec("mechgym/Congestion-v0", num_envs=2, vectorization_mode=mode, n_rounds=n_rounds)
    try:
        observations, _ = vec_env.reset(seed=0)
        assert observations.shape == (2, 5) and observations.dtype == np.float32
        steps: list[tuple[np.ndarray, ...]] = []
        for t in range(n_rounds + 1):
            observations, rewards, terminated, truncated, _ = vec_env.step(np.array([t % 5, (t + 2) % 5]))
            steps.append((observations, rewards, terminated, truncated))
        return steps
    finally:
        vec_env.close()


def test_gymnasium_make_vec_sync_and_async_agree() -> None:
    sync, asynchronous = play_vector("sync"), play_vector("async")
    for (_, rewards, terminated, truncated), t in zip(sync, range(6), strict=True):
        assert not terminated.any()
        assert truncated.tolist() == [t == 4] * 2  # the episode is truncated after n_rounds = 5 steps
        if t < 5:
            assert (rewards < 0).all()  # tolls and congestion costs: every payoff of the game is negative
    for sync_step, async_step in zip(sync, asynchronous, strict=True):
        for sync_part, async_part in zip(sync_step, async_step, strict=True):
            np.testing.assert_array_equal(sync_part, async_part)


def test_gymnasium_make_vec_vector_kwargs() -> None:
    """Keyword arguments of the view and of the game pass through ``make_vec``."""
    vec_env = gymnasium.make_vec("mechgym/Congestion-v0", num_envs=3, others="uniform", n_rounds=4, pricing="subsidy")
    view = vec_env.envs[0].unwrapped  # type: ignore[attr-defined]
    assert isinstance(view, SingleAgentView) and view.env.env_kwargs["pricing"] == "subsidy"
    assert vec_env.reset(seed=1)[0].shape == (3, 5)
    vec_env.close()


FRESH_INTERPRETER = textwrap.dedent(
    """
    import sys
    import gymnasium
    assert "mechgym" not in sys.modules
    try:
        gymnasium.make("mechgym/Congestion-v0")
    except gymnasium.error.NamespaceNotFound as error:
        print("without the prefix:", error)
    else:
        raise AssertionError("gymnasium found mechgym's ids without importing mechgym")
    assert "mechgym" not in sys.modules

    env = gymnasium.make("mechgym:mechgym/Congestion-v0", n_rounds=3)
    assert "mechgym" in sys.modules
    observation, info = env.reset(seed=0)
    assert observation.shape == (5,)
    vec_env = gymnasium.make_vec("mechgym:mechgym/PublicGoods-v0", num_envs=2, vectorization_mode="sync")
    assert vec_env.reset(seed=0)[0].shape == (2, 7)
    print("ok:", type(env.unwrapped).__name__)
    """
)


def test_gymnasium_make_with_the_module_prefix_in_a_fresh_interpreter() -> None:
    """Gymnasium 1.x loads no plugins: ``"mechgym:mechgym/..."`` imports mechgym first, a bare id does not."""
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_INTERPRETER], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Namespace mechgym not found" in completed.stdout
    assert "ok: SingleAgentView" in completed.stdout


# -- PettingZoo ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", registered_ids())
def test_pettingzoo_render_test(env_id: str) -> None:
    """PettingZoo's render test in every declared mode, through the AEC conversion as it requires.

    ``render_test`` first builds the game with ``render_mode="human"`` only to read its metadata; mechgym
    opens no window and refuses that mode, so the factory builds that probe without a render mode.
    """

    def make_aec(render_mode: str | None = None) -> Any:
        mode = None if render_mode == "human" else render_mode
        return parallel_to_aec(make(env_id, render_mode=mode, **short_kwargs(env_id, n_rounds=3)))

    check_render(make_aec)


def test_pettingzoo_parallel_api_test_in_every_render_mode() -> None:
    """tests/test_conformance.py checks every id without a render mode; the checks pass while rendering too."""
    for mode in MechanismGameEnv.metadata["render_modes"]:
        env = make("mechgym/PublicGoods-v0", n_rounds=4, render_mode=mode)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Observation numpy array is all zeros")
            check_parallel_api(env, num_cycles=10)
        assert env.render_mode == mode


# -- render modes ----------------------------------------------------------------------------------
def test_render_modes_are_declared_alike() -> None:
    assert MechanismGameEnv.metadata["render_modes"] == ["ansi", "rgb_array"]
    assert SingleAgentView.metadata["render_modes"] == MechanismGameEnv.metadata["render_modes"]
    assert SingleAgentView.metadata["render_fps"] == MechanismGameEnv.metadata["render_fps"] > 0


@pytest.mark.parametrize(
    ("render_mode", "message"),
    [
        ("human", r"unknown render_mode 'human'\. Known: ansi, rgb_array\. Pass None .* opens no window"),
        ("rgb", r"unknown render_mode 'rgb'\. Did you mean 'rgb_array'\?"),
        ("rgb_array_list", r"Did you mean 'rgb_array'\?"),
        (3, r"unknown render_mode '3'\. Known: ansi, rgb_array"),
    ],
)
def test_unknown_render_modes_are_refused_clearly(render_mode: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make("mechgym/Congestion-v0", render_mode=render_mode)
    with pytest.raises(ConfigurationError, match=message):
        gymnasium.make("mechgym/Congestion-v0", render_mode=render_mode)


def step_frame(env: MechanismGameEnv, actions: list[int]) -> tuple[np.ndarray, list[float]]:
    _, rewards, _, _, _ = env.step({agent: action for agent, action in zip(env.agents, actions, strict=True)})
    return env.render(), [rewards[agent] for agent in env.possible_agents]  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("env_id", "shape"), [("mechgym/Congestion-v0", (88, 176, 3)), ("mechgym/PublicGoods-v0", (72, 240, 3))]
)
def test_rgb_array_frame_shows_the_actions_and_payoffs(env_id: str, shape: tuple[int, int, int]) -> None:
    env = make(env_id, n_rounds=4, render_mode="rgb_array")
    env.reset(seed=0)
    empty = env.render()
    assert isinstance(empty, np.ndarray) and empty.dtype == np.uint8 and empty.shape == shape
    assert not (empty == PLAYED).all(-1).any()  # nothing played yet
    n, a = env.n_agents, env.n_actions
    cell = 16  # pixels per cell for these sizes
    top = cell // 2 + cell
    centre = a * cell + cell + a * cell // 2
    frames = []
    for t in range(4):
        actions = [(i + t) % a for i in range(n)]
        frame, rewards = step_frame(env, actions)
        frames.append(frame)
        assert frame.shape == shape  # the same size every round, for videos
        for i, action in enumerate(actions):
            y = top + i * cell + cell // 2
            played = [(frame[y, j * cell + cell // 2] == PLAYED).all() for j in range(a)]
            assert played == [j == action for j in range(a)]  # agent i's row marks its action only
            right, left = frame[y, centre + 1], frame[y, centre - 2]
            assert (right == GAIN).all() == (rewards[i] > 0) and (left == LOSS).all() == (rewards[i] < 0)
        largest = int(np.argmax(np.abs(rewards)))
        y = top + largest * cell + cell // 2
        colour = GAIN if rewards[largest] > 0 else LOSS
        edge = frame.shape[1] - 1 if rewards[largest] > 0 else centre - a * cell // 2
        assert (frame[y, edge] == colour).all()  # the largest |payoff| fills its half of the bar area
        progress = (frame[0] == PROGRESS).all(-1).sum()
        assert progress == frame.shape[1] * (t + 1) // 4  # the strip fills as the rounds are played
    assert not np.array_equal(frames[0], frames[1])


def test_rgb_array_frame_of_a_large_game() -> None:
    env = make("mechgym/AnonymousGame-v0", n_agents=1000, n_actions=100, n_rounds=2, render_mode="rgb_array")
    env.reset(seed=0)
    frame, rewards = step_frame(env, [i % 100 for i in range(1000)])
    assert frame.shape == (1003, 201, 3) and frame.dtype == np.uint8
    assert (frame[3 + 999, 99] == PLAYED).all()  # one pixel per agent and action from 256 of them on
    assert len(rewards) == 1000


def test_single_agent_view_renders_the_game() -> None:
    env = gymnasium.make("mechgym/Congestion-v0", n_rounds=3, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(2)
    frame = env.render()
    view = env.unwrapped
    assert isinstance(frame, np.ndarray)
    assert isinstance(view, SingleAgentView) and view.render_mode == "rgb_array"
    np.testing.assert_array_equal(frame, view.env.render())
    assert (frame[24 + 8, 2 * 16 + 8] == PLAYED).all()  # agent_0 (the learner) played action 2
