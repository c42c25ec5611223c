"""bf16 matrix products for E4's training step: how much faster, and how far from the float32 step.

On a CPU with bf16 matrix units (Intel AMX: ``amx_bf16`` in ``lscpu``; AVX-512 ``avx512_bf16``) a bf16 product
runs many times faster than a float32 one. This script measures what that buys an E4 training step (one
forward and backward pass of the likelihood of a minibatch, as ``benchmarks/reference.py`` times it) in three
variants, all alternating with the float32 step in one process:

* ``float32``: the step as ``diml_inverse.fit`` takes it.
* ``bf16 matmuls``: every float32 matrix product through oneDNN with bf16 inputs and float32 accumulation and
  output (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``); element-wise work stays float32.
* ``bf16 layer 2``: the same, but only for the count network's hidden ``H x H`` layer, forward and backward (a
  custom autograd function): that layer is most of the step's FLOPs, and a bf16 product with one inner dimension
  (the output unit's gradient) is slower through oneDNN than in float32.
* ``autocast bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)``: products *and* their outputs in bf16.

Each variant's loss and gradient are compared with the same step in float64 (relative error of the loss; of the
gradient's norm), next to the float32 step's own error, and the loss is put beside the signal a fit has to see:
how far the truth's NLL per agent-round is below ``log A`` (uniform play).

    python benchmarks/precision.py                 # E4 n40 and n300 minibatches, 1 thread, 5 repeats
    python benchmarks/precision.py --quick         # n40 only, 3 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import torch
from _common import describe_machine, load_average, seconds
from reference import PAYOFF_L2, our_loss, our_model, workloads
from torch import Tensor, nn

import mechgym
from mechgym.mechanisms import AnonymousCountMechanism, Mechanism


@contextlib.contextmanager
def bf16_matmuls() -> Iterator[None]:
    """float32 matrix products with bf16 inputs and float32 accumulation (oneDNN), restored on exit."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before


class _Bf16Linear(torch.autograd.Function):
    """``x @ w.T + b`` whose three products (forward, both gradients) run under :func:`bf16_matmuls`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.shape = x.shape
        with bf16_matmuls():
            out = torch.addmm(bias, rows, weight.T)
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rows, weight = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])
        with bf16_matmuls():
            grad_x, grad_w = grad_rows @ weight, grad_rows.T @ rows
        return grad_x.reshape(ctx.shape), grad_w, grad_rows.sum(0)


@contextlib.contextmanager
def bf16_layer2() -> Iterator[None]:
    """The count network's training head with its hidden layer through :class:`_Bf16Linear`, restored on exit."""
    original = AnonymousCountMechanism._head

    def head(self: AnonymousCountMechanism, pre_activation: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and pre_activation.requires_grad):
            return original(self, pre_activation)
        layer2 = _Bf16Linear.apply(torch.relu(pre_activation), self.layer2.weight, self.layer2.bias)
        return nn.functional.linear(torch.relu(layer2), self.layer3.weight, self.layer3.bias).squeeze(-1)

    AnonymousCountMechanism._head = head  # type: ignore[method-assign]
    try:
        yield
    finally:
        AnonymousCountMechanism._head = original  # type: ignore[method-assign]


VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "float32": contextlib.nullcontext,
    "bf16 matmuls": bf16_matmuls,
    "bf16 layer 2": bf16_layer2,
    "autocast bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
}


def bf16_flags() -> str:
    """The CPU's bf16 instruction flags (``lscpu``), or ``none``."""
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown (no lscpu)"
    found = sorted({word for word in flags.split() if word in ("amx_bf16", "avx512_bf16", "amx_tile")})
    return ", ".join(found) or "none"


def step(model: Mechanism, batch: Tensor, learner: mechgym.learners.LogitQ) -> tuple[float, Tensor]:
    """One forward and backward pass; the loss and the flattened gradient (float64)."""
    model.zero_grad(set_to_none=True)
    loss, _ = our_loss(model, batch, learner, PAYOFF_L2)
    loss.backward()
    grad = torch.cat([p.grad.flatten().double() for p in model.parameters() if p.grad is not None])
    return float(loss.detach()), grad


def measure(name: str, repeats: int) -> list[str]:
    """The table rows of one E4 minibatch workload."""
    workload = next(w for w in workloads() if w.name == name)
    env = mechgym.make(workload.env_id, n_agents=workload.n_agents, n_actions=workload.n_actions)
    traces = mechgym.rollout(env, workload.learner, n_episodes=workload.batch, n_rounds=workload.n_rounds, seed=0)
    batch = traces.actions_tensor()[: workload.batch, : workload.rounds]
    model = our_model(workload, torch.device("cpu"))
    exact = our_model(workload, torch.device("cpu")).double()
    exact_loss, exact_grad = step(exact, batch, workload.learner)
    errors, times = {}, {variant: [] for variant in VARIANTS}
    for variant, context in VARIANTS.items():
        with context():
            loss, grad = step(model, batch, workload.learner)
        errors[variant] = (
            abs(loss - exact_loss) / abs(exact_loss),
            float((grad - exact_grad).norm() / exact_grad.norm()),
        )
    for _ in range(repeats):  # alternate, so all see the same load
        for variant, context in VARIANTS.items():
            with context():
                times[variant].append(seconds(lambda: step(model, batch, workload.learner)))
    with torch.no_grad():  # what a fit must resolve: how far the truth's NLL is below uniform play's
        signal = math.log(workload.n_actions) - float(our_loss(env.mechanism, batch, workload.learner, 0.0)[1])
    base = min(times["float32"])
    rows = []
    for variant in VARIANTS:
        fastest, median = min(times[variant]), statistics.median(times[variant])
        loss_error, grad_error = errors[variant]
        rows.append(
            f"| {name} | {variant} | {fastest * 1e3:,.0f} / {median * 1e3:,.0f} | {base / fastest:.2f}× | "
            f"{loss_error:.1e} ({loss_error * abs(exact_loss):.1e} nats) | {grad_error:.1e} | {signal:.1e} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="E4 n40 only, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 5; --quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    names = ["E4 n40 minibatch 8x30"] + ([] if args.quick else ["E4 n300 minibatch 4x25"])
    print(f"machine: {describe_machine(torch.device('cpu'))}; bf16 flags: {bf16_flags()}; load {load_average()}")
    print(
        "| workload | variant | min / median (ms) | speed-up (minima) | loss rel. error vs float64 | "
        "grad rel. error | signal: log A - truth's NLL (nats) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        for row in measure(name, repeats):
            print(row, flush=True)
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
