"""The training step's fast paths against the plain ones: fused Adam, the fused likelihood inside a fit."""

from __future__ import annotations

import importlib

import pytest
import torch

import mechgym
from diml_inverse import fit
from diml_inverse.fit import adam
from diml_inverse.testing import step_by_step_log_likelihood
from mechgym.learners import LogitQ
from mechgym.mechanisms import NeuralJointMechanism

fit_module = importlib.import_module("diml_inverse.fit")  # the module (diml_inverse.fit is also the function)


def test_fused_adam_equals_the_default_update() -> None:
    models = [NeuralJointMechanism(3, 4, hidden=16, seed=0) for _ in range(2)]
    optimizers = [
        adam(list(models[0].parameters()), lr=1e-2, weight_decay=1e-6),
        torch.optim.Adam(models[1].parameters(), lr=1e-2, weight_decay=1e-6),
    ]
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        grads = [torch.randn(p.shape, generator=generator) for p in models[0].parameters()]
        for model, optimizer in zip(models, optimizers, strict=True):
            for parameter, grad in zip(model.parameters(), grads, strict=True):
                parameter.grad = grad.clone()
            optimizer.step()
    for fused, plain in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_a_fit_is_repeatable_and_its_loss_is_the_step_by_step_likelihood() -> None:
    learner = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
    traces = mechgym.rollout(mechgym.make("mechgym/NeuralMechanism-v0"), learner, n_episodes=12, n_rounds=15, seed=0)
    first = fit(None, traces, model="neural", epochs=3, batch_size=4, seed=3, progress=False)
    second = fit(None, traces, model="neural", epochs=3, batch_size=4, seed=3, progress=False)
    for a, b in zip(first.history, second.history, strict=True):
        assert a["train_nll"] == b["train_nll"] and a["valid_nll"] == b["valid_nll"]
    for p, q in zip(first.mechanism.parameters(), second.mechanism.parameters(), strict=True):
        assert torch.equal(p, q)
    # the held-out NLL of the fitted model, as the fit reports it, is Algorithm 1's loop on the same episodes
    valid = traces.actions_tensor()[-first.n_valid_episodes :]
    with torch.no_grad():
        terms = step_by_step_log_likelihood(first.mechanism, valid, learner.alpha, learner.beta, learner.epsilon)
    loop = -float(terms.sum()) / valid[:, 1:].numel()
    assert abs(loop - first.history[first.selected_epoch - 1]["valid_nll"]) < 1e-5


def test_the_training_episodes_table_index_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    learner = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
    traces = mechgym.rollout(mechgym.make("mechgym/Congestion-v0"), learner, n_episodes=10, n_rounds=12, seed=1)
    options = {"model": "neural", "epochs": 2, "batch_size": 3, "agent_batch_size": 2, "seed": 5, "progress": False}
    with_index = fit(None, traces, **options)
    monkeypatch.setattr(fit_module, "TABLE_INDEX_MAX_ELEMENTS", 0)  # no index: computed per minibatch
    without = fit(None, traces, **options)
    assert [row["train_nll"] for row in with_index.history] == [row["train_nll"] for row in without.history]
    for p, q in zip(with_index.mechanism.parameters(), without.mechanism.parameters(), strict=True):
        assert torch.equal(p, q)
