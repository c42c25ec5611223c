"""The payoff-table fast paths (offset-table gather, realised payoffs from the table) against the plain ones."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mechgym.mechanisms import (
    CongestionMechanism,
    Mechanism,
    NeuralJointMechanism,
    PublicGoodsMechanism,
    TabularMechanism,
)
from mechgym.mechanisms.base import all_joint_actions, gather_counterfactuals

FACTORIES = {
    "neural-3x6": lambda: NeuralJointMechanism(3, 6, hidden=16, seed=1),
    "congestion-4x5": lambda: CongestionMechanism(4, 5, seed=2),
    "public-goods-3x7": lambda: PublicGoodsMechanism(3, 7, seed=3),
    "tabular-2x3": lambda: TabularMechanism(2, 3, init="normal", seed=4),
}


def random_joint(mechanism: Mechanism, *batch: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, mechanism.n_actions, (*batch, mechanism.n_agents), generator=generator)


def gather_by_loops(table: Tensor, joint: Tensor, n_actions: int, agents: list[int]) -> Tensor:
    """The definition, one entry at a time: ``table[index of (a, a_-i), i]``."""
    n_agents = joint.shape[-1]
    flat = joint.reshape(-1, n_agents)
    out = torch.empty(flat.shape[0], len(agents), n_actions, dtype=table.dtype)
    for row in range(flat.shape[0]):
        for k, i in enumerate(agents):
            for a in range(n_actions):
                deviation = flat[row].clone()
                deviation[i] = a
                index = sum(int(deviation[j]) * n_actions ** (n_agents - 1 - j) for j in range(n_agents))
                out[row, k, a] = table[index, i]
    return out.reshape(*joint.shape[:-1], len(agents), n_actions)


@pytest.mark.parametrize("agents", [None, [2, 0]], ids=["all", "subset"])
@pytest.mark.parametrize("batch", [(7,), (2, 5), (2, 3, 2)], ids=["rows", "traces", "4-d"])
def test_gather_equals_the_definition(agents: list[int] | None, batch: tuple[int, ...]) -> None:
    n_agents, n_actions = 3, 4
    table = torch.randn(n_actions**n_agents, n_agents, generator=torch.Generator().manual_seed(0))
    joint = torch.randint(0, n_actions, (*batch, n_agents), generator=torch.Generator().manual_seed(1))
    chosen = list(range(n_agents)) if agents is None else agents
    got = gather_counterfactuals(table, joint, n_actions, None if agents is None else torch.tensor(agents))
    assert torch.equal(got, gather_by_loops(table, joint, n_actions, chosen))


def test_payoff_table_keeps_its_input_but_not_its_values() -> None:
    mechanism = NeuralJointMechanism(3, 4, hidden=8, seed=0)
    first = mechanism.payoff_table()
    with torch.no_grad():
        mechanism.layer3.bias.add_(1.0)  # a trained model: the table must follow the weights
    second = mechanism.payoff_table()
    torch.testing.assert_close(second, first + 1.0)
    torch.testing.assert_close(second, mechanism(all_joint_actions(3, 4)))


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("agents", [None, [1, 0]], ids=["all", "subset"])
def test_counterfactual_and_realised_equal_the_plain_paths(name: str, agents: list[int] | None) -> None:
    mechanism = FACTORIES[name]().double()
    joint = random_joint(mechanism, 3, 7)
    index = None if agents is None else torch.tensor(agents)
    chosen = slice(None) if agents is None else agents
    payoffs, realised = mechanism.counterfactual_and_realised_payoffs(joint, index)
    assert torch.equal(payoffs, mechanism.counterfactual_payoffs(joint, index))
    torch.testing.assert_close(realised, mechanism(joint)[..., chosen], rtol=1e-12, atol=1e-12)
    # gradients: the same loss through the table's realised payoffs and through the counterfactual ones
    weights = torch.randn(payoffs.shape, dtype=payoffs.dtype, generator=torch.Generator().manual_seed(5))
    params = [p for p in mechanism.parameters() if p.requires_grad]
    fast = torch.autograd.grad((payoffs * weights).sum() + realised.square().sum(), params)
    own = joint if agents is None else joint[..., agents]
    plain_payoffs = mechanism.counterfactual_payoffs(joint, index)
    plain_realised = plain_payoffs.gather(-1, own[..., None]).squeeze(-1)
    plain = torch.autograd.grad((plain_payoffs * weights).sum() + plain_realised.square().sum(), params)
    for got, expected in zip(fast, plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


class OverridingCounterfactuals(TabularMechanism):
    """A table game whose counterfactual payoffs are its own: the table shortcut must not bypass them."""

    family = "test_overriding_counterfactuals"

    def counterfactual_payoffs(self, joint_actions: Tensor, agents: Tensor | None = None) -> Tensor:
        return super().counterfactual_payoffs(joint_actions, agents) + 1.0


def test_an_overridden_counterfactual_path_is_used_for_both() -> None:
    mechanism = OverridingCounterfactuals(2, 3, init="normal", seed=0)
    joint = random_joint(mechanism, 4)
    payoffs, realised = mechanism.counterfactual_and_realised_payoffs(joint)
    assert torch.equal(payoffs, mechanism.counterfactual_payoffs(joint))
    torch.testing.assert_close(realised, mechanism(joint) + 1.0)


@pytest.mark.parametrize("name", FACTORIES)
def test_a_table_index_made_once_reads_the_same_payoffs(name: str) -> None:
    mechanism = FACTORIES[name]()
    traces = random_joint(mechanism, 6, 9)
    index = mechanism.table_index(traces)
    assert index is not None
    episodes, agents = torch.tensor([4, 0, 2]), torch.tensor([0, mechanism.n_agents - 1])
    for chosen, joint, subset in ((index, traces, None), (index.select(episodes, agents), traces[episodes], agents)):
        payoffs, realised = mechanism.counterfactual_and_realised_payoffs(joint, subset, index=chosen)
        expected = mechanism.counterfactual_and_realised_payoffs(joint, subset)
        assert torch.equal(payoffs, expected[0]) and torch.equal(realised, expected[1])
        assert payoffs.permute(1, 3, 0, 2).is_contiguous()  # round-major, as the likelihood's filter reads it


def test_no_table_index_without_a_table_or_with_own_counterfactuals() -> None:
    from mechgym.mechanisms import AnonymousCountMechanism

    assert AnonymousCountMechanism(10, 4, seed=0).table_index(torch.zeros(2, 3, 10, dtype=torch.long)) is None
    overriding = OverridingCounterfactuals(2, 3, init="normal", seed=0)
    assert overriding.table_index(torch.zeros(2, 3, 2, dtype=torch.long)) is None
