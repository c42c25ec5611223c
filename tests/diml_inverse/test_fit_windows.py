"""diml_inverse.fit with round windows: the slicing, exactness against whole episodes, fitting, bad input."""

from __future__ import annotations

import pytest
import torch

import diml_inverse
import mechgym
from diml_inverse.likelihood import log_likelihood, trace_terms
from diml_inverse.windows import RoundWindows, default_burn_in, window_slices
from mechgym.errors import ConfigurationError
from mechgym.learners import BanditQ, Hedge, Learner, LogitQ, SmoothFP
from mechgym.traces import TraceDataset

LEARNER = LogitQ(alpha=0.3, beta=3.0, epsilon=0.05)
GAMES = [
    ("mechgym/AnonymousGame-v0", {"n_agents": 6, "n_actions": 3, "n_rounds": 80, "mechanism_seed": 0}),
    ("mechgym/NeuralMechanism-v0", {"n_agents": 3, "n_actions": 4, "n_rounds": 80}),
]


@pytest.fixture(scope="module")
def traces() -> TraceDataset:
    """8 episodes x 80 rounds of logit-Q learners on a 3-agent neural mechanism."""
    env_id, kwargs = GAMES[1]
    return mechgym.rollout(mechgym.make(env_id, **kwargs), LEARNER, 8, seed=0)


@pytest.mark.parametrize(
    ("n_rounds", "window", "burn_in"),
    [(80, 16, 46), (81, 16, 10), (50, 7, 0), (2, 1, 0), (20, 5, 3), (30, 8, 21), (30, 8, 40), (30, 40, 0)],
)
def test_window_slices_score_every_term_once(n_rounds: int, window: int, burn_in: int) -> None:
    slices = window_slices(n_rounds, window, burn_in)
    length = burn_in + window + 1
    if length >= n_rounds:
        assert slices == [(0, 0, n_rounds - 1)]  # one whole-episode window
        return
    scored: list[int] = []
    for start, first, count in slices:
        assert start >= 0 and start + length <= n_rounds  # the slice lies in the episode
        assert 1 <= count <= window and first + count <= length - 1
        assert start == 0 or first >= burn_in  # a full burn-in unless the slice starts at round 1
        scored.extend(range(start + first, start + first + count))
    assert scored == list(range(n_rounds - 1))


def test_default_burn_in_is_the_smallest_below_tolerance() -> None:
    for alpha in (0.01, 0.25, 0.3, 0.9, 0.999):
        burn_in = default_burn_in(alpha)
        assert (1 - alpha) ** burn_in <= 1e-7 < (1 - alpha) ** (burn_in - 1)
    assert default_burn_in(1.0) == 1


@pytest.mark.parametrize(("env_id", "kwargs"), GAMES)
@pytest.mark.parametrize("learned_q0", [False, True])
@pytest.mark.parametrize("window", [16, 7])
def test_windows_sum_to_the_whole_episode_likelihood(
    env_id: str, kwargs: dict[str, int], learned_q0: bool, window: int
) -> None:
    env = mechgym.make(env_id, **kwargs)
    actions = mechgym.rollout(env, LEARNER, 4, seed=1).actions_tensor("cpu")
    mechanism = env.mechanism
    random_q0 = torch.randn(mechanism.n_agents, mechanism.n_actions, generator=torch.Generator().manual_seed(0))
    q0 = random_q0 if learned_q0 else None
    windows = RoundWindows.build(actions.shape[1], window, default_burn_in(LEARNER.alpha))
    assert windows.length < actions.shape[1]  # really windowed
    items = torch.arange(actions.shape[0] * windows.n_windows)
    with torch.no_grad():
        log_probs, payoffs, scored = windows.terms(mechanism, actions, LEARNER, items, q0)
        full_log_probs, full_payoffs = trace_terms(mechanism, actions, LEARNER, q0)
        whole = log_likelihood(mechanism, actions, LEARNER, q0)
    assert int(scored.sum()) == actions.shape[0] * (actions.shape[1] - 1)
    torch.testing.assert_close(torch.where(scored, log_probs, 0.0).sum(), whole, rtol=1e-5, atol=0)
    # term by term, the scored slice terms and payoffs are the episode's
    by_window = (actions.shape[0], windows.n_windows, windows.length - 1, -1)
    log_probs, payoffs = log_probs.reshape(by_window), payoffs.reshape(by_window)
    for k, (start, first, count) in enumerate(windows.slices):
        scored_terms, episode_terms = slice(first, first + count), slice(start + first, start + first + count)
        torch.testing.assert_close(log_probs[:, k, scored_terms], full_log_probs[:, episode_terms], atol=1e-5, rtol=0)
        torch.testing.assert_close(payoffs[:, k, scored_terms], full_payoffs[:, episode_terms])


