"""Evaluation metrics: diff_mse and its invariants, joint-action histograms and KL, cfkl and its noise floor."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch import Tensor

from diml_inverse.metrics import (
    DEFAULT_SHIFT,
    METRIC_DESCRIPTIONS,
    Evaluator,
    cfkl_noise_floor,
    cfkl_params,
    derive_seed,
    diff_mse,
    empirical_kl,
    evaluate,
    format_metrics_table,
    heldout_nll,
    histogram_kl,
    joint_action_histogram,
    rescaled_diff_mse,
    sample_diff_contexts,
    uniform_nll,
    zero_baseline_diff_mse,
)
from mechgym.errors import ConfigurationError, InvalidActionError, TraceDatasetError
from mechgym.learners import BanditQ, Hedge, Learner, LogitQ, SmoothFP
from mechgym.mechanisms import (
    AnonymousCountMechanism,
    CongestionMechanism,
    Mechanism,
    NeuralJointMechanism,
    TabularMechanism,
)
from mechgym.rollout import simulate
from mechgym.traces.dataset import TraceDataset, TraceMetadata

LEARNER = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)


class GaugeShifted(Mechanism):
    """``base`` plus ``c_i(a_-i)``, a function of the others' actions only (a generic, non-table mechanism)."""

    family = "test_metrics_gauge_shifted"

    def __init__(self, base: Mechanism, scale: float = 3.0) -> None:
        super().__init__(base.n_agents, base.n_actions)
        self.base = base
        self.scale = scale
        self.max_table_size = 0  # always the forward path
        self.register_buffer("weights", torch.arange(1, base.n_agents + 1, dtype=torch.float32) * 0.7)

    def forward(self, joint_actions: Tensor) -> Tensor:
        weighted = joint_actions.float() * self.weights
        others = weighted.sum(-1, keepdim=True) - weighted  # [..., N]: depends on a_-i only
        return self.base(joint_actions) + self.scale * torch.sin(others + torch.arange(self.n_agents))


class PlainForward(Mechanism):
    """``scale * base`` seen through ``forward`` only: no table, no anonymous fast path."""

    family = "test_metrics_plain_forward"

    def __init__(self, base: Mechanism, scale: float = 1.0) -> None:
        super().__init__(base.n_agents, base.n_actions)
        self.base = base
        self.scale = scale
        self.max_table_size = 0

    def forward(self, joint_actions: Tensor) -> Tensor:
        return self.scale * self.base(joint_actions)


@pytest.fixture(scope="module")
def e1() -> tuple[Mechanism, Tensor]:
    truth = NeuralJointMechanism(3, 6, seed=0).freeze()
    actions, _ = simulate(truth, LEARNER, 6, 20, seed=11)
    return truth, actions


