"""Full-batch fits (optimizer="lbfgs"), the prior search (tune_prior) and model="auto" choosing among families.

Recovery at fixed seeds on three zoo games, against the default before the recovery study (``model="neural"`` or
``"anonymous"`` with Adam), whose ratios are in ``runs``-free form in docs/results.md ("What improves recovery").
"""

from __future__ import annotations

import re

import pytest
import torch

import diml_inverse
import mechgym
from diml_inverse.experiments.zoo import register_zoo, zoo_game
from diml_inverse.full_batch import NESTED_MIN_GAIN, coordinate_search
from diml_inverse.likelihood import log_likelihood
from diml_inverse.models import PRIOR_SEARCH, PriorGrid, auto_family_for, auto_model_candidates
from mechgym.errors import ConfigurationError
from mechgym.mechanisms import (
    AdditiveCountMechanism,
    InteractionMechanism,
    TabularMechanism,
    TotalsInteractionMechanism,
)
from mechgym.traces import TraceDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GAME = "mechgym/Congestion-v0"  # 4 agents x 5 resources: a 625-entry table


@pytest.fixture(scope="module")
def traces() -> TraceDataset:
    return mechgym.rollout(GAME, n_episodes=12, n_rounds=20, seed=0)


def _objective(model: TabularMechanism, actions: torch.Tensor, learner: mechgym.learners.Learner) -> torch.Tensor:
    n_terms = actions.shape[0] * (actions.shape[1] - 1) * actions.shape[2]
    return -log_likelihood(model, actions, learner, validate=False) / n_terms


def test_lbfgs_reaches_a_stationary_point_below_adams_loss(traces: TraceDataset) -> None:
    """A tabular fit by L-BFGS ends where the gradient vanishes, at a lower training loss than Adam's 200 steps."""
    options = {"model": "tabular", "valid_fraction": 0.0, "payoff_l2": 0.0, "progress": False, "seed": 0}
    lbfgs = diml_inverse.fit(GAME, traces, optimizer="lbfgs", epochs=50, **options)
    adam = diml_inverse.fit(GAME, traces, optimizer="adam", epochs=20, **options)
    actions = traces.actions_tensor()
    model = lbfgs.mechanism
    model.requires_grad_(True)  # a result's mechanism is a plain module: differentiate the loss at the optimum
    loss = _objective(model, actions, lbfgs.learner)
    (gradient,) = torch.autograd.grad(loss, model.table)
    assert float(gradient.abs().max()) < 1e-5
    with torch.no_grad():
        assert float(loss) < float(_objective(adam.mechanism, actions, adam.learner)) - 1e-3
    assert len(lbfgs.history) < 50  # it stopped once converged
    assert lbfgs.model_search == []


def test_default_small_game_fit_searches_the_prior_by_its_evidence(traces: TraceDataset) -> None:
    result = diml_inverse.fit(GAME, traces, model="interaction", epochs=5, progress=False, seed=0)
    assert result.config.prior_selection == "auto" and result.config.prior_scoring() == "evidence"
    rows = result.model_search
    assert rows and all("evidence_nll" in row and "valid_nll" in row for row in rows)
    assert (rows[0]["prior_decay"], rows[0]["prior_scale"]) == (0.25, 1.0)  # the grid's first values
    chosen = [row for row in rows if row["selected"] == 1]
    assert len(chosen) == 1 and chosen[0]["valid_nll"] == min(row["valid_nll"] for row in rows)
    config = result.mechanism.config()
    assert (config["prior_decay"], config["prior_scale"]) == (chosen[0]["prior_decay"], chosen[0]["prior_scale"])


@pytest.mark.parametrize("prior_selection", ["evidence", "valid"])
def test_interaction_totals_searches_the_totals_tables_prior_too(traces: TraceDataset, prior_selection: str) -> None:
    result = diml_inverse.fit(
        GAME, traces, model="interaction_totals", epochs=3, progress=False, seed=0, prior_selection=prior_selection
    )
    assert isinstance(result.mechanism, TotalsInteractionMechanism)
    rows = result.model_search
    assert rows[0]["prior_total"] == 1.0 and len(rows) <= (7 if prior_selection == "valid" else 6)
    chosen = next(row for row in rows if row["selected"] == 1)
    assert result.mechanism.config()["prior_total"] == chosen["prior_total"]
    if prior_selection == "valid":  # the coordinate search tries the totals factor's values last
        assert sorted(row["prior_total"] for row in rows[-2:]) == [0.1, 3.0]


