"""The machine's limit for a training step: the mechanism's FLOPs over its distinct rows at the measured matmul rate.

A training step of DIML evaluates the mechanism on counterfactual joint actions and back-propagates through
it. Whatever the implementation, it must at least run the network's dense layers, forward and backward, on
every *distinct* row it needs: for an anonymous count game the (own action played, alternative action) rows
of every episode and round (``payoff_i`` depends only on them and the round's action counts); for a small
game every distinct counterfactual joint action ``(a, a_-i)`` of the minibatch. A dense layer of ``m`` rows
from ``k`` to ``n`` units costs ``2 m k n`` FLOPs forward and twice that backward (the gradients of its input
and of its weight), so the layer's fp32 GEMMs at those shapes, timed on this machine, bound the step from
below: the **limit** is the sum over layers of ``6 m k n`` FLOPs divided by the rate measured at that shape.
Element-wise work (activations, the score filter, the log-policy) is left out, so the bound is optimistic.

    python benchmarks/limit.py            # the rates at the E1-E4 shapes, 1 thread
    python benchmarks/limit.py --quick

``benchmarks/reference.py`` imports :func:`layer_shapes`, :func:`distinct_rows` and :func:`limit_seconds`
for its limit column.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from _common import describe_machine, load_average, synchronize
from torch import Tensor

from mechgym.mechanisms import AnonymousCountMechanism, Mechanism, NeuralJointMechanism
from mechgym.mechanisms.base import action_counts


@dataclass(frozen=True)
class Layer:
    """A dense layer from ``inputs`` to ``outputs`` units, applied to every distinct row."""

    inputs: int
    outputs: int


def layer_shapes(mechanism: Mechanism) -> list[Layer]:
    """The dense layers each distinct row passes through (the first layer of a count net is per round: left out).

    Raises:
        TypeError: a mechanism family this bound does not know.
    """
    if isinstance(mechanism, AnonymousCountMechanism):
        h = mechanism.hidden
        return [Layer(h, h), Layer(h, 1)]  # layer1 splits into per-round and per-action terms (no per-row GEMM)
    if isinstance(mechanism, NeuralJointMechanism):
        n, d, h = mechanism.n_agents, mechanism.embed_dim, mechanism.hidden
        return [Layer(n * d, h), Layer(h, h), Layer(h, n)]
    raise TypeError(f"no FLOP model for {type(mechanism).__name__}")


def distinct_rows(mechanism: Mechanism, actions: Tensor) -> int:
    """Distinct rows one likelihood pass over ``actions [E, T, N]`` needs (rounds ``1..T-1`` are scored).

    Anonymous games: for every (episode, round), the own actions somebody played times ``A`` alternatives.
    Other games: the distinct counterfactual joint actions ``(a, a_-i)`` over every episode, round and agent.
    """
    rounds = actions[:, :-1].reshape(-1, actions.shape[-1])
    n_actions = mechanism.n_actions
    if isinstance(mechanism, AnonymousCountMechanism):
        played = action_counts(rounds, n_actions) > 0  # [R, A]
        return int(played.sum()) * n_actions
    n_agents = rounds.shape[-1]
    strides = n_actions ** torch.arange(n_agents - 1, -1, -1)
    index = (rounds * strides).sum(-1)  # [R]
    alternatives = torch.arange(n_actions)
    deviations = index[:, None, None] + (alternatives - rounds[:, :, None]) * strides[:, None]  # [R, N, A]
    return int(torch.unique(deviations).numel())


def gemm_seconds(rows: int, layer: Layer, device: torch.device, repeats: int) -> float:
    """Best time of one fp32 dense layer ``[rows, inputs] -> [rows, outputs]``, forward and backward."""
    x = torch.randn(rows, layer.inputs, device=device, requires_grad=True)
    w = torch.randn(layer.outputs, layer.inputs, device=device, requires_grad=True)
    grad = torch.randn(rows, layer.outputs, device=device)
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        synchronize(device)
        start = time.perf_counter()
        (x @ w.T).backward(grad)
        synchronize(device)
        times.append(time.perf_counter() - start)
        x.grad = w.grad = None
    return min(times[1:])


def limit_seconds(mechanism: Mechanism, rows: int, device: torch.device, repeats: int = 5) -> tuple[float, float]:
    """``(seconds, flops)``: the measured GEMM time of every layer over ``rows`` rows, and their FLOPs."""
    total, flops = 0.0, 0.0
    for layer in layer_shapes(mechanism):
        total += gemm_seconds(rows, layer, device, repeats)
        flops += 6.0 * rows * layer.inputs * layer.outputs
    return total, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to time the GEMMs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {describe_machine(device)}; load average {load_average()}")
    print("| shape (rows x in -> out) | fwd+bwd (ms) | GFLOP/s |")
    print("|---|---:|---:|")
    shapes = [(216 * 3, 18, 128), (216 * 3, 128, 128), (25_600, 256, 256), (153_600, 256, 256)]
    for rows, k, n in shapes[:2] if args.quick else shapes:
        rates = [gemm_seconds(rows, Layer(k, n), device, 2 if args.quick else 5) for _ in range(3)]
        best = statistics.median(rates)
        print(f"| {rows} x {k} -> {n} | {best * 1e3:.3f} | {6.0 * rows * k * n / best / 1e9:.1f} |")


if __name__ == "__main__":
    main()