# -- diff_mse -----------------------------------------------------------------------------------
def test_diff_mse_of_truth_against_itself_is_zero(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    assert diff_mse(truth, truth, actions) == 0.0


def test_diff_mse_is_invariant_to_gauge_shifts(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    estimate = NeuralJointMechanism(3, 6, seed=1)
    shifted = GaugeShifted(estimate)
    # float32 payoffs: the shift of size ~3 cancels up to rounding
    assert diff_mse(truth, shifted, actions, seed=3) == pytest.approx(
        diff_mse(truth, estimate, actions, seed=3), rel=1e-4
    )
    assert diff_mse(estimate, shifted, actions) < 1e-10
    assert diff_mse(truth, GaugeShifted(truth), actions) < 1e-10  # the shift is far from zero in payoffs


def test_zero_mechanism_gives_the_zero_baseline(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    zero = TabularMechanism(3, 6, init="zeros")
    baseline = zero_baseline_diff_mse(truth, actions, n_samples=500, seed=4)
    assert baseline > 0
    assert diff_mse(truth, zero, actions, n_samples=500, seed=4) == pytest.approx(baseline, rel=1e-12)


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_rescaled_diff_mse_undoes_a_scale_error(e1: tuple[Mechanism, Tensor], scale: float) -> None:
    truth, actions = e1
    fitted_scale, error = rescaled_diff_mse(truth, PlainForward(truth, scale), actions, n_samples=800, seed=2)
    assert fitted_scale == pytest.approx(1 / scale, rel=1e-5)
    assert error == pytest.approx(0.0, abs=1e-10)
    if scale != 1.0:
        assert diff_mse(truth, PlainForward(truth, scale), actions, n_samples=800, seed=2) > 1e-4


def test_rescaled_diff_mse_is_bounded_by_diff_mse_and_the_zero_baseline(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    estimate = NeuralJointMechanism(3, 6, seed=5)
    fitted_scale, error = rescaled_diff_mse(truth, estimate, actions, n_samples=800, seed=2)
    assert fitted_scale >= 0
    assert error <= diff_mse(truth, estimate, actions, n_samples=800, seed=2) + 1e-12
    assert error <= zero_baseline_diff_mse(truth, actions, n_samples=800, seed=2) + 1e-12
    # an estimate of the opposite sign is worse than zero at any positive scale: the best scale is 0
    flipped_scale, flipped = rescaled_diff_mse(truth, PlainForward(truth, -1.0), actions, n_samples=800, seed=2)
    assert flipped_scale == 0.0
    assert flipped == pytest.approx(zero_baseline_diff_mse(truth, actions, n_samples=800, seed=2))
    zero_scale, _ = rescaled_diff_mse(truth, TabularMechanism(3, 6, init="zeros"), actions, n_samples=100)
    assert zero_scale == 0.0


def brute_force_diff_mse(truth: Mechanism, estimate: Mechanism, actions: Tensor, n_samples: int, seed: int) -> float:
    """The paper's formula context by context, with the metric's own context draws."""
    contexts = sample_diff_contexts(actions, truth.n_agents, truth.n_actions, n_samples, seed)
    errors = []
    for e, t, i, (a, b) in zip(contexts.episode, contexts.round, contexts.agent, contexts.deviations, strict=True):
        first, second = actions[e, t].clone(), actions[e, t].clone()
        first[i], second[i] = a, b
        u = truth(first)[i] - truth(second)[i]
        v = estimate(first)[i] - estimate(second)[i]
        errors.append(float(u - v) ** 2)
    return float(np.mean(errors))


@pytest.mark.parametrize(
    "make_truth",
    [lambda: NeuralJointMechanism(3, 4, seed=2).freeze(), lambda: CongestionMechanism(9, 4, seed=3)],
    ids=["neural-table", "congestion-anonymous"],
)
def test_diff_mse_equals_a_per_context_loop(make_truth) -> None:  # type: ignore[no-untyped-def]
    truth = make_truth()
    estimate = GaugeShifted(NeuralJointMechanism(truth.n_agents, truth.n_actions, seed=5), scale=0.5)
    actions, _ = simulate(truth, LEARNER, 3, 8, seed=1)
    with torch.no_grad():
        expected = brute_force_diff_mse(truth, estimate, actions, n_samples=60, seed=9)
    assert diff_mse(truth, estimate, actions, n_samples=60, seed=9) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "truth",
    [CongestionMechanism(12, 4, seed=3), AnonymousCountMechanism(30, 5, embed_dim=6, hidden=32, seed=4)],
    ids=["congestion", "anonymous-count"],
)
def test_anonymous_fast_path_equals_forward_passes(truth: Mechanism) -> None:
    actions, _ = simulate(truth, LEARNER, 4, 10, seed=2)
    assert diff_mse(truth, PlainForward(truth), actions, n_samples=1000) < 1e-10
    estimate = AnonymousCountMechanism(truth.n_agents, truth.n_actions, embed_dim=6, hidden=32, seed=8)
    assert diff_mse(truth, estimate, actions, n_samples=1000) == pytest.approx(
        diff_mse(truth, PlainForward(estimate), actions, n_samples=1000), rel=1e-5
    )


def test_diff_mse_is_deterministic_in_the_seed(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    estimate = NeuralJointMechanism(3, 6, seed=1)
    state = torch.get_rng_state()
    first = diff_mse(truth, estimate, actions, n_samples=200, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert diff_mse(truth, estimate, actions, n_samples=200, seed=7) == first
    assert diff_mse(truth, estimate, actions, n_samples=200, seed=8) != first


def test_contexts_cover_every_context_once_when_enough_are_asked(e1: tuple[Mechanism, Tensor]) -> None:
    _, actions = e1
    contexts = sample_diff_contexts(actions, 3, 6, n_samples=10**6, seed=0)
    keys = (contexts.episode * actions.shape[1] + contexts.round) * 3 + contexts.agent
    assert torch.equal(keys.sort().values, torch.arange(actions.numel()))
    assert torch.equal(contexts.joint, actions[contexts.episode, contexts.round])
    assert int(contexts.deviations.min()) >= 0 and int(contexts.deviations.max()) < 6


def test_diff_mse_accepts_a_trace_dataset(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    dataset = TraceDataset(actions=actions.numpy(), metadata=TraceMetadata(n_agents=3, n_actions=6))
    estimate = NeuralJointMechanism(3, 6, seed=1)
    assert diff_mse(truth, estimate, dataset, seed=2) == diff_mse(truth, estimate, actions, seed=2)
    other_game = TraceDataset(actions=actions.numpy(), metadata=TraceMetadata(n_agents=3, n_actions=7))
    with pytest.raises(TraceDatasetError, match="n_actions=7"):
        diff_mse(truth, estimate, other_game)


def test_diff_mse_rejects_mismatched_games_and_bad_traces(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    with pytest.raises(ConfigurationError, match="different game"):
        diff_mse(truth, NeuralJointMechanism(3, 5), actions)
    with pytest.raises(InvalidActionError, match=r"\[E, T, N\]"):
        diff_mse(truth, truth, actions[0])
    with pytest.raises(InvalidActionError, match=r"\[0, 6\)"):
        diff_mse(truth, truth, actions + 6)
    with pytest.raises(ConfigurationError, match="n_samples"):
        diff_mse(truth, truth, actions, n_samples=0)
    with pytest.raises(ConfigurationError, match="seed"):
        diff_mse(truth, truth, actions, seed=-1)


# -- histograms and KL --------------------------------------------------------------------------
def test_joint_histogram_matches_numpy_bincount() -> None:
    actions = torch.randint(0, 4, (5, 7, 3), generator=torch.Generator().manual_seed(0))
    support, counts = joint_action_histogram(actions, 4, kind="joint")
    index = (actions.reshape(-1, 3).numpy() * np.array([16, 4, 1])).sum(-1)
    reference = np.bincount(index, minlength=64)
    dense = np.zeros(64, dtype=np.int64)
    dense[(support.numpy() * np.array([16, 4, 1])).sum(-1)] = counts.numpy()
    np.testing.assert_array_equal(dense, reference)
    assert (counts > 0).all() and int(counts.sum()) == 35
    assert joint_action_histogram(actions, 4)[0].shape == support.shape  # "auto" is "joint" for small games


def test_count_histogram_matches_a_dict_of_count_vectors() -> None:
    actions = torch.randint(0, 3, (4, 50, 6), generator=torch.Generator().manual_seed(1))
    support, counts = joint_action_histogram(actions, 3, kind="counts")
    expected = Counter(tuple(np.bincount(row, minlength=3)) for row in actions.reshape(-1, 6).numpy())
    assert {tuple(row): int(c) for row, c in zip(support.tolist(), counts, strict=True)} == expected
    assert support.shape[1] == 3 and (support.sum(-1) == 6).all()


def test_count_histogram_is_not_the_index_sum_hash() -> None:
    # (0, 2) and (1, 1): different count vectors [1, 0, 1] and [0, 2, 0], the same index sum 2
    p, q = torch.tensor([[0, 2]] * 10), torch.tensor([[1, 1]] * 10)
    assert joint_action_histogram(torch.cat([p, q]), 3, kind="counts")[1].tolist() == [10, 10]
    assert joint_action_histogram(torch.cat([p, q]), 3, kind="index_sum")[1].tolist() == [20]
    assert empirical_kl(p, q, 3, kind="index_sum") == 0.0
    assert empirical_kl(p, q, 3, kind="counts") == pytest.approx(-math.log(1e-12))
    assert empirical_kl(p, q, 3, kind="joint") == pytest.approx(-math.log(1e-12))
    assert empirical_kl(p, q, 3, kind="actions") == pytest.approx(math.log(0.5 / 1e-12))  # shares {0, 2} vs {1}


def test_count_kl_saturates_when_every_count_vector_is_new() -> None:
    # 50 agents x 10 actions: 40 uniformly random profiles have distinct count vectors, so KL = log(1 / (40 floor))
    generator = torch.Generator().manual_seed(0)
    p, q = torch.randint(0, 10, (40, 50), generator=generator), torch.randint(0, 10, (40, 50), generator=generator)
    assert empirical_kl(p, q, 10, kind="counts") == pytest.approx(math.log(1 / 40 / 1e-12))
    assert empirical_kl(p, q, 10, kind="actions") < 0.1


def test_auto_kind_bins_large_games_by_counts() -> None:
    actions = torch.randint(0, 10, (3, 4, 40), generator=torch.Generator().manual_seed(2))
    support, counts = joint_action_histogram(actions, 10)
    assert support.shape[1] == 10 and int(counts.sum()) == 12


@pytest.mark.parametrize("kind", ["joint", "counts", "actions", "index_sum"])
def test_kl_of_a_dataset_with_itself_is_zero(kind: str) -> None:
    actions = torch.randint(0, 4, (6, 9, 3), generator=torch.Generator().manual_seed(3))
    assert empirical_kl(actions, actions, 4, kind=kind) == 0.0  # type: ignore[arg-type]
    shuffled = actions.reshape(-1, 3)[torch.randperm(54, generator=torch.Generator().manual_seed(0))]
    assert empirical_kl(actions, shuffled, 4, kind=kind) == pytest.approx(0.0, abs=1e-15)  # type: ignore[arg-type]


def test_histogram_kl_formula() -> None:
    p, q = torch.tensor([3.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 2.0])
    expected = 0.75 * math.log(0.75 / 0.25) + 0.25 * math.log(0.25 / 0.25)
    assert histogram_kl(p, q) == pytest.approx(expected)
    reverse = 0.25 * math.log(0.25 / 0.75) + 0.25 * math.log(0.25 / 0.25) + 0.5 * math.log(0.5 / 1e-12)
    assert histogram_kl(q, p) == pytest.approx(reverse)
    with pytest.raises(ConfigurationError, match="same bins"):
        histogram_kl(p, q[:2])
    with pytest.raises(ConfigurationError, match="kind"):
        empirical_kl(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), 2, kind="hash")  # type: ignore[arg-type]
    with pytest.raises(InvalidActionError, match="same number of agents"):
        empirical_kl(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 2)


# -- cfkl ---------------------------------------------------------------------------------------
def test_cfkl_of_truth_against_itself_is_the_noise_floor(e1: tuple[Mechanism, Tensor]) -> None:
    truth, _ = e1
    floor = cfkl_noise_floor(truth, LEARNER, n_episodes=20, n_rounds=10, seed=1)
    assert floor > 0  # independent simulations: the plug-in KL is sampling noise, not 0
    assert cfkl_params(truth, truth, LEARNER, n_episodes=20, n_rounds=10, seed=1) == floor
    assert cfkl_noise_floor(truth, LEARNER, n_episodes=20, n_rounds=10, seed=1) == floor
    assert cfkl_noise_floor(truth, LEARNER, n_episodes=20, n_rounds=10, seed=2) != floor


def test_cfkl_separates_a_wrong_mechanism_from_noise(e1: tuple[Mechanism, Tensor]) -> None:
    truth, _ = e1
    sharp = PlainForward(truth, scale=10.0)  # far stronger incentives than the truth's
    kl = cfkl_params(truth, sharp, LEARNER, n_episodes=60, n_rounds=20, seed=0)
    assert kl > 3 * cfkl_noise_floor(truth, LEARNER, n_episodes=60, n_rounds=20, seed=0)


def test_cfkl_uses_the_shifted_learner(e1: tuple[Mechanism, Tensor]) -> None:
    truth, _ = e1
    estimate = NeuralJointMechanism(3, 6, seed=1)
    shifted = cfkl_params(truth, estimate, LEARNER, n_episodes=10, n_rounds=8, seed=0)
    manual = cfkl_params(truth, estimate, LEARNER.shifted(*DEFAULT_SHIFT), 10, 8, 0, shift=None)
    assert shifted == manual
    assert cfkl_params(truth, estimate, LEARNER, 10, 8, 0, shift=None) != shifted


@pytest.mark.parametrize(
    ("learner", "expected"),
    [
        (Hedge(eta=0.2, epsilon=0.1), Hedge(eta=0.2 * 0.6 * 1.4, epsilon=0.15)),
        (SmoothFP(beta=2.0, epsilon=0.1, prior_weight=3.0), SmoothFP(beta=2.8, epsilon=0.15, prior_weight=5.0)),
        (BanditQ(alpha=0.5, beta=2.0, epsilon=0.4), BanditQ(alpha=0.3, beta=2.8, epsilon=0.5)),
    ],
    ids=["hedge", "smooth-fp", "bandit-q"],
)
def test_cfkl_shifts_every_learner(e1: tuple[Mechanism, Tensor], learner: Learner, expected: Learner) -> None:
    truth, _ = e1
    shifted = learner.shifted(*DEFAULT_SHIFT)  # type: ignore[attr-defined]
    assert shifted.params() == pytest.approx(expected.params())
    estimate = NeuralJointMechanism(3, 6, seed=1)
    manual = cfkl_params(truth, estimate, shifted, 10, 8, 0, shift=None)
    assert cfkl_params(truth, estimate, learner, 10, 8, 0) == manual


def test_cfkl_rejects_a_learner_without_shift(e1: tuple[Mechanism, Tensor]) -> None:
    class Plain:
        pass

    truth, _ = e1
    with pytest.raises(ConfigurationError, match="shifted"):
        cfkl_params(truth, truth, Plain(), n_episodes=2, n_rounds=2)  # type: ignore[arg-type]


# -- likelihood, evaluate, table ----------------------------------------------------------------
def test_heldout_nll_of_the_zero_mechanism_is_log_a(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    zero = TabularMechanism(3, 6, init="zeros")
    assert heldout_nll(zero, actions, LEARNER) == pytest.approx(uniform_nll(6), rel=1e-6)
    assert heldout_nll(truth, actions, LEARNER) < uniform_nll(6)
    assert uniform_nll(6) == math.log(6)


def test_evaluate_matches_the_individual_metrics(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    estimate = NeuralJointMechanism(3, 6, seed=1)
    wrong = LEARNER.replace(beta=1.8)
    state = torch.get_rng_state()
    result = evaluate(
        truth, estimate, actions, LEARNER, model_learner=wrong, diff_samples=300, cf_episodes=12, cf_rounds=6, seed=5
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert list(result) == list(METRIC_DESCRIPTIONS)
    assert result == {
        "diff_mse": diff_mse(truth, estimate, actions, 300, 5),
        "zero_diff_mse": zero_baseline_diff_mse(truth, actions, 300, 5),
        "cfkl_params": cfkl_params(truth, estimate, LEARNER, 12, 6, 5),
        "cfkl_noise_floor": cfkl_noise_floor(truth, LEARNER, 12, 6, 5),
        "heldout_nll": heldout_nll(estimate, actions, wrong),
        "truth_heldout_nll": heldout_nll(truth, actions, LEARNER),
        "uniform_nll": math.log(6),
        "rescaled_diff_mse": rescaled_diff_mse(truth, estimate, actions, 300, 5)[1],
        "diff_scale": rescaled_diff_mse(truth, estimate, actions, 300, 5)[0],
    }


def test_an_evaluator_reuses_the_truth_across_fits(e1: tuple[Mechanism, Tensor]) -> None:
    truth, actions = e1
    evaluator = Evaluator(truth, actions, LEARNER, diff_samples=200, cf_episodes=10, cf_rounds=5, seed=2)
    for seed in (1, 2):
        estimate = NeuralJointMechanism(3, 6, seed=seed)
        expected = evaluate(truth, estimate, actions, LEARNER, diff_samples=200, cf_episodes=10, cf_rounds=5, seed=2)
        assert evaluator(estimate) == expected
    assert evaluator(truth)["cfkl_params"] == evaluator(truth)["cfkl_noise_floor"]
    assert evaluator(truth)["diff_mse"] == 0.0


def test_derive_seed_separates_purposes() -> None:
    assert derive_seed(0, "a") == derive_seed(0, "a")
    assert len({derive_seed(0, "a"), derive_seed(0, "b"), derive_seed(1, "a")}) == 3
    assert 0 <= derive_seed(2**40, "cfkl/truth") < 2**63


def test_format_metrics_table() -> None:
    table = format_metrics_table(
        [{"model": "DIML", "diff_mse": 0.0099123, "n": 3}, {"model": "a|b", "cfkl_params": 1.5}]
    )
    assert table.splitlines() == [
        "| model | diff_mse | n   | cfkl_params |",
        "| ----- | -------: | --: | ----------: |",
        "| DIML  | 0.009912 |   3 |             |",
        "| a\\|b  |          |     |         1.5 |",
    ]
    assert format_metrics_table([{"x": 1.0}], columns=["y", "x"]).splitlines()[0] == "| y   | x   |"
    with pytest.raises(ConfigurationError, match="at least one row"):
        format_metrics_table([])


# -- CUDA ---------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "truth_factory",
    [lambda: NeuralJointMechanism(3, 6, seed=0).freeze(), lambda: AnonymousCountMechanism(40, 10, seed=0).freeze()],
    ids=["neural-3x6", "anonymous-40x10"],
)
def test_metrics_on_cuda_match_the_cpu(truth_factory) -> None:  # type: ignore[no-untyped-def]
    truth = truth_factory()
    n, a = truth.n_agents, truth.n_actions
    estimate = NeuralJointMechanism(n, a, seed=1) if n == 3 else AnonymousCountMechanism(n, a, seed=1)
    actions, _ = simulate(truth, LEARNER, 4, 20, seed=3)
    cpu = evaluate(truth, estimate, actions, LEARNER, diff_samples=2000, cf_episodes=40, cf_rounds=15, seed=1)
    gpu = evaluate(
        truth.cuda(), estimate.cuda(), actions.cuda(), LEARNER, diff_samples=2000, cf_episodes=40, cf_rounds=15, seed=1
    )
    for key in ("diff_mse", "zero_diff_mse", "heldout_nll", "truth_heldout_nll", "uniform_nll"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-4, abs=1e-7), key
    # the same counter-based draws: equal unless a float difference flips a draw near a CDF edge
    for key in ("cfkl_params", "cfkl_noise_floor"):
        assert gpu[key] == pytest.approx(cpu[key], rel=0.05), key