def test_learned_learner_quantities_search_the_prior_by_held_out_nll(traces: TraceDataset) -> None:
    """They have no prior, so no evidence: ``"auto"`` scores by the validation episodes."""
    config = diml_inverse.FitConfig(learn_q0=True)
    assert config.prior_scoring() == "valid"
    assert diml_inverse.FitConfig(learn_alpha=True, prior_selection="valid").prior_scoring() == "valid"
    assert diml_inverse.FitConfig().prior_scoring() == "evidence"


def test_held_out_search_of_the_prior(traces: TraceDataset) -> None:
    result = diml_inverse.fit(
        GAME, traces, model="interaction", epochs=5, progress=False, seed=0, prior_selection="valid"
    )
    assert result.model_name == "interaction" and isinstance(result.mechanism, InteractionMechanism)
    rows = result.model_search
    assert [(row["prior_decay"], row["prior_scale"]) for row in rows[:3]] == [(0.25, 1.0), (0.5, 1.0), (1.0, 1.0)]
    assert len(rows) == 5 and sum(row["selected"] for row in rows) == 1
    chosen = next(row for row in rows if row["selected"] == 1)
    assert chosen["valid_nll"] == min(row["valid_nll"] for row in rows)
    config = result.mechanism.config()
    assert (config["prior_decay"], config["prior_scale"]) == (chosen["prior_decay"], chosen["prior_scale"])
    assert result.history[result.selected_epoch - 1]["valid_nll"] == pytest.approx(chosen["valid_nll"])


def test_no_search_when_the_prior_is_given_or_held_out_scoring_has_no_validation_split(traces: TraceDataset) -> None:
    given = diml_inverse.fit(
        GAME, traces, model="interaction", model_kwargs={"prior_decay": 0.5}, epochs=2, progress=False
    )
    assert given.model_search == [] and given.mechanism.config()["prior_decay"] == 0.5
    unsplit = diml_inverse.fit(GAME, traces, epochs=2, valid_fraction=0.0, progress=False, prior_selection="valid")
    assert unsplit.model_search == [] and unsplit.model_name == "interaction"  # nothing to choose by: the first
    by_evidence = diml_inverse.fit(GAME, traces, epochs=2, valid_fraction=0.0, progress=False)
    assert by_evidence.model_search and all("valid_nll" not in row for row in by_evidence.model_search)
    untuned = diml_inverse.fit(GAME, traces, model="interaction", epochs=2, tune_prior=False, progress=False)
    assert untuned.model_search == [] and untuned.mechanism.config()["prior_scale"] == 1.0


def test_search_and_prior_survive_save_and_load(traces: TraceDataset, tmp_path: object) -> None:
    result = diml_inverse.fit(GAME, traces.episodes(slice(0, 8)), epochs=2, progress=False)
    path = result.save(tmp_path / "fit.pt")  # type: ignore[operator]
    loaded = diml_inverse.load(path)
    assert loaded.model_search == result.model_search
    assert loaded.mechanism.config() == result.mechanism.config()
    joint = traces.actions_tensor()[0, :5]
    torch.testing.assert_close(loaded.payoff_differences(joint), result.payoff_differences(joint))


def test_auto_with_model_kwargs_builds_the_family_that_takes_them(traces: TraceDataset) -> None:
    result = diml_inverse.fit(GAME, traces, model_kwargs={"hidden": 8}, epochs=1, progress=False)
    assert result.model_name == "neural" and result.model_search == []
    with pytest.raises(ConfigurationError, match="Did you mean 'hidden'"):
        diml_inverse.fit(GAME, traces, model_kwargs={"hiden": 8}, epochs=1, progress=False)


