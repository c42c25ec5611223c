"""Plain step-by-step references that the fast paths are tested against.

Each reference computes what a fast path of the library computes, written out literally from the paper's
algorithm and equations: loops where the library batches, slow but easy to check against the paper by eye.
The property tests compare the fast paths with them and the benchmarks time the fast paths against them.
They check no input; the library's own functions validate theirs.

>>> import torch
>>> from diml_inverse import log_likelihood
>>> from diml_inverse.testing import step_by_step_log_likelihood
>>> from mechgym import simulate
>>> from mechgym.learners import LogitQ
>>> from mechgym.mechanisms import CongestionMechanism
>>> mechanism, learner = CongestionMechanism(3, 4, seed=0), LogitQ()
>>> actions, _ = simulate(mechanism, learner, n_episodes=2, n_rounds=6, seed=0)
>>> expected = step_by_step_log_likelihood(mechanism, actions, learner.alpha, learner.beta, learner.epsilon, learner.q0)
>>> torch.testing.assert_close(log_likelihood(mechanism, actions, learner, reduction="none"), expected)
"""

from diml_inverse.testing.reference import step_by_step_log_likelihood

__all__ = ["step_by_step_log_likelihood"]
