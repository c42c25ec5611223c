"""Time the parallel likelihood (paper Eq. 5) against Algorithm 1's step-by-step loop.

One training step's likelihood work: forward and backward of the mean negative log-likelihood of a
minibatch of action traces, for the E1–E4 model sizes. The baseline is the loop of the published code
(tests/reference.py): one mechanism call per (round, agent) on that agent's counterfactual joint
actions. Both run in the same process, interleaved; the times are medians of repeated timings, and the
speed-up is given as the ratio of medians and, less sensitive to background load, of minima.

    python benchmarks/likelihood.py            # full run, 2 threads (the reference 2-core CPU)
    python benchmarks/likelihood.py --quick    # a fast run
    python benchmarks/likelihood.py --device cuda

Prints a Markdown table (docs/benchmarks.md holds the recorded one).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diml_inverse.likelihood import log_likelihood
from mechgym.learners import LogitQ
from mechgym.mechanisms import AnonymousCountMechanism, Mechanism, NeuralJointMechanism

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
step_by_step_log_likelihood = importlib.import_module("reference").step_by_step_log_likelihood

E1_E3_LEARNER = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
E4_LEARNER = LogitQ(alpha=0.2, beta=6.0, epsilon=0.02)


@dataclass(frozen=True)
class Workload:
    """One minibatch: a model of the given size, ``n_episodes x n_rounds`` traces, and whether to time the loop."""

    name: str
    build: Callable[[], Mechanism]
    learner: LogitQ
    n_episodes: int
    n_rounds: int
    loop: bool
    table: bool = True  # False: force the structured (non-table) counterfactual path
    heavy: bool = False  # skipped by --quick


def workloads() -> list[Workload]:
    return [
        Workload("E1 neural 3x6", lambda: NeuralJointMechanism(3, 6, seed=1), E1_E3_LEARNER, 32, 50, loop=True),
        Workload(
            "E1 neural 3x6, no table",
            lambda: NeuralJointMechanism(3, 6, seed=1),
            E1_E3_LEARNER,
            32,
            50,
            loop=False,
            table=False,
        ),
        Workload(
            "E1 neural 3x6, long episodes (chunked filter)",
            lambda: NeuralJointMechanism(3, 6, seed=1),
            E1_E3_LEARNER,
            32,
            2000,
            loop=False,
        ),
        Workload("E2 size, neural 4x5", lambda: NeuralJointMechanism(4, 5, seed=1), E1_E3_LEARNER, 32, 50, loop=True),
        Workload("E3 size, neural 3x7", lambda: NeuralJointMechanism(3, 7, seed=1), E1_E3_LEARNER, 32, 50, loop=True),
        Workload(
            "E4 anonymous 40x10",
            lambda: AnonymousCountMechanism(40, 10, seed=1),
            E4_LEARNER,
            8,
            25,
            loop=False,  # the per-(round, agent) loop takes ~40 s per minibatch here
        ),
        Workload(
            "E4 anonymous 300x40",
            lambda: AnonymousCountMechanism(300, 40, seed=1),
            E4_LEARNER,
            8,
            25,
            loop=False,
            heavy=True,
        ),
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(step: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def training_step(mechanism: Mechanism, objective: Callable[[], Tensor]) -> Callable[[], None]:
    """Forward and backward of the mean negative log-likelihood, as one minibatch of the fit does."""

    def step() -> None:
        mechanism.zero_grad(set_to_none=True)
        (-objective()).backward()

    return step


@dataclass
class Timing:
    """Seconds per training step of each method (``None``: not timed)."""

    parallel: list[float]
    loop: list[float] | None


def run(workload: Workload, device: torch.device, quick: bool, seed: int) -> Timing:
    """Time both methods interleaved (a few parallel steps, then one loop step, repeated).

    Interleaving exposes both to the same background load, so their ratio stays meaningful on a busy machine.
    """
    mechanism = workload.build().to(device)
    if not workload.table:
        mechanism.max_table_size = 0
    n, a = mechanism.n_agents, mechanism.n_actions
    generator = torch.Generator().manual_seed(seed)
    actions = torch.randint(a, (workload.n_episodes, workload.n_rounds, n), generator=generator).to(device)
    n_terms = workload.n_episodes * (workload.n_rounds - 1) * n
    learner = workload.learner

    def parallel() -> Tensor:
        return log_likelihood(mechanism, actions, learner, validate=False) / n_terms

    def loop() -> Tensor:
        terms = step_by_step_log_likelihood(
            mechanism, actions, learner.alpha, learner.beta, learner.epsilon, learner.q0
        )
        return terms.sum() / n_terms

    time_loop = workload.loop
    parallel_step, loop_step = training_step(mechanism, parallel), training_step(mechanism, loop)
    warmup = seconds(parallel_step, device)
    if time_loop:
        # the two agree (tests/test_likelihood.py); check once here so that the timings compare like with like
        torch.testing.assert_close(parallel(), loop(), rtol=1e-4, atol=1e-5)
        loop_step()
    # about `budget` seconds of parallel steps in `repeats` groups; each group is followed by one loop step
    repeats, budget = (3, 1.0) if quick else (9, 6.0)
    per_repeat = max(1, min(10, round(budget / repeats / max(warmup, 1e-6))))
    timing = Timing(parallel=[], loop=[] if time_loop else None)
    for _ in range(repeats):
        timing.parallel += [seconds(parallel_step, device) for _ in range(per_repeat)]
        if timing.loop is not None:
            timing.loop.append(seconds(loop_step, device))
    return timing


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats; skip the E4 300x40 model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2 mimics the reference CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random action traces")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(f"machine: {describe_machine(device)}")
    print()
    print("| workload | E x T | parallel (ms) | step-by-step loop (ms) | speed-up (medians) | speed-up (minima) |")
    print("|---|---|---:|---:|---:|---:|")
    for workload in workloads():
        if args.quick and workload.heavy:
            continue
        timing = run(workload, device, args.quick, args.seed)
        parallel = statistics.median(timing.parallel)
        sizes = f"{workload.n_episodes} x {workload.n_rounds}"
        if timing.loop is None:
            loop_ms = ratio = best_ratio = "—"
        else:
            loop = statistics.median(timing.loop)
            loop_ms, ratio = f"{1e3 * loop:.1f}", f"{loop / parallel:.0f}×"
            best_ratio = f"{min(timing.loop) / min(timing.parallel):.0f}×"
        print(f"| {workload.name} | {sizes} | {1e3 * parallel:.2f} | {loop_ms} | {ratio} | {best_ratio} |", flush=True)


if __name__ == "__main__":
    main()