def test_auto_tries_every_anonymous_family_and_keeps_the_best_one() -> None:
    env_id = "mechgym/AnonymousGame-v0"
    kwargs = {"n_agents": 20, "n_actions": 6}
    candidates = auto_model_candidates(mechgym.make(env_id, **kwargs).mechanism)
    assert candidates == ["additive_counts", "aggregate_counts", "anonymous"]
    traces = mechgym.rollout(mechgym.make(env_id, **kwargs), n_episodes=10, n_rounds=20, seed=0)
    options = {"epochs": 2, "batch_size": 8, "progress": False, "prior_selection": "valid"}
    result = diml_inverse.fit(env_id, traces, model_selection="best_valid", **options)
    models = [row["model"] for row in result.model_search]
    assert models[-1] == "anonymous" and set(models[:-1]) == {"additive_counts", "aggregate_counts"}
    assert models.index("aggregate_counts") > models.index("additive_counts")
    crosses = [row["prior_cross"] for row in result.model_search[:3]]
    assert crosses == [1.0, 0.1, 0.01]  # the held-out search starts with how much the cross curves are shrunk
    best = min(result.model_search, key=lambda row: row["valid_nll"])
    assert best["selected"] == 1 and result.model_name == best["model"]
    assert sum(row["selected"] for row in result.model_search) == 1
    assert all("family_gap" not in row for row in result.model_search)  # only the one-standard-error rule needs it

    # the default keeps the simplest family within one standard error of the best held-out NLL
    one_se = diml_inverse.fit(env_id, traces, **options)
    assert one_se.config.model_selection == "one_se"
    rows = one_se.model_search
    assert [row["model"] for row in rows] == models and [row["valid_nll"] for row in rows] == pytest.approx(
        [row["valid_nll"] for row in result.model_search]
    )  # the same candidates: only the choice among the families differs
    gaps = {row["model"]: (row["family_gap"], row["family_gap_se"]) for row in rows}
    assert list(gaps) == ["additive_counts", "aggregate_counts", "anonymous"]
    assert min(gap for gap, _ in gaps.values()) == 0.0 and all(se >= 0 for _, se in gaps.values())
    assert gaps[best["model"]][0] == pytest.approx(0.0, abs=1e-9)  # the best is the same by either measure
    expected = next(family for family, (gap, se) in gaps.items() if gap <= se)
    assert one_se.model_name == expected and sum(row["selected"] for row in rows) == 1
    chosen = next(row for row in rows if row["selected"] == 1)
    assert chosen["model"] == expected


def test_one_standard_error_rule_against_per_episode_nlls() -> None:
    """The gap and its standard error are the paired per-episode differences of the returned fits on the
    validation episodes; with one validation episode there is no standard error and the best is kept."""
    env_id = "mechgym/NeuralMechanism-v0"
    traces = mechgym.rollout(env_id, n_episodes=10, n_rounds=15, seed=2)
    options = {"epochs": 3, "progress": False, "seed": 0, "auto_candidates": [*OLD_SMALL_CANDIDATES]}
    result = diml_inverse.fit(env_id, traces, **options)
    assert result.n_valid_episodes == 2
    valid = traces.episodes(slice(8, 10))
    trained = list(dict.fromkeys(str(row["model"]) for row in result.model_search if "family_gap" in row))
    by_family = {}
    for family in trained:
        alone = diml_inverse.fit(env_id, traces, model=family, epochs=3, progress=False, seed=0)
        terms = (valid.n_rounds - 1) * valid.n_agents
        by_family[family] = diml_inverse.comparison.episode_nll(alone, valid) / terms
    best = min(by_family, key=lambda family: by_family[family].mean())
    for row in result.model_search:
        if "family_gap" not in row:  # a nested family screened out by its predicted evidence: never trained
            assert row["evidence_gain"] < NESTED_MIN_GAIN and row["model"] == "interaction_totals"
            continue
        difference = by_family[str(row["model"])] - by_family[best]
        assert row["family_gap"] == pytest.approx(difference.mean(), rel=1e-6, abs=1e-12)
        assert row["family_gap_se"] == pytest.approx(difference.std(ddof=1) / 2**0.5, rel=1e-6, abs=1e-12)
    kept = next(
        str(row["model"]) for row in result.model_search if row.get("family_gap", 1) <= row.get("family_gap_se", 0)
    )
    assert result.model_name == kept  # the first, simplest, within one standard error

    single = diml_inverse.fit(env_id, traces.episodes(slice(0, 5)), **options)
    assert single.n_valid_episodes == 1
    assert all("family_gap" not in row for row in single.model_search)
    best_row = min((row for row in single.model_search if "valid_nll" in row), key=lambda row: row["valid_nll"])
    assert single.model_name == best_row["model"]


