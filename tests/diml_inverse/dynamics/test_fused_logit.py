"""The fused logit-Q path (round-major filter, log-softmax, exploration at the played actions) against the
plain one: ``counterfactual_scores`` then ``logit_log_policy`` then the gather, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from diml_inverse.dynamics import Unroll, counterfactual_scores, logit_q_log_probs
from diml_inverse.dynamics.filters import decay_matrices, logit_filter_log_probs, time_major_filter
from mechgym.learners import LogitQ, explore_log_policy, logit_log_policy
from mechgym.mechanisms import NeuralJointMechanism


def plain_log_probs(
    payoffs: Tensor, alpha: Tensor | float, q0: Tensor | float, beta: float, epsilon: Tensor | float, nxt: Tensor
) -> Tensor:
    scores = counterfactual_scores(payoffs, alpha, q0, chunk_size=None)
    return logit_log_policy(scores, beta, epsilon).gather(-1, nxt[..., None]).squeeze(-1)


def problem(n_episodes: int, n_rounds: int, n_agents: int, n_actions: int, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    payoffs = torch.randn(n_episodes, n_rounds, n_agents, n_actions, generator=generator, dtype=torch.float64)
    nxt = torch.randint(0, n_actions, (n_episodes, n_rounds, n_agents), generator=generator)
    return payoffs.requires_grad_(), nxt


@pytest.mark.parametrize("learned", [(), ("alpha",), ("q0",), ("epsilon",), ("alpha", "q0", "epsilon")], ids=str)
@pytest.mark.parametrize("chunk_size", [None, 4], ids=["whole", "chunked"])
@pytest.mark.parametrize("epsilon", [0.0, 0.06, 1.0], ids=["eps0", "eps.06", "eps1"])
def test_fused_logit_equals_filter_then_policy(
    learned: tuple[str, ...], chunk_size: int | None, epsilon: float
) -> None:
    payoffs, nxt = problem(3, 11, 2, 4, seed=len(learned))
    alpha: Tensor | float = torch.tensor(0.3, dtype=torch.float64, requires_grad=True) if "alpha" in learned else 0.3
    q0: Tensor | float = (
        torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9)).requires_grad_()
        if "q0" in learned
        else 0.0
    )
    eps: Tensor | float = (
        torch.tensor(epsilon, dtype=torch.float64, requires_grad=True) if "epsilon" in learned else epsilon
    )
    if epsilon == 1.0 and "epsilon" in learned:
        pytest.skip("a learned epsilon lies in [0, 1) (a sigmoid)")
    leaves = [payoffs, *(x for x in (alpha, q0, eps) if isinstance(x, Tensor))]
    fused = logit_filter_log_probs(payoffs, 1.0 - alpha, alpha, q0, 2.5, eps, nxt, chunk_size)
    plain = plain_log_probs(payoffs, alpha, q0, 2.5, eps, nxt)
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    weights = torch.rand(plain.shape, dtype=plain.dtype, generator=torch.Generator().manual_seed(3))
    fused_grads = torch.autograd.grad((fused * weights).sum(), leaves)
    plain_grads = torch.autograd.grad((plain * weights).sum(), leaves)
    for got, expected in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_logit_q_dynamics_equal_the_plain_path_in_float32() -> None:
    """The registered rule, as ``trace_terms`` calls it, on a neural model's payoffs."""
    model = NeuralJointMechanism(3, 5, hidden=16, seed=0)
    joint = torch.randint(0, 5, (4, 9, 3), generator=torch.Generator().manual_seed(0))
    payoffs = model.counterfactual_payoffs(joint[:, :-1])
    learner = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
    fused = logit_q_log_probs(learner, Unroll(payoffs, joint[:, 1:], joint[:, :-1]))
    plain = plain_log_probs(payoffs, 0.25, 0.0, 3.0, 0.06, joint[:, 1:])
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_explore_log_policy_is_logit_log_policy_entry_by_entry() -> None:
    q = torch.randn(5, 6, dtype=torch.float64)
    log_softmax = torch.log_softmax(2.0 * q, -1)
    for epsilon in (0.0, 0.1, torch.tensor(0.1, dtype=torch.float64, requires_grad=True)):
        torch.testing.assert_close(explore_log_policy(log_softmax, epsilon, 6), logit_log_policy(q, 2.0, epsilon))


def test_constant_decay_matrices_are_the_built_ones_and_usable_after_inference_mode() -> None:
    like = torch.zeros((), dtype=torch.float32)
    with torch.inference_mode():
        cached = decay_matrices(0.75, 0.25, 7, like)  # first made here: must still be a plain tensor
    built = decay_matrices(torch.tensor(0.75), torch.tensor(0.25), 7, like)
    for got, expected in zip(cached, built, strict=True):
        assert not got.is_inference()
        torch.testing.assert_close(got, expected)
    inputs = torch.randn(7, 3, requires_grad=True)
    (cached[0] @ inputs).sum().backward()  # saved for backward: fails for an inference tensor
    assert inputs.grad is not None


@pytest.mark.parametrize("n_rounds", [5, 23])
def test_zero_initial_state_equals_zeros(n_rounds: int) -> None:
    inputs = torch.randn(n_rounds, 4, dtype=torch.float64)
    zeros = torch.zeros(4, dtype=torch.float64)
    without = time_major_filter(inputs, 0.6, 0.4, None, 6)
    with_zeros = time_major_filter(
        inputs, torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64), zeros, 6
    )
    torch.testing.assert_close(without, with_zeros, rtol=1e-12, atol=1e-12)
