"""Mechanism families: shapes, fast counterfactual paths against the generic enumeration, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mechgym.errors import ConfigurationError, InvalidActionError
from mechgym.mechanisms import (
    MECHANISM_FAMILIES,
    AnonymousCountMechanism,
    CongestionMechanism,
    Mechanism,
    NeuralJointMechanism,
    PublicGoodsMechanism,
    TabularMechanism,
    all_joint_actions,
    build_mechanism,
    validate_joint_actions,
)

FACTORIES = {
    "neural-3x6": lambda: NeuralJointMechanism(3, 6, seed=1),
    "neural-6x4-no-table": lambda: NeuralJointMechanism(6, 5, seed=2),
    "congestion-toll": lambda: CongestionMechanism(4, 5, pricing="toll", seed=3),
    "congestion-subsidy-large": lambda: CongestionMechanism(12, 4, pricing="subsidy", seed=4),
    "public-goods": lambda: PublicGoodsMechanism(3, 7, seed=5),
    "public-goods-large": lambda: PublicGoodsMechanism(9, 5, seed=6),
    "anonymous-40x10": lambda: AnonymousCountMechanism(40, 10, seed=7),
    "anonymous-small": lambda: AnonymousCountMechanism(4, 3, seed=8),
    "tabular": lambda: TabularMechanism(3, 4, init="normal", seed=9),
}


def random_joint(mechanism: Mechanism, *batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, mechanism.n_actions, (*batch, mechanism.n_agents), generator=generator)


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_counterfactual_fast_paths_equal_generic_enumeration(name: str, frozen: bool) -> None:
    mechanism = FACTORIES[name]()
    if frozen:
        mechanism.freeze()
    joint = random_joint(mechanism, 4, 5)
    reference = mechanism.counterfactual_payoffs_generic(joint)
    assert reference.shape == (4, 5, mechanism.n_agents, mechanism.n_actions)
    torch.testing.assert_close(mechanism.counterfactual_payoffs(joint), reference, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(mechanism._structured_counterfactual_payoffs(joint), reference, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("name", FACTORIES)
def test_counterfactual_at_own_action_is_the_payoff(name: str) -> None:
    mechanism = FACTORIES[name]()
    joint = random_joint(mechanism, 3, 2)
    own = mechanism.counterfactual_payoffs(joint).gather(-1, joint[..., None]).squeeze(-1)
    torch.testing.assert_close(own, mechanism(joint), rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("name", FACTORIES)
def test_batch_dimensions_are_free(name: str) -> None:
    mechanism = FACTORIES[name]()
    joint = random_joint(mechanism, 2, 3, 4)
    flat = mechanism(joint.reshape(-1, mechanism.n_agents)).reshape(2, 3, 4, mechanism.n_agents)
    torch.testing.assert_close(mechanism(joint), flat)
    assert mechanism(joint[0, 0, 0]).shape == (mechanism.n_agents,)


def test_payoff_table_matches_forward_and_is_cached_when_frozen() -> None:
    mechanism = NeuralJointMechanism(3, 4, seed=0)
    table = mechanism.payoff_table()
    torch.testing.assert_close(table, mechanism(all_joint_actions(3, 4)))
    assert table.requires_grad
    mechanism.freeze()
    assert mechanism.payoff_table() is mechanism.payoff_table()
    assert not mechanism.payoff_table().requires_grad


def test_gradients_flow_through_counterfactual_paths() -> None:
    for mechanism in (
        NeuralJointMechanism(3, 4),
        AnonymousCountMechanism(10, 4),
        PublicGoodsMechanism(),
        TabularMechanism(3, 3),
    ):
        joint = random_joint(mechanism, 8)
        mechanism.counterfactual_payoffs(joint).square().sum().backward()
        grads = [p.grad for p in mechanism.parameters()]
        assert all(g is not None for g in grads), type(mechanism).__name__


def test_same_seed_same_mechanism_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = NeuralJointMechanism(seed=5)
    after = torch.rand(1)
    second = NeuralJointMechanism(seed=5)
    third = NeuralJointMechanism(seed=6)
    assert torch.equal(before, after)
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(first.layer1.weight, third.layer1.weight)


def test_reference_architectures() -> None:
    neural = NeuralJointMechanism()
    assert (neural.n_agents, neural.n_actions, neural.embed_dim, neural.hidden) == (3, 6, 6, 128)
    assert NeuralJointMechanism(3, 40).embed_dim == 24
    anonymous = AnonymousCountMechanism()
    assert (anonymous.n_agents, anonymous.n_actions, anonymous.embed_dim, anonymous.hidden) == (40, 10, 12, 256)
    assert AnonymousCountMechanism(300, 40).embed_dim == 32
    congestion = CongestionMechanism()
    assert (congestion.n_agents, congestion.n_actions, congestion.pricing) == (4, 5, "toll")
    assert bool(((congestion.c1 >= 0.1) & (congestion.c1 <= 0.4)).all())
    assert bool(((congestion.c2 >= 0.05) & (congestion.c2 <= 0.15)).all())
    assert bool(((congestion.tau >= 0.0) & (congestion.tau <= 0.2)).all())
    goods = PublicGoodsMechanism()
    torch.testing.assert_close(goods.levels, torch.linspace(0, 1, 7))


def test_congestion_pricing_sign() -> None:
    toll = CongestionMechanism(3, 2, pricing="toll", seed=0)
    subsidy = CongestionMechanism(3, 2, pricing="subsidy", seed=0)
    joint = torch.tensor([0, 0, 1])
    load = torch.tensor([2.0, 2.0, 1.0])
    base = -(toll.c1[joint] * load + toll.c2[joint] * load**2)
    torch.testing.assert_close(toll(joint), base - toll.tau[joint] * load)
    torch.testing.assert_close(subsidy(joint), base + subsidy.tau[joint] * load)


def test_public_goods_formula() -> None:
    goods = PublicGoodsMechanism(3, 7, seed=0)
    joint = torch.tensor([6, 0, 3])
    levels = goods.levels[joint]
    total = levels.sum()
    inputs = torch.stack([total.expand(3), levels], -1)
    subsidy = goods.subsidy_out(torch.tanh(goods.subsidy_hidden(inputs))).squeeze(-1)
    expected = 1.0 * (1 - torch.exp(-2.0 * total)) - 0.8 * levels**2 + subsidy
    torch.testing.assert_close(goods(joint), expected)


def test_anonymous_payoff_depends_only_on_own_action_and_counts() -> None:
    mechanism = AnonymousCountMechanism(6, 3, seed=0)
    joint = torch.tensor([0, 1, 2, 2, 1, 0])
    permuted = joint[torch.tensor([5, 4, 3, 2, 1, 0])]
    torch.testing.assert_close(mechanism(joint).sort().values, mechanism(permuted).sort().values)


@pytest.mark.parametrize("family", sorted(MECHANISM_FAMILIES))
def test_build_from_config_roundtrip(family: str) -> None:
    cls = MECHANISM_FAMILIES[family]
    original = cls(seed=11) if family != "tabular" else cls(init="normal", seed=11)
    rebuilt = build_mechanism(family, **original.config())
    rebuilt.load_state_dict(original.state_dict())
    joint = random_joint(original, 5)
    torch.testing.assert_close(rebuilt(joint), original(joint))


def test_unknown_family_suggests() -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'congestion'"):
        build_mechanism("congestoin")


@pytest.mark.parametrize(
    ("joint", "match"),
    [
        (torch.tensor([[0, 1, 6]]), r"in \[0, 6\); got 6"),
        (torch.tensor([[0, -1, 2]]), r"got -1"),
        (torch.tensor([[0, 1]]), r"shape \[\.\.\., 3\]"),
        (torch.tensor([[0.0, 1.0, 2.0]]), "must be integers"),
    ],
)
def test_validate_joint_actions(joint: torch.Tensor, match: str) -> None:
    with pytest.raises(InvalidActionError, match=match):
        validate_joint_actions(joint, 3, 6, "a test game")


def test_bad_sizes_raise() -> None:
    with pytest.raises(ConfigurationError):
        NeuralJointMechanism(1, 6)
    with pytest.raises(ConfigurationError):
        CongestionMechanism(3, 1)
    with pytest.raises(ConfigurationError, match="pricing"):
        CongestionMechanism(pricing="tax")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="too large"):
        TabularMechanism(30, 10)


@pytest.mark.parametrize("name", FACTORIES)
def test_counterfactual_payoffs_of_an_agent_subset(name: str) -> None:
    mechanism = FACTORIES[name]()
    joint = random_joint(mechanism, 3, 4)
    agents = torch.tensor([mechanism.n_agents - 1, 0])
    full = mechanism.counterfactual_payoffs_generic(joint)
    torch.testing.assert_close(mechanism.counterfactual_payoffs_generic(joint, agents), full[..., agents, :])
    torch.testing.assert_close(
        mechanism.counterfactual_payoffs(joint, agents), full[..., agents, :], rtol=1e-4, atol=5e-5
    )


def test_chunked_anonymous_rows_equal_whole_and_keep_gradients() -> None:
    mechanism = AnonymousCountMechanism(30, 6, seed=0)
    mechanism.rows_chunk_size = 7
    joint = random_joint(mechanism, 5, 9)  # 45 rounds: 7 chunks, the last one short
    chunked = mechanism.counterfactual_payoffs(joint)
    whole = mechanism.counterfactual_payoffs_generic(joint)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=5e-5)
    chunked.square().sum().backward()
    grads = [p.grad.clone() for p in mechanism.parameters()]
    mechanism.zero_grad()
    whole.square().sum().backward()
    for got, expected in zip(grads, [p.grad for p in mechanism.parameters()], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("rows_chunk_size", [256, 7], ids=["one chunk", "checkpointed chunks"])
def test_anonymous_rows_built_in_cache_sized_pieces_equal_one_piece(
    rows_chunk_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With gradients on the CPU, rows are built a few rounds at a time: same values and gradients as at once."""
    mechanism = AnonymousCountMechanism(30, 6, hidden=16, seed=0)
    mechanism.rows_chunk_size = rows_chunk_size
    joint = random_joint(mechanism, 5, 9)  # 45 rounds

    def payoffs_and_grads(cache_rounds: int) -> tuple[Tensor, list[Tensor]]:
        monkeypatch.setattr(mechanism, "cache_rounds", lambda: cache_rounds)
        mechanism.zero_grad(set_to_none=True)
        payoffs = mechanism.counterfactual_payoffs(joint)
        payoffs.square().sum().backward()
        return payoffs.detach(), [p.grad.clone() for p in mechanism.parameters() if p.grad is not None]

    pieces, piece_grads = payoffs_and_grads(2)  # 23 pieces (the last one short) per 45 rounds
    whole, whole_grads = payoffs_and_grads(10**6)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-6)
    assert len(piece_grads) == len(whole_grads) == len(list(mechanism.parameters()))
    for got, expected in zip(piece_grads, whole_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # simulations take the batch-invariant sum of the output unit: close to the fit's
        torch.testing.assert_close(mechanism.counterfactual_payoffs(joint), whole, rtol=1e-5, atol=1e-6)


def test_cache_rounds_hold_about_two_mebibytes_of_hidden_values() -> None:
    assert AnonymousCountMechanism(40, 10).cache_rounds() == (1 << 19) // (10 * 10 * 256)  # 20 rounds
    assert AnonymousCountMechanism(300, 40).cache_rounds() == 1  # one round is already 1.6 MiB
