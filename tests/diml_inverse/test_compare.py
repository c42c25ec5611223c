"""compare_learners: it names the generating rule, its numbers are what it says, bad input is refused clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest

import diml_inverse
import mechgym
from diml_inverse.comparison import LearnerComparison, compare_learners, episode_nll
from diml_inverse.comparison.study import StudyConfig, run_comparison, summary_table
from diml_inverse.comparison.study import main as study_main
from diml_inverse.experiments.misspec import LEARNER_GENERATORS
from mechgym import Hedge, LogitQ
from mechgym.errors import ConfigurationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENV_ID = "mechgym/PublicGoods-v0"
CANDIDATES = {"logit-q": LogitQ(alpha=0.25, beta=3.0, epsilon=0.06), "hedge": Hedge(eta=0.1, epsilon=0.06)}
#: Small and fast (about 3 s per comparison): the game's own family learns in a few epochs.
OPTIONS = {"folds": 2, "epochs": 15, "lr": 0.01, "model": "structured", "device": "cpu", "progress": False}


def _traces(generator: str, n_episodes: int = 24, n_rounds: int = 40) -> mechgym.TraceDataset:
    return mechgym.rollout(ENV_ID, CANDIDATES[generator], n_episodes, n_rounds, seed=0)


@pytest.fixture(scope="module")
def hedge_comparison() -> LearnerComparison:
    return compare_learners(ENV_ID, _traces("hedge"), CANDIDATES, seed=0, **OPTIONS)  # type: ignore[arg-type]


def test_picks_hedge_on_hedge_traces(hedge_comparison: LearnerComparison) -> None:
    assert hedge_comparison.best == "hedge"
    assert hedge_comparison.decisive  # logit-Q is significantly worse (z > 2)
    assert hedge_comparison["logit-q"].significant


def test_picks_logit_q_on_logit_q_traces() -> None:
    comparison = compare_learners(ENV_ID, _traces("logit-q"), CANDIDATES, seed=0, **OPTIONS)  # type: ignore[arg-type]
    assert comparison.best == "logit-q"
    assert comparison.decisive
    assert set(comparison["logit-q"].learned) == {"alpha", "epsilon"}  # identified, so learned
    assert comparison["hedge"].learned == {}  # Hedge's dynamics learn neither


def test_every_episode_has_an_out_of_fold_score_and_the_se_is_the_paired_one(
    hedge_comparison: LearnerComparison,
) -> None:
    comparison = hedge_comparison
    n_episodes = len(comparison.fold_of_episode)
    assert sorted(np.bincount(comparison.fold_of_episode).tolist()) == [12, 12]
    best, other = comparison.scores
    for score in comparison.scores:
        assert score.episode_nll.shape == (n_episodes,) and np.isfinite(score.episode_nll).all()
        assert score.total_nll == pytest.approx(score.episode_nll.sum())
        assert score.mean_nll == pytest.approx(score.total_nll / (n_episodes * comparison.n_terms))
    differences = other.episode_nll - best.episode_nll
    assert other.diff_to_best == pytest.approx(differences.sum())
    assert other.diff_se == pytest.approx(math.sqrt(n_episodes) * differences.std(ddof=1))
    assert other.z == pytest.approx(other.diff_to_best / other.diff_se)
    assert (best.diff_to_best, best.diff_se, best.z, best.significant) == (0.0, 0.0, 0.0, False)
    # an out-of-fold score is the held-out fold's NLL under the fit that did not see it
    fold0 = np.flatnonzero(comparison.fold_of_episode == 0)
    fit0 = comparison.fits["hedge"][0]
    scored = episode_nll(fit0, _traces("hedge").episodes(fold0))
    np.testing.assert_allclose(comparison["hedge"].episode_nll[fold0], scored)
    assert fit0.n_train_episodes + fit0.n_valid_episodes == n_episodes - len(fold0)


def test_table_rows_and_printable_string(hedge_comparison: LearnerComparison) -> None:
    rows = hedge_comparison.table
    assert [row["candidate"] for row in rows] == ["hedge", "logit-q"]
    assert rows[0]["significant"] == "best" and rows[1]["significant"] == "yes"
    text = hedge_comparison.format_table()
    assert text.splitlines()[0].startswith("| candidate") and len(text.splitlines()) == 4
    assert "best 'hedge'" in str(hedge_comparison)


def test_learn_alpha_false_keeps_the_candidates_alpha() -> None:
    traces = _traces("logit-q", n_episodes=8, n_rounds=10)
    options = {**OPTIONS, "epochs": 1}
    comparison = compare_learners(ENV_ID, traces, CANDIDATES, learn_alpha=False, learn_epsilon=False, **options)  # type: ignore[arg-type]
    assert comparison["logit-q"].learned == {}
    assert all(result.learner == CANDIDATES["logit-q"] for result in comparison.fits["logit-q"])


@pytest.mark.parametrize(
    ("candidates", "options", "message"),
    [
        ({"logit-q": LogitQ()}, {}, "at least two"),
        ({"logit-q": LogitQ(), "hedge": "hedge"}, {}, "must be a mechgym Learner"),
        (CANDIDATES, {"folds": 1}, "folds must be an integer >= 2"),
        (CANDIDATES, {"folds": 5}, "folds must be an integer < 5"),
        (CANDIDATES, {"learner": LogitQ()}, "compare_learners sets learner itself"),
        (CANDIDATES, {"epoch": 3}, "epochs"),  # did you mean
        (CANDIDATES, {"seed": -1}, "seed must be an integer"),
    ],
    ids=["one-candidate", "not-a-learner", "one-fold", "more-folds-than-episodes", "learner", "typo", "seed"],
)
def test_refuses_bad_input_before_fitting(candidates: object, options: dict[str, object], message: str) -> None:
    traces = _traces("hedge", n_episodes=4, n_rounds=5)
    with pytest.raises(ConfigurationError, match=message):
        compare_learners(ENV_ID, traces, candidates, progress=False, **options)  # type: ignore[arg-type]


def test_refuses_folds_that_leave_no_validation_split() -> None:
    traces = _traces("hedge", n_episodes=2, n_rounds=5)  # 2 folds of 2 episodes: 1 episode per fit
    with pytest.raises(ConfigurationError, match="too few for a validation split"):
        compare_learners(ENV_ID, traces, CANDIDATES, progress=False, folds=2)
    compare_learners(ENV_ID, traces, CANDIDATES, progress=False, folds=2, valid_fraction=0.0, epochs=1, device="cpu")


def test_summary_table_counts_wins_per_game_and_generator() -> None:
    rows = [
        {
            "game": "e1",
            "generator": "hedge",
            "seed": s,
            "best": b,
            "true_wins": int(b == "hedge"),
            "decisive": d,
            "runner_up_z": z,
        }
        for s, b, d, z in ((0, "hedge", 1, 3.0), (1, "logit-q", 1, 2.5), (2, "hedge", 0, 1.5))
    ]
    table = summary_table(rows)
    assert "| E1 | hedge | 2/3 | 1/3 | 1/3 | hedge, logit-q, hedge | 2.5 |" in table


def test_exported_from_the_package() -> None:
    assert diml_inverse.compare_learners is compare_learners


def test_study_row_names_the_winner_of_one_tiny_comparison() -> None:
    config = StudyConfig(
        games=("e3",),
        generators=("hedge",),
        n_episodes=6,
        folds=2,
        fit_options={"epochs": 1, "model": "structured", "device": "cpu"},
    )
    row = run_comparison(config, "e3", "hedge", 0)
    assert row["best"] in LEARNER_GENERATORS and row["true_wins"] == int(row["best"] == "hedge")
    assert row[f"diff_{row['best']}"] == 0 and row["runner_up"] != row["best"]
    assert all(row[f"diff_{name}"] >= 0 for name in LEARNER_GENERATORS)
    assert [key for key in row if key.startswith("diff_")] == [f"diff_{name}" for name in LEARNER_GENERATORS]


def test_study_command_refuses_unknown_games(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'e2'"):
        study_main(["--out", "unused", "--games", "e22"])