def _fit(traces: TraceDataset, **options: object) -> diml_inverse.FitResult:
    defaults: dict[str, object] = {"round_window": 16, "epochs": 3, "batch_size": 8, "lr": 1e-2}
    options = {"progress": False, "device": "cpu", **defaults, **options}
    return diml_inverse.fit(None, traces, learner=LEARNER, **options)  # type: ignore[arg-type]


def test_windowed_fit_learns_reproducibly_and_records_its_options(traces: TraceDataset) -> None:
    first, second = _fit(traces, seed=3), _fit(traces, seed=3)
    assert first.history[-1]["train_nll"] < first.history[0]["train_nll"]
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in first.history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in second.history]
    assert first.config.round_window == 16 and first.config.burn_in is None
    assert first.history[0]["burn_in"] == default_burn_in(LEARNER.alpha)
    other = _fit(traces, seed=4)
    assert other.history[0]["train_nll"] != first.history[0]["train_nll"]  # the window order follows the seed


def test_windowed_fit_with_agent_batches_learned_q0_and_alpha(traces: TraceDataset) -> None:
    result = _fit(traces, agent_batch_size=2, learn_q0=True, learn_alpha=True, burn_in=None)
    assert result.q0 is not None and result.config.agent_batch_size == 2
    assert all(row["burn_in"] >= 1 for row in result.history)
    fixed = _fit(traces, epochs=1, burn_in=5, payoff_l2=0.0)
    assert fixed.config.burn_in == 5 and fixed.history[0]["burn_in"] == 5


def test_window_covering_the_episode_fits_whole_episodes(traces: TraceDataset) -> None:
    # one model for both: model="auto" would choose a family by each fit's held-out NLL
    whole = diml_inverse.fit(
        None, traces, learner=LEARNER, model="neural", epochs=1, progress=False, device="cpu", seed=0
    )
    windowed = _fit(traces, model="neural", epochs=1, seed=0, round_window=60, batch_size=32, lr=1e-3)
    assert windowed.history[0]["train_nll"] == whole.history[0]["train_nll"]


@pytest.mark.parametrize("learner", [Hedge(eta=0.5), SmoothFP(), BanditQ()])
def test_learners_that_never_forget_are_refused(traces: TraceDataset, learner: Learner) -> None:
    with pytest.raises(ConfigurationError, match="forgets exponentially"):
        diml_inverse.fit(None, traces, learner=learner, round_window=16, progress=False, device="cpu")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"round_window": 0}, "round_window"),
        ({"round_window": 2.5}, "round_window"),
        ({"round_window": True}, "round_window"),
        ({"round_window": 16, "burn_in": -1}, "burn_in"),
        ({"round_window": 16, "burn_in": 3.0}, "burn_in"),
        ({"burn_in": 3}, "round_window"),
    ],
)
def test_bad_window_options_are_refused(traces: TraceDataset, options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        diml_inverse.fit(None, traces, learner=LEARNER, progress=False, device="cpu", **options)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_windowed_fit_on_cuda_matches_cpu(traces: TraceDataset) -> None:
    options = {"agent_batch_size": 2, "learn_alpha": True, "learn_q0": True}
    cpu = _fit(traces, seed=5, device="cpu", **options)
    gpu = _fit(traces, seed=5, device="cuda", **options)
    for row_cpu, row_gpu in zip(cpu.history, gpu.history, strict=True):
        assert row_gpu["burn_in"] == row_cpu["burn_in"]
        assert row_gpu["train_nll"] == pytest.approx(row_cpu["train_nll"], abs=1e-4)
