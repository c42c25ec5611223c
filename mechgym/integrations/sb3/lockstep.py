"""Lockstep training: SB3 models that each drive a group of agents of one game, one round at a time.

A driver transcribes SB3's own ``collect_rollouts``/``learn`` loop (on-policy: PPO, A2C; off-policy: DQN)
for one model: :meth:`act` picks the model's actions for this round, :meth:`observe` stores the transitions
and trains when the model's schedule says so. :func:`play_lockstep` steps the game with the joint action of
every driver, so that all models learn from the same rounds (round-robin ``learn()`` calls would be a
different, alternating dynamic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.common.utils import obs_as_tensor
from tqdm.auto import tqdm

from mechgym.errors import ConfigurationError, MechGymError
from mechgym.integrations.sb3.vec_env import AgentsVecEnv


class LockstepSeat(gymnasium.Env[np.ndarray, np.int64]):
    """The spaces of one agent's seat, to build an independent model; :func:`train_sb3` steps the game itself."""

    def __init__(self, observation_space: gymnasium.spaces.Box, n_actions: int) -> None:
        self.observation_space = observation_space
        self.action_space = gymnasium.spaces.Discrete(n_actions)

    def _refuse(self) -> MechGymError:
        return MechGymError(
            "this model was trained in lockstep with the other agents by mechgym.integrations.sb3.train_sb3 and has "
            "no environment of its own; play the game with SB3Agents.act(observations) or model.predict(obs)"
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        raise self._refuse()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        raise self._refuse()


def _silent_logger() -> Logger:
    return Logger(folder=None, output_formats=[])


class OnPolicyDriver:
    """SB3's ``OnPolicyAlgorithm.collect_rollouts`` and ``learn`` loop, one round at a time."""

    def __init__(self, model: OnPolicyAlgorithm, total_timesteps: int, first_observation: np.ndarray) -> None:
        self.model = model
        model.set_logger(_silent_logger())
        model.num_timesteps = 0
        model._total_timesteps = total_timesteps
        model._last_obs = first_observation
        model._last_episode_starts = self._episode_starts = np.ones(model.n_envs, dtype=bool)
        model.rollout_buffer.reset()
        model.policy.set_training_mode(False)
        self._pending: tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor] | None = None

    def act(self, observation: np.ndarray) -> np.ndarray:
        model = self.model
        with torch.no_grad():
            actions, values, log_probs = model.policy(obs_as_tensor(observation, model.device))
        chosen = actions.cpu().numpy()
        self._pending = (observation, chosen, values, log_probs)
        return chosen

    def observe(
        self, new_observation: np.ndarray, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> None:
        assert self._pending is not None  # act() comes first
        model = self.model
        observation, actions, values, log_probs = self._pending
        model.num_timesteps += model.n_envs
        rewards = rewards.astype(np.float32)
        for j, done in enumerate(dones):
            # truncation is not termination: bootstrap with the value of the episode's last observation
            if done and infos[j].get("terminal_observation") is not None and infos[j].get("TimeLimit.truncated", False):
                terminal = model.policy.obs_to_tensor(infos[j]["terminal_observation"])[0]
                with torch.no_grad():
                    rewards[j] += model.gamma * float(model.policy.predict_values(terminal)[0].item())
        model.rollout_buffer.add(observation, actions.reshape(-1, 1), rewards, self._episode_starts, values, log_probs)
        model._last_obs = new_observation
        model._last_episode_starts = self._episode_starts = dones
        if model.rollout_buffer.full:
            with torch.no_grad():
                last_values = model.policy.predict_values(obs_as_tensor(new_observation, model.device))
            model.rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
            model._update_current_progress_remaining(model.num_timesteps, model._total_timesteps)
            model.train()
            model.rollout_buffer.reset()
            model.policy.set_training_mode(False)


class OffPolicyDriver:
    """SB3's ``OffPolicyAlgorithm.collect_rollouts`` and ``learn`` loop (DQN), one round at a time."""

    def __init__(self, model: OffPolicyAlgorithm, total_timesteps: int, first_observation: np.ndarray) -> None:
        self.model = model
        if model.train_freq.unit != TrainFrequencyUnit.STEP:  # type: ignore[union-attr]
            raise ConfigurationError(
                f"train_freq must count steps (e.g. train_freq=4) for lockstep training; got {model.train_freq}"
            )
        model.set_logger(_silent_logger())
        model.num_timesteps = 0
        model._total_timesteps = total_timesteps
        model._last_obs = first_observation
        model.policy.set_training_mode(False)
        self._steps = 0
        self._buffer_actions: np.ndarray | None = None

    def act(self, observation: np.ndarray) -> np.ndarray:
        model = self.model
        model._last_obs = observation
        # uniform actions before learning_starts, then the policy with its exploration (epsilon-greedy for DQN)
        actions, self._buffer_actions = model._sample_action(model.learning_starts, None, model.n_envs)
        return np.asarray(actions)

    def observe(
        self, new_observation: np.ndarray, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> None:
        assert self._buffer_actions is not None  # act() comes first
        model = self.model
        model.num_timesteps += model.n_envs
        self._steps += 1
        # next observation of a finished episode = infos["terminal_observation"]; truncations are not dones
        # for the TD target (the replay buffer reads infos["TimeLimit.truncated"])
        assert model.replay_buffer is not None
        model._store_transition(model.replay_buffer, self._buffer_actions, new_observation, rewards, dones, infos)
        model._update_current_progress_remaining(model.num_timesteps, model._total_timesteps)
        model._on_step()  # DQN: target network sync and the exploration schedule
        frequency = model.train_freq.frequency  # type: ignore[union-attr]
        if self._steps % frequency == 0 and model.num_timesteps > model.learning_starts:
            gradient_steps = model.gradient_steps if model.gradient_steps >= 0 else frequency
            if gradient_steps > 0:
                model.train(batch_size=model.batch_size, gradient_steps=gradient_steps)


Driver = OnPolicyDriver | OffPolicyDriver


def drive(model: BaseAlgorithm, total_timesteps: int, first_observation: np.ndarray) -> Driver:
    """The driver of ``model`` (on- or off-policy) for a run of ``total_timesteps`` agent-rounds."""
    if isinstance(model, OnPolicyAlgorithm):
        return OnPolicyDriver(model, total_timesteps, first_observation)
    if isinstance(model, OffPolicyAlgorithm):
        return OffPolicyDriver(model, total_timesteps, first_observation)
    raise ConfigurationError(f"lockstep training needs an on- or off-policy SB3 algorithm; got {type(model).__name__}")


def play_lockstep(
    venv: AgentsVecEnv,
    models: Sequence[BaseAlgorithm],
    groups: Sequence[np.ndarray],
    n_rounds: int,
    *,
    progress: bool = False,
    description: str = "training",
) -> None:
    """Play ``n_rounds`` rounds of ``venv`` (from its reset), model ``k`` acting for and learning from ``groups[k]``.

    Args:
        venv: The game's agents.
        models: The SB3 models.
        groups: The agent indices of each model (together, each agent exactly once).
        n_rounds: Rounds to play (over as many episodes as they take).
        progress: Show a progress bar over rounds.
        description: The progress bar's label.
    """
    observations = venv.reset()
    drivers = [
        drive(model, n_rounds * len(agents), observations[agents]) for model, agents in zip(models, groups, strict=True)
    ]
    joint = np.empty(venv.num_envs, dtype=np.int64)
    for _ in tqdm(range(n_rounds), desc=description, unit="round", disable=not progress, leave=False):
        for driver, agents in zip(drivers, groups, strict=True):
            joint[agents] = driver.act(observations[agents]).reshape(-1)
        venv.step_async(joint)
        new_observations, rewards, dones, infos = venv.step_wait()
        for driver, agents in zip(drivers, groups, strict=True):
            driver.observe(new_observations[agents], rewards[agents], dones[agents], [infos[i] for i in agents])
        observations = new_observations