def test_model_selection_is_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"model_selection.*'one_se' or 'best_valid'"):
        diml_inverse.FitConfig(model_selection="aic")  # type: ignore[arg-type]


#: ``model="auto"``'s candidates on small games before 2026-12-04, which also fitted the neural network.
OLD_SMALL_CANDIDATES = ("interaction", "interaction_totals", "neural")


def test_auto_candidates_replace_the_default_families() -> None:
    env_id = "mechgym/NeuralMechanism-v0"
    traces = mechgym.rollout(env_id, n_episodes=10, n_rounds=15, seed=2)
    default = diml_inverse.fit(env_id, traces, epochs=2, progress=False, seed=0)
    assert {row["model"] for row in default.model_search} == {"interaction", "interaction_totals"}
    assert default.model_name == "interaction" and default.config.auto_candidates is None
    chosen = diml_inverse.fit(env_id, traces, epochs=2, progress=False, seed=0, auto_candidates=["neural", "tabular"])
    assert [row["model"] for row in chosen.model_search] == ["neural", "tabular"]  # in the order given
    assert chosen.config.auto_candidates == ("neural", "tabular")  # stored as a tuple, saved as a list
    first = diml_inverse.fit(env_id, traces, epochs=2, progress=False, seed=0, auto_candidates=["neural"])
    assert first.model_name == "neural" and first.model_search == []  # one family: nothing to choose
    # the nested family without the one it nests is trained from scratch (no screen)
    alone = diml_inverse.fit(env_id, traces, epochs=2, progress=False, seed=0, auto_candidates=["interaction_totals"])
    assert alone.model_name == "interaction_totals"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "non-empty list of model family names"),
        ("neural", "non-empty list of model family names"),
        (["interactoin"], "unknown model family 'interactoin'. Did you mean 'interaction'"),
        (["auto"], "'auto' is not one of them"),
        (["neural", "neural"], "names a family twice"),
    ],
)
def test_auto_candidates_are_checked(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        diml_inverse.FitConfig(auto_candidates=value)  # type: ignore[arg-type]


def test_auto_candidates_need_model_auto() -> None:
    with pytest.raises(ConfigurationError, match=r"model='neural' fits one family; pass model='auto'"):
        diml_inverse.FitConfig(model="neural", auto_candidates=["interaction"])


def test_auto_candidates_by_game_size() -> None:
    three = mechgym.make("mechgym/NeuralMechanism-v0").mechanism
    assert auto_model_candidates(three) == ["interaction", "interaction_totals"]  # the network: auto_candidates
    two = mechgym.make("mechgym/NeuralMechanism-v0", n_agents=2).mechanism  # the others' total is one action
    assert auto_model_candidates(two) == ["interaction"]
    assert auto_family_for(three, {"hidden": 8}) == "neural"  # a network's argument still builds the network
    assert auto_family_for(three, None, ["neural", "interaction"]) == "neural"
    huge = mechgym.make("mechgym/AnonymousGame-v0", n_agents=300, n_actions=40).mechanism
    assert auto_model_candidates(huge) == ["additive_counts", "anonymous"]  # the totals curves would be 466,000 more
    binary = mechgym.make("mechgym/AnonymousGame-v0", n_agents=30, n_actions=2).mechanism
    assert auto_model_candidates(binary) == ["additive_counts", "anonymous"]  # the total is the count of action 1


@pytest.mark.slow
def test_aggregate_count_model_recovers_the_threshold_public_good_twice_as_well_as_the_additive_one() -> None:
    """Seed 0. The additive count model alone (the default before the aggregate model joined ``model="auto"``):
    ratio 0.223, its bias (oracle gap 0.006 nats at every data size); the aggregate model 0.060
    (``zoo --games ThresholdPublicGood --fit-options '{"model": "aggregate_counts"}'``)."""
    assert _zoo_ratio("ThresholdPublicGood", 0) < 0.223 / 2


@pytest.mark.parametrize("option", [{"round_window": 10}, {"agent_batch_size": 2}])
def test_lbfgs_refuses_minibatch_only_options(option: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError, match="optimizer='lbfgs'"):
        diml_inverse.FitConfig(optimizer="lbfgs", **option)


def test_unknown_optimizer_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigurationError, match="'auto', 'adam' or 'lbfgs'"):
        diml_inverse.FitConfig(optimizer="newton")  # type: ignore[arg-type]


