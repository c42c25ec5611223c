"""Hostile inputs to mechgym: batch- and thread-invariant payoffs, seeds, counts, NaN policies, sizes, stale caches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import mechgym
import mechgym.memory
from mechgym.env import MechanismGameEnv
from mechgym.errors import ConfigurationError, NonFinitePolicyError
from mechgym.learners import LearnerPolicy, LogitQ
from mechgym.mechanisms import AnonymousCountMechanism, Mechanism, NeuralJointMechanism
from mechgym.mechanisms.base import AnonymousMechanism, seeded_init
from mechgym.memory import MemoryBudgetError
from mechgym.rollout import simulate


class OneHotMLP(Mechanism):
    """A third-party mechanism with no fast path: an MLP over the one-hot joint action."""

    family = "test_one_hot_mlp"

    def __init__(self, n_agents: int = 5, n_actions: int = 6, hidden: int = 96, seed: int = 0) -> None:
        super().__init__(n_agents, n_actions)
        with seeded_init(seed):
            self.net = nn.Sequential(
                nn.Linear(n_agents * n_actions, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
            )
            self.head = nn.Linear(hidden, n_agents)

    def forward(self, joint_actions: Tensor) -> Tensor:
        one_hot = nn.functional.one_hot(joint_actions, self.n_actions).float().flatten(-2)
        return self.head(self.net(one_hot))


class ShareMLP(AnonymousMechanism):
    """A third-party anonymous mechanism: an MLP of the own action's one-hot and the others' shares."""

    family = "test_share_mlp"

    def __init__(self, n_agents: int = 30, n_actions: int = 8, hidden: int = 128, seed: int = 0) -> None:
        super().__init__(n_agents, n_actions)
        with seeded_init(seed):
            self.net = nn.Sequential(
                nn.Linear(2 * n_actions, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:
        own = nn.functional.one_hot(actions, self.n_actions).to(other_counts.dtype)
        own = own.expand(*other_counts.shape[:-1], self.n_actions)
        return self.net(torch.cat([own, other_counts / (self.n_agents - 1)], -1)).squeeze(-1)


def _mechanisms() -> dict[str, Mechanism]:
    return {
        "anonymous-40x10": AnonymousCountMechanism(40, 10, seed=0).freeze(),
        "neural-6x5-no-table": NeuralJointMechanism(6, 5, seed=0).freeze(),
        "third-party-one-hot-mlp": OneHotMLP().freeze(),
        "third-party-share-mlp": ShareMLP().freeze(),
    }


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"{n}-threads")
def torch_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# -- payoffs independent of the batch and of the thread count -------------------------------------------------
@pytest.mark.parametrize("name", list(_mechanisms()))
def test_batch_invariant_payoffs_do_not_depend_on_the_batch(name: str, torch_threads: int) -> None:
    mechanism = _mechanisms()[name]
    generator = torch.Generator().manual_seed(1)
    joint = torch.randint(0, mechanism.n_actions, (24, mechanism.n_agents), generator=generator)
    whole = mechanism.counterfactual_payoffs_batch_invariant(joint)
    one_by_one = torch.cat([mechanism.counterfactual_payoffs_batch_invariant(joint[i : i + 1]) for i in range(24)])
    permutation = torch.randperm(24, generator=generator)
    shuffled = mechanism.counterfactual_payoffs_batch_invariant(joint[permutation])
    nested = mechanism.counterfactual_payoffs_batch_invariant(joint.view(4, 6, -1)).reshape(whole.shape)
    assert torch.equal(one_by_one, whole)
    assert torch.equal(shuffled, whole[permutation])
    assert torch.equal(nested, whole)
    # and they are the mechanism's counterfactual payoffs (Eq. 1), to float rounding
    torch.testing.assert_close(whole, mechanism.counterfactual_payoffs_generic(joint), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("mechgym/AnonymousGame-v0", {}),
        ("mechgym/NeuralMechanism-v0", {"n_agents": 6, "n_actions": 5}),
        ("mechgym/PublicGoods-v0", {}),
    ],
    ids=["anonymous-40x10", "neural-6x5", "public-goods"],
)
def test_rollout_equals_the_pettingzoo_loop_at_any_thread_count(
    env_id: str, kwargs: dict[str, int], torch_threads: int
) -> None:
    env = mechgym.make(env_id, n_rounds=8, **kwargs)
    looped = mechgym.play_episodes(env, None, n_episodes=3, seed=7)
    vectorised = mechgym.rollout(env, None, n_episodes=3, seed=7)
    np.testing.assert_array_equal(vectorised.actions, looped.actions)
    np.testing.assert_array_equal(vectorised.rewards, looped.rewards)


def test_a_third_party_mechanism_rolls_out_as_the_loop_plays_it(torch_threads: int) -> None:
    for mechanism in (OneHotMLP().freeze(), ShareMLP().freeze()):
        env = MechanismGameEnv(mechanism, n_rounds=6)
        looped = mechgym.play_episodes(env, None, n_episodes=2, seed=3)
        vectorised = mechgym.rollout(env, None, n_episodes=2, seed=3)
        np.testing.assert_array_equal(vectorised.actions, looped.actions)
        np.testing.assert_array_equal(vectorised.rewards, looped.rewards)


# -- seeds and counters -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 1.5, 2**64, 2**100, "0", True, np.float64(3.0)])
def test_seeds_the_generator_cannot_tell_apart_are_refused(seed: object) -> None:
    with pytest.raises(ConfigurationError, match="seed"):
        mechgym.rollout("mechgym/Congestion-v0", n_episodes=1, n_rounds=2, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="seed"):
        mechgym.play_episodes(mechgym.make("mechgym/Congestion-v0"), None, n_episodes=1, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="seed"):
        LearnerPolicy(LogitQ(), 5, 0, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="seed"):
        mechgym.make("mechgym/Congestion-v0", mechanism_seed=seed)


def test_every_accepted_seed_gives_its_own_draws() -> None:
    largest = mechgym.rollout("mechgym/Congestion-v0", n_episodes=4, n_rounds=10, seed=2**64 - 1)
    zero = mechgym.rollout("mechgym/Congestion-v0", n_episodes=4, n_rounds=10, seed=np.uint64(0))
    assert not np.array_equal(largest.actions, zero.actions)
    assert (largest.metadata.seed, zero.metadata.seed) == (2**64 - 1, 0)


def test_episode_indices_past_the_counters_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="32-bit counters"):
        mechgym.rollout("mechgym/Congestion-v0", n_episodes=1, n_rounds=2, episode_offset=2**32)
    with pytest.raises(ConfigurationError, match="32-bit counters"):
        mechgym.rollout("mechgym/Congestion-v0", n_episodes=2, n_rounds=2, episode_offset=2**32 - 1)
    last = mechgym.rollout("mechgym/Congestion-v0", n_episodes=1, n_rounds=3, episode_offset=2**32 - 1)
    first = mechgym.rollout("mechgym/Congestion-v0", n_episodes=1, n_rounds=3)
    assert last.metadata.extra == {"episode_offset": 2**32 - 1}
    assert not np.array_equal(last.actions, first.actions) or not np.array_equal(last.rewards, first.rewards)
    with pytest.raises(ConfigurationError, match="episode_offset"):
        mechgym.rollout("mechgym/Congestion-v0", n_episodes=1, n_rounds=2, episode_offset=-1)


# -- sizes must be integers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_agents", [2.5, 3.0, "3", True, None])
def test_n_agents_must_be_an_integer(n_agents: object) -> None:
    with pytest.raises(ConfigurationError, match="n_agents"):
        mechgym.make("mechgym/Congestion-v0", n_agents=n_agents)


def test_numpy_integers_are_integers() -> None:
    env = mechgym.make("mechgym/Congestion-v0", n_agents=np.int64(3), n_actions=np.int32(4))
    assert (env.unwrapped.n_agents, env.unwrapped.n_actions) == (3, 4)
    assert type(env.unwrapped.mechanism.n_agents) is int


@pytest.mark.parametrize("kwargs", [{"hidden": 2.5}, {"hidden": 0}, {"embed_dim": "8"}])
def test_architecture_sizes_must_be_positive_integers(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        mechgym.make("mechgym/NeuralMechanism-v0", **kwargs)


# -- non-finite policies -------------------------------------------------------------------------------------------
class Huge(Mechanism):
    """Payoffs near the float32 limit: beta times them overflows."""

    family = "test_huge"

    def forward(self, joint_actions: Tensor) -> Tensor:
        return 3e38 * (joint_actions == 1).float()


def test_a_non_finite_policy_raises_instead_of_drawing_action_zero() -> None:
    env = MechanismGameEnv(Huge(3, 4).freeze(), n_rounds=5)
    learner = LogitQ(alpha=1.0, beta=10.0, epsilon=0.0)
    with pytest.raises(NonFinitePolicyError, match="round 1"):
        mechgym.rollout(env, learner, n_episodes=2, seed=0)
    with pytest.raises(NonFinitePolicyError, match="not finite"):
        mechgym.play_episodes(env, learner, n_episodes=1, seed=0)
    with pytest.raises(NonFinitePolicyError):
        simulate(Huge(3, 4), learner, 2, 5, seed=0)


# -- sizes that cannot fit in memory ---------------------------------------------------------------------------------
def test_an_environment_too_large_for_memory_is_refused_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MemoryBudgetError, match=r"needs about .* GiB"):
        mechgym.make("mechgym/AnonymousGame-v0", n_agents=10**9)
    monkeypatch.setattr(mechgym.memory, "available_memory_bytes", lambda device="cpu": 8 * 2**30)
    with pytest.raises(MemoryBudgetError, match="10000000 agents"):
        mechgym.make("mechgym/AnonymousGame-v0", n_agents=10**7)
    with pytest.raises(MemoryBudgetError, match="parameters"):
        mechgym.make("mechgym/NeuralMechanism-v0", hidden=200_000)


def test_a_rollout_too_large_for_memory_is_refused_with_its_estimate() -> None:
    with pytest.raises(MemoryBudgetError, match=r"10000000 episodes x 100000 rounds .*check_memory=False"):
        mechgym.rollout("mechgym/Congestion-v0", n_episodes=10**7, n_rounds=10**5)


def test_memory_estimates_pass_for_ordinary_sizes() -> None:
    traces = mechgym.rollout("mechgym/AnonymousGame-v0", n_episodes=2, n_rounds=3, seed=0, check_memory=True)
    assert traces.n_episodes == 2


@pytest.mark.parametrize("device", ["mps", "meta", "tpu", "cuda:99"])
def test_unsupported_devices_are_refused(device: str) -> None:
    with pytest.raises(ConfigurationError, match="device"):
        mechgym.rollout("mechgym/Congestion-v0", n_episodes=1, n_rounds=2, device=device)


# -- the frozen mechanism's payoff table never goes stale -----------------------------------------------------------
def test_the_payoff_table_follows_in_place_weight_changes() -> None:
    mechanism = NeuralJointMechanism(3, 4, seed=0).freeze()
    joint = torch.tensor([[0, 1, 2], [3, 3, 0]])
    before = mechanism.counterfactual_payoffs(joint)
    with torch.no_grad():
        mechanism.layer3.bias.add_(1.0)
    torch.testing.assert_close(mechanism.counterfactual_payoffs(joint), before + 1.0)
    mechanism.layer3.bias.data.sub_(3.0)  # through .data: no version bump
    torch.testing.assert_close(mechanism.counterfactual_payoffs(joint), before - 2.0)
    mechanism.load_state_dict(NeuralJointMechanism(3, 4, seed=5).state_dict())
    torch.testing.assert_close(
        mechanism.counterfactual_payoffs(joint), NeuralJointMechanism(3, 4, seed=5).counterfactual_payoffs(joint)
    )


def test_the_payoff_table_carries_gradients_once_they_are_asked_for() -> None:
    mechanism = NeuralJointMechanism(3, 4, seed=0).freeze()
    joint = torch.tensor([[0, 1, 2]])
    assert not mechanism.counterfactual_payoffs(joint).requires_grad
    for parameter in mechanism.parameters():
        parameter.requires_grad_(True)
    payoffs = mechanism.counterfactual_payoffs(joint)
    assert payoffs.requires_grad
    payoffs.sum().backward()
    assert mechanism.layer3.bias.grad is not None and bool(mechanism.layer3.bias.grad.abs().sum() > 0)
