"""The model families with a prior: InteractionMechanism (small games), AdditiveCountMechanism and
AggregateCountMechanism (anonymous)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mechgym.errors import ConfigurationError
from mechgym.mechanisms import (
    MECHANISM_FAMILIES,
    AdditiveCountMechanism,
    AggregateCountMechanism,
    InteractionMechanism,
    TotalsInteractionMechanism,
    all_joint_actions,
    build_mechanism,
)
from mechgym.mechanisms.interaction import interaction_parameter_count


def _randomised(mechanism: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in mechanism.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))


def _interaction_reference(model: InteractionMechanism, joint: tuple[int, ...]) -> list[float]:
    """The payoffs summed term by term, in the order the constructor lays the parameters out (each agent's ANOVA
    terms, then its totals table ``[a_i, s_-i]`` when there is one)."""
    n, a = model.n_agents, model.n_actions
    theta, start, payoffs = model.theta.detach(), 0, []
    for agent in range(n):
        total = 0.0
        others = [j for j in range(n) if j != agent]
        for order in range(model.max_order + 1):
            for subset in itertools.combinations(others, order):
                index = 0
                for member in (agent, *subset):
                    index = index * a + joint[member]
                total += float(theta[start + index])
                start += a ** (order + 1)
        if model.prior_total is not None and n >= 3:
            width = (n - 1) * (a - 1) + 1
            total += float(theta[start + joint[agent] * width + sum(joint[j] for j in others)])
            start += a * width
        payoffs.append(total)
    return payoffs


@pytest.mark.parametrize(
    ("n_agents", "n_actions", "max_order", "prior_total"),
    [(3, 4, None, None), (4, 3, 1, None), (2, 5, 0, None), (3, 4, None, 0.5), (4, 3, 1, 2.0), (2, 5, 0, 1.0)],
)
def test_interaction_payoffs_are_the_sum_of_their_terms(
    n_agents: int, n_actions: int, max_order: int | None, prior_total: float | None
) -> None:
    model = InteractionMechanism(n_agents, n_actions, max_order=max_order, prior_total=prior_total)
    totals = prior_total is not None and n_agents >= 3
    assert model.theta.numel() == interaction_parameter_count(n_agents, n_actions, max_order, totals)
    _randomised(model)
    joints = all_joint_actions(n_agents, n_actions)
    payoffs = model(joints)
    for row in range(0, joints.shape[0], 7):
        joint = tuple(int(x) for x in joints[row])
        assert payoffs[row].tolist() == pytest.approx(_interaction_reference(model, joint), abs=1e-5)


@pytest.mark.parametrize("prior_total", [None, 1.0])
def test_interaction_counterfactuals_match_the_generic_enumeration(prior_total: float | None) -> None:
    model = InteractionMechanism(4, 3, prior_total=prior_total)
    _randomised(model, seed=1)
    joint = torch.randint(0, 3, (5, 7, 4), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model.counterfactual_payoffs(joint), model.counterfactual_payoffs_generic(joint))


def test_every_order_holds_every_game_and_order_one_is_a_polymatrix_game() -> None:
    """With every order the family spans every payoff table; with max_order=1 it spans pairwise (polymatrix) games."""
    full = InteractionMechanism(3, 3)
    table = torch.randn(27, 3, generator=torch.Generator().manual_seed(3))
    design = torch.func.jacrev(
        lambda theta: torch.func.functional_call(full, {"theta": theta}, (all_joint_actions(3, 3),))
    )(full.theta.detach())
    solution = torch.linalg.lstsq(design.reshape(27 * 3, -1), table.reshape(-1, 1)).solution
    with torch.no_grad():
        full.theta.copy_(solution.squeeze(-1))
    torch.testing.assert_close(full(all_joint_actions(3, 3)), table, atol=1e-4, rtol=1e-4)
    pairwise = InteractionMechanism(3, 3, max_order=1)
    assert pairwise.theta.numel() == 3 * (3 + 2 * 9)


def test_interaction_totals_tables_represent_a_threshold_on_the_total_exactly() -> None:
    """A payoff that depends on one's own action and the others' total (a threshold public good) is the totals
    table alone: with no ANOVA term past the main effects it is exact, as the pairwise model is not."""
    n, a = 4, 3
    joints = all_joint_actions(n, a)
    others_total = joints.sum(-1, keepdim=True) - joints
    truth = (joints.sum(-1, keepdim=True) >= 5).float() * torch.tensor([1.0, 1.5, 0.8, 1.2]) - 0.3 * joints

    def residual(model: InteractionMechanism) -> float:
        design = torch.func.jacrev(lambda theta: torch.func.functional_call(model, {"theta": theta}, (joints,)))(
            model.theta.detach()
        )
        solution = torch.linalg.lstsq(design.reshape(truth.numel(), -1).double(), truth.reshape(-1, 1).double())
        fitted = (design.reshape(truth.numel(), -1).double() @ solution.solution).reshape(truth.shape)
        return float((fitted - truth).abs().max())

    assert residual(InteractionMechanism(n, a, max_order=0, prior_total=1.0)) < 1e-5
    assert residual(InteractionMechanism(n, a, max_order=1)) > 0.1
    assert int(others_total.max()) + 1 == (n - 1) * (a - 1) + 1  # the table's width


def test_interaction_totals_prior_is_its_own_class_scaled_by_prior_total() -> None:
    model = InteractionMechanism(3, 2, prior_scale=2.0, prior_decay=0.5, prior_total=0.25)
    labels = model.prior_classes()
    assert labels.max() == 3 and int((labels == 3).sum()) == 3 * 2 * 3  # per agent A x ((N-1)(A-1)+1) = 2 x 3
    with torch.no_grad():
        model.theta.fill_(1.0)
    # per agent as in the test below, plus 6 totals entries of sd 2 * 0.25 = 0.5
    expected = 3 * 0.5 * (2 / 4.0 + 8 / 1.0 + 8 / 0.25 + 6 / 0.25)
    assert float(model.prior_penalty().detach()) == pytest.approx(expected)
    torch.testing.assert_close(model.prior_precision(), torch.tensor([1 / 4.0, 1.0, 4.0, 4.0])[labels])
    two = InteractionMechanism(2, 3, prior_total=1.0)  # the others' total is one action: no tables
    assert two.theta.numel() == interaction_parameter_count(2, 3) and two.config()["prior_total"] == 1.0


def test_totals_model_starts_from_an_interaction_fit_with_its_payoffs_and_prior() -> None:
    base = InteractionMechanism(4, 3, prior_scale=0.3, prior_decay=1.7)
    _randomised(base, seed=8)
    started = TotalsInteractionMechanism(4, 3, prior_total=2.0).starting_from(base)
    assert started is not None
    assert (started.prior_scale, started.prior_decay, started.prior_total) == (0.3, 1.7, 2.0)
    joints = all_joint_actions(4, 3)
    torch.testing.assert_close(started(joints), base(joints))  # its totals tables are zero
    assert bool((started.theta[started.prior_classes() == 4] == 0).all())
    assert TotalsInteractionMechanism(4, 3).starting_from(InteractionMechanism(4, 3, max_order=1)) is None
    assert TotalsInteractionMechanism(4, 3).starting_from(InteractionMechanism(4, 3, prior_total=1.0)) is None


def test_interaction_prior_shrinks_higher_orders_harder() -> None:
    model = InteractionMechanism(3, 2, prior_scale=2.0, prior_decay=0.5)
    with torch.no_grad():
        model.theta.fill_(1.0)
    # per agent: order 0 has 2 entries (sd 2), order 1 has 2 x 4 (sd 1), order 2 has 8 (sd 0.5)
    expected = 3 * 0.5 * (2 / 4.0 + 8 / 1.0 + 8 / 0.25)
    assert float(model.prior_penalty().detach()) == pytest.approx(expected)


def test_additive_counts_counterfactuals_match_the_generic_enumeration() -> None:
    model = AdditiveCountMechanism(9, 4)
    _randomised(model, seed=4)
    joint = torch.randint(0, 4, (3, 6, 9), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model.counterfactual_payoffs(joint), model.counterfactual_payoffs_generic(joint))


def test_additive_counts_payoff_is_main_effect_plus_one_curve_value_per_action() -> None:
    model = AdditiveCountMechanism(5, 3)
    _randomised(model, seed=6)
    joint = torch.tensor([0, 2, 2, 1, 0])
    others = torch.tensor([1.0, 1.0, 2.0])  # agent 0 sees one other on 0, one on 1, two on 2
    with torch.no_grad():
        expected = model.main[0] + sum(model.curves[0, b, int(others[b])] for b in range(3))
        assert float(model(joint)[0]) == pytest.approx(float(expected), abs=1e-6)


def test_additive_counts_prior_penalises_steps_and_levels() -> None:
    model = AdditiveCountMechanism(4, 2, prior_step=0.5, prior_scale=2.0)
    with torch.no_grad():
        model.curves.copy_(torch.arange(4.0).expand(2, 2, 4))
    steps = 4 * 3 * 1.0 / 0.25  # four curves, three unit steps each
    levels = 4 * (0 + 1 + 4 + 9) / 4.0
    assert float(model.prior_penalty().detach()) == pytest.approx(0.5 * (steps + levels))


def test_additive_counts_curvature_penalises_second_differences_only() -> None:
    line = AdditiveCountMechanism(5, 2, prior_step=0.5, prior_scale=2.0, prior_curvature=0.1)
    plain = AdditiveCountMechanism(5, 2, prior_step=0.5, prior_scale=2.0)
    with torch.no_grad():
        line.curves.copy_(torch.arange(5.0).expand(2, 2, 5))  # straight lines: no second difference
        plain.curves.copy_(line.curves)
    assert float(line.prior_penalty().detach()) == pytest.approx(float(plain.prior_penalty().detach()))
    with torch.no_grad():
        bent = torch.arange(5.0).square().expand(2, 2, 5)  # second differences of 2 at each of 3 inner counts
        line.curves.copy_(bent)
        plain.curves.copy_(bent)
    extra = 4 * 3 * 2.0**2 / 0.1**2  # four curves
    assert float((line.prior_penalty() - plain.prior_penalty()).detach()) == pytest.approx(0.5 * extra)


@pytest.mark.parametrize("values", [None, [0, 2, 3, 5]])
def test_aggregate_counts_counterfactuals_match_the_generic_enumeration(values: list[int] | None) -> None:
    model = AggregateCountMechanism(9, 4, prior_curvature=0.3, action_values=values)
    _randomised(model, seed=8)
    joint = torch.randint(0, 4, (3, 6, 9), generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(model.counterfactual_payoffs(joint), model.counterfactual_payoffs_generic(joint))


def test_aggregate_counts_payoff_adds_one_totals_value_to_the_additive_payoff() -> None:
    model = AggregateCountMechanism(5, 3, action_values=[0, 1, 3])
    _randomised(model, seed=10)
    joint = torch.tensor([0, 2, 2, 1, 0])
    others = torch.tensor([1.0, 1.0, 2.0])  # agent 0 sees one other on 0, one on 1, two on 2: a total of 0 + 1 + 6
    assert model.n_totals == 3 * 4 + 1
    with torch.no_grad():
        additive = model.main[0] + sum(model.curves[0, b, int(others[b])] for b in range(3))
        assert float(model(joint)[0]) == pytest.approx(float(additive + model.totals[0, 7]), abs=1e-6)


def test_aggregate_counts_represent_a_threshold_on_the_total_exactly() -> None:
    """A threshold public good's payoff is a step in the total contribution: zero error with the step's values."""
    n, a, threshold = 6, 3, 5
    model = AggregateCountMechanism(n, a)
    with torch.no_grad():
        own = torch.arange(a, dtype=torch.float32)
        totals = torch.arange(model.n_totals, dtype=torch.float32)
        model.totals.copy_((totals[None, :] + own[:, None] >= threshold).float() - 0.4 * own[:, None])
    joint = torch.randint(0, a, (50, n), generator=torch.Generator().manual_seed(11))
    total = joint.sum(-1, keepdim=True).float()
    expected = (total >= threshold).float() - 0.4 * joint.float()
    torch.testing.assert_close(model(joint), expected)


def test_aggregate_counts_prior_adds_the_totals_terms_scaled_by_prior_total() -> None:
    base = dict(prior_step=0.5, prior_scale=2.0, prior_curvature=0.25)
    near = AggregateCountMechanism(4, 2, **base, prior_total=1.0)
    far = AggregateCountMechanism(4, 2, **base, prior_total=2.0)
    plain = AdditiveCountMechanism(4, 2, **base)
    with torch.no_grad():
        for model in (near, far, plain):
            model.curves.copy_(torch.arange(4.0).expand(2, 2, 4))
        for model in (near, far):
            model.totals.copy_(torch.arange(4.0).square().expand(2, 4))  # totals 0 .. 3: 1 x (4 - 1) + 1 values
    # two curves 0, 1, 4, 9: steps 1, 3, 5; second differences 2, 2; levels 0, 1, 16, 81
    totals = 2 * 0.5 * ((1 + 9 + 25) / 0.5**2 + (4 + 4) / 0.25**2 + (1 + 16 + 81) / 2.0**2)
    extra = float((near.prior_penalty() - plain.prior_penalty()).detach())
    assert extra == pytest.approx(totals)
    assert float((far.prior_penalty() - plain.prior_penalty()).detach()) == pytest.approx(totals / 4)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: InteractionMechanism(3, 3, prior_scale=0.0), "prior_scale"),
        (lambda: InteractionMechanism(3, 3, prior_decay=math.inf), "prior_decay"),
        (lambda: InteractionMechanism(3, 3, max_order=3), "max_order"),
        (lambda: InteractionMechanism(3, 3, prior_total=0.0), "prior_total"),
        (lambda: InteractionMechanism(3, 3, prior_total=math.nan), "prior_total"),
        (lambda: TotalsInteractionMechanism(3, 3, prior_total=None), "prior_total"),
        (lambda: InteractionMechanism(30, 3), "too large"),
        (lambda: AdditiveCountMechanism(10, 3, prior_step=-1.0), "prior_step"),
        (lambda: AdditiveCountMechanism(10, 3, prior_scale=True), "prior_scale"),
        (lambda: AdditiveCountMechanism(10, 3, prior_curvature=0.0), "prior_curvature"),
        (lambda: AdditiveCountMechanism(10, 3, prior_curvature=math.nan), "prior_curvature"),
        (lambda: AggregateCountMechanism(10, 3, prior_total=0.0), "prior_total"),
        (lambda: AggregateCountMechanism(10, 3, action_values=[0, 1]), "action_values"),
        (lambda: AggregateCountMechanism(10, 3, action_values=[0, -1, 2]), "action_values"),
        (lambda: AggregateCountMechanism(10, 3, action_values=[0, 0.5, 2]), "action_values"),
        (lambda: AggregateCountMechanism(10, 3, action_values=[0, 0, 0]), "action_values"),
    ],
)
def test_bad_arguments_are_refused_clearly(build: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("family", ["interaction", "interaction_totals", "additive_counts", "aggregate_counts"])
def test_families_are_registered_and_rebuild_from_their_config(family: str) -> None:
    model = MECHANISM_FAMILIES[family](6, 3, prior_scale=0.7)
    rebuilt = build_mechanism(family, **model.config())
    assert rebuilt.config() == model.config()
    _randomised(model)
    rebuilt.load_state_dict(model.state_dict())
    joint = torch.randint(0, 3, (4, 6), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(rebuilt(joint), model(joint))


@pytest.mark.parametrize("options", [{}, {"prior_total": 1.0}, {"max_order": 1}])
def test_the_interaction_models_table_jacobian_is_the_autograd_one(options: dict[str, float]) -> None:
    from torch.func import functional_call, jacrev

    from mechgym.mechanisms.base import all_joint_actions

    cls = TotalsInteractionMechanism if "prior_total" in options else InteractionMechanism
    model = cls(4, 3, **options)
    with torch.no_grad():
        model.theta.normal_(generator=torch.Generator().manual_seed(0))
    joint = all_joint_actions(4, 3)

    def payoffs(theta: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {"theta": theta}, (joint,)).reshape(-1)

    autograd = jacrev(payoffs)(model.theta.detach())
    assert torch.equal(model.table_jacobian(joint), autograd)