def _zoo_ratio(name: str, seed: int) -> float:
    """The default fit's diff_mse / zero baseline on zoo game ``name``, recorded and scored as the zoo does."""
    from diml_inverse.experiments.zoo import run_zoo_game, zoo_config

    register_zoo()
    if name not in ("E1", "E2", "E3"):
        zoo_game(name)
    return float(run_zoo_game(zoo_config(games=[name]), name, seed)["ratio"])


def test_default_no_longer_keeps_the_network_on_the_papers_first_game() -> None:
    """E1 seed 2, scored as ``zoo --games E1``: the candidates before 2026-12-04 (the network too) kept the network by
    0.0018 nats of held-out NLL, 1.4 standard errors, and recovered 0.324; the interaction model alone, now the
    default, 0.066."""
    assert _zoo_ratio("E1", 2) < 0.324 / 2


@pytest.mark.parametrize(
    ("name", "before"),
    [
        ("RandomNormalForm", 0.601),  # the neural default of before: oracle gap 0.17
        ("Polymatrix", 0.323),
        ("RandomNormalFormStrong", 0.704),
    ],
)
def test_default_recovers_small_zoo_games_twice_as_well_as_before(name: str, before: float) -> None:
    """Seed 0. Before: model="neural" with Adam (ratio ``before``); now 0.068, 0.062 and 0.055 (the zoo's seed-0
    rows in docs/results.md, the prior chosen by its evidence)."""
    assert _zoo_ratio(name, 0) < before / 2


def test_auto_fits_the_totals_tables_only_where_their_evidence_is_predicted_higher() -> None:
    """Polymatrix seed 0: a pairwise game, where the totals tables are predicted to gain 0.0 nats at the interaction
    model's fit, so they are not trained; threshold participation seed 0: about 128 nats, trained and kept, and
    started from the prediction's prior."""
    from diml_inverse.experiments.zoo.runner import record_zoo_game, zoo_config

    register_zoo()
    for name, kept in (("Polymatrix", "interaction"), ("ThresholdParticipation", "interaction_totals")):
        game, config = zoo_game(name), zoo_config(games=[name], progress=False)
        _, traces = record_zoo_game(game, 0, *config.sizes(game), f"zoo/{name}")
        train, _ = traces.split(config.train_fraction)
        result = diml_inverse.fit(game.env_id, train, config=config.training, seed=0)
        rows = [row for row in result.model_search if row["model"] == "interaction_totals"]
        assert result.model_name == kept
        if kept == "interaction":
            assert len(rows) == 1 and rows[0]["evidence_gain"] < NESTED_MIN_GAIN and "valid_nll" not in rows[0]
        else:  # trained, from the prediction's prior (prior_total 4.0, measured), not the grid's start (1.0)
            assert rows and all("evidence_gain" not in row for row in rows)
            assert rows[0]["prior_total"] > PRIOR_SEARCH["interaction_totals"].coordinates[2][1][0]


def test_totals_tables_recover_threshold_participation_twice_as_well_as_the_interaction_model() -> None:
    """Seed 0. A threshold on the total contribution of four agents is a third-order interaction. The default
    before the totals tables joined ``model="auto"`` (the interaction model, then the network): ratio 0.230, oracle
    gap 0.0095 nats; now ``"interaction_totals"`` is kept, 0.079, oracle gap 0.0035 (docs/results.md)."""
    assert _zoo_ratio("ThresholdParticipation", 0) < 0.230 / 2


@pytest.mark.slow
def test_default_recovers_el_farol_twice_as_well_as_before() -> None:
    """Seed 0. Before: the anonymous count network (ratio 0.718); now the additive count model, about 0.01."""
    assert _zoo_ratio("ElFarol", 0) < 0.718 / 2


def test_additive_count_model_is_buildable_by_name() -> None:
    model = diml_inverse.build_model("additive_counts", mechgym.make("mechgym/AnonymousGame-v0").mechanism)
    assert isinstance(model, AdditiveCountMechanism)


def test_coordinate_search_moves_along_each_argument_and_extends_a_winning_edge() -> None:
    """On a bowl with its minimum past the grid, the search reaches it by extension and never scores twice."""
    grid = PriorGrid((("a", (1.0, 0.1, 10.0)), ("b", (3.0, 30.0))), sweeps=3, extend=2)
    calls: list[tuple[float, float]] = []

    def bowl(prior: dict[str, float]) -> float:
        calls.append((prior["a"], prior["b"]))
        return (torch.tensor(prior["a"]).log10() - 1.6).abs().item() + (
            torch.tensor(prior["b"]).log10() - 3
        ).abs().item()

    best = coordinate_search(grid, bowl)
    assert best == {"a": 100.0, "b": 3000.0}  # 10 -> 100 (better), 1000 worse; 30 -> 300 -> 3000
    assert len(calls) == len(set(calls))
    assert calls[:3] == [(1.0, 3.0), (0.1, 3.0), (10.0, 3.0)]


def test_coordinate_search_keeps_the_start_on_ties_and_stops_when_nothing_moves() -> None:
    grid = PriorGrid((("a", (1.0, 2.0)), ("b", (1.0, 2.0))), sweeps=5, extend=3)
    calls: list[dict[str, float]] = []
    assert coordinate_search(grid, lambda prior: calls.append(prior) or 0.0) == {"a": 1.0, "b": 1.0}
    assert len(calls) == 3  # the start, a=2 and b=2: a flat objective moves nothing, so one pass


def test_interaction_search_is_five_candidates_at_most() -> None:
    """Small games keep their fit time: the interaction grid is one pass, no extension (3 decays, then 2 scales)."""
    grid = PRIOR_SEARCH["interaction"]
    calls: list[dict[str, float]] = []
    coordinate_search(grid, lambda prior: calls.append(prior) or -prior["prior_decay"] - prior["prior_scale"])
    assert len(calls) == 5 and (grid.sweeps, grid.extend) == (1, 0)


def test_auto_scores_large_models_by_held_out_nll_and_evidence_checks_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5-agent x 5-action interaction model has 32,400 parameters: its evidence would hold dense 32,400^2 float64
    Hessians (8 GiB each), so "auto" scores its priors on the validation episodes; "evidence" checks the memory."""
    from diml_inverse.full_batch import EVIDENCE_MAX_PARAMETERS, prior_scoring
    from mechgym.memory import MemoryBudgetError

    large = InteractionMechanism(5, 5)
    assert sum(parameter.numel() for parameter in large.parameters()) > EVIDENCE_MAX_PARAMETERS
    assert prior_scoring(large, diml_inverse.FitConfig()) == "valid"
    assert prior_scoring(InteractionMechanism(3, 4), diml_inverse.FitConfig()) == "evidence"
    monkeypatch.setattr("mechgym.memory.available_memory_bytes", lambda device="cpu": 1 << 30)
    with pytest.raises(MemoryBudgetError, match="prior_selection='valid' needs none"):
        prior_scoring(large, diml_inverse.FitConfig(prior_selection="evidence"))
    assert prior_scoring(large, diml_inverse.FitConfig(prior_selection="evidence", check_memory=False)) == "evidence"
