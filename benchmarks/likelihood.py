"""Likelihood throughput: the parallel form (paper Eq. 5) against Algorithm 1's step-by-step loop.

One training step's likelihood work: forward and backward of the mean negative log-likelihood of a
minibatch of action traces, for the E1–E3 model sizes and anonymous games from 40x10 to 1,000x100. The
baseline is the loop of the published code (``diml_inverse.testing.reference``): one mechanism call per
(round, agent) on that agent's counterfactual joint actions, batched over episodes. Throughput is in
agent-rounds per second: the ``E x (T-1) x N`` likelihood terms of one forward+backward divided by its time.

In the anonymous games the loop is far too slow (and its autograd graph far too large) for a whole
minibatch, so it is timed on a slice: a few episodes and rounds and, from 300x40 up, only the first few
agents. Each agent's terms depend only on its own scores, so a slice of agents is the same computation for
fewer terms; throughputs of the two methods then compare although they ran on different amounts of data.
The slice's loop values are checked against the parallel form's before timing.

Both methods run in the same process, interleaved (a group of parallel steps, then one loop step, repeated),
so both see the same background load. Times are medians of the repeated timings; the speed-up is the ratio of
median throughputs and, less sensitive to background load, of best (minimum-time) throughputs. The parallel
form's peak memory is the growth of the peak resident set size (Linux ``VmHWM``) over its first step.

    python benchmarks/likelihood.py            # full run, 2 threads (the reference 2-core CPU)
    python benchmarks/likelihood.py --quick    # a fast run (skips 300x40 and 1,000x100)
    python benchmarks/likelihood.py --device cuda

Prints a Markdown table (docs/benchmarks.md holds the recorded one).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from _common import describe_machine, seconds
from torch import Tensor

from diml_inverse.likelihood import log_likelihood
from diml_inverse.testing import step_by_step_log_likelihood
from mechgym.learners import LogitQ
from mechgym.mechanisms import AnonymousCountMechanism, Mechanism, NeuralJointMechanism

E1_E3_LEARNER = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
E4_LEARNER = LogitQ(alpha=0.2, beta=6.0, epsilon=0.02)


@dataclass(frozen=True)
class Workload:
    """One minibatch: a model of the given size and ``n_episodes x n_rounds`` traces.

    The loop (if ``loop``) runs on the slice ``loop_episodes x loop_rounds`` (``None``: the whole minibatch's)
    of the same traces, for the first ``loop_agents`` agents (``None``: all, with the reference itself).
    """

    name: str
    build: Callable[[], Mechanism]
    learner: LogitQ
    n_episodes: int
    n_rounds: int
    loop: bool
    table: bool = True  # False: force the structured (non-table) counterfactual path
    heavy: bool = False  # skipped by --quick
    loop_episodes: int | None = None
    loop_rounds: int | None = None
    loop_agents: int | None = None


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
        # loop slices: about 1-4 s per loop step and at most ~2 GB of autograd graph (per-term loop cost at
        # one thread: ~3 ms at 40x10, ~20 ms at 120x25, ~90 ms at 300x40, ~0.3 s at 1,000x100)
        Workload(
            "E4 anonymous 40x10",
            lambda: AnonymousCountMechanism(40, 10, seed=1),
            E4_LEARNER,
            8,
            25,
            loop=True,
            loop_rounds=3,
        ),
        Workload(
            "E4 anonymous 120x25",
            lambda: AnonymousCountMechanism(120, 25, seed=1),
            E4_LEARNER,
            8,
            25,
            loop=True,
            loop_episodes=1,
            loop_rounds=2,
        ),
        Workload(
            "E4 anonymous 300x40",
            lambda: AnonymousCountMechanism(300, 40, seed=1),
            E4_LEARNER,
            8,
            25,
            loop=True,
            heavy=True,
            loop_episodes=1,
            loop_rounds=2,
            loop_agents=25,
        ),
        Workload(
            "anonymous 1000x100, hidden 64",
            lambda: AnonymousCountMechanism(1000, 100, hidden=64, seed=1),
            E4_LEARNER,
            1,
            50,
            loop=True,
            heavy=True,
            loop_episodes=1,
            loop_rounds=2,
            loop_agents=10,
        ),
    ]


def training_step(mechanism: Mechanism, objective: Callable[[], Tensor]) -> Callable[[], None]:
    """Forward and backward of the mean negative log-likelihood, as one minibatch of the fit does."""

    def step() -> None:
        mechanism.zero_grad(set_to_none=True)
        (-objective()).backward()

    return step


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def peak_memory_mib(step: Callable[[], None], device: torch.device) -> tuple[float, float | None]:
    """Run ``step`` once; return its seconds and its peak memory growth in MiB (``None``: not measurable).

    CPU: the peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the resident
    size before, after returning freed heap memory to the system. CUDA: ``torch.cuda.max_memory_allocated``.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        allocated = torch.cuda.memory_allocated(device)
        elapsed = seconds(step, device)
        return elapsed, (torch.cuda.max_memory_allocated(device) - allocated) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    except (OSError, AttributeError):
        return seconds(step, device), None
    before = _status_mib("VmRSS")
    elapsed = seconds(step, device)
    peak = _status_mib("VmHWM")
    return elapsed, None if before is None or peak is None else peak - before


@dataclass
class Timing:
    """Seconds per training step of each method (``loop``: ``None`` if not timed) and the terms per step."""

    parallel: list[float]
    parallel_terms: int
    parallel_peak_mib: float | None
    loop: list[float] | None
    loop_terms: int
    loop_slice: str


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

    loop_e = workload.loop_episodes or workload.n_episodes
    loop_t = workload.loop_rounds or workload.n_rounds
    loop_n = workload.loop_agents or n
    loop_actions = actions[:loop_e, :loop_t]
    loop_terms = loop_e * (loop_t - 1) * loop_n
    loop_slice = f"{loop_e} x {loop_t}" + (f", agents 0–{loop_n - 1} of {n}" if loop_n < n else "")

    def parallel() -> Tensor:
        return log_likelihood(mechanism, actions, learner, validate=False) / n_terms

    def loop_terms_of() -> Tensor:
        return step_by_step_log_likelihood(
            mechanism, loop_actions, learner.alpha, learner.beta, learner.epsilon, learner.q0, first_agents=loop_n
        )

    def loop() -> Tensor:
        return loop_terms_of().sum() / loop_terms

    time_loop = workload.loop
    parallel_step, loop_step = training_step(mechanism, parallel), training_step(mechanism, loop)
    warmup, peak_mib = peak_memory_mib(parallel_step, device)
    if time_loop:
        # the two agree (tests/diml_inverse/test_likelihood.py); check the slice here so that the timings compare
        # like with like
        with torch.no_grad():
            expected = log_likelihood(mechanism, actions, learner, reduction="none", validate=False)
            torch.testing.assert_close(loop_terms_of(), expected[:loop_e, : loop_t - 1, :loop_n], rtol=1e-4, atol=1e-5)
        loop_step()
    # about `budget` seconds of parallel steps in `repeats` groups; each group is followed by one loop step
    repeats, budget = (3, 1.0) if quick else (9, 6.0)
    per_repeat = max(1, min(10, round(budget / repeats / max(warmup, 1e-6))))
    timing = Timing(
        parallel=[],
        parallel_terms=n_terms,
        parallel_peak_mib=peak_mib,
        loop=[] if time_loop else None,
        loop_terms=loop_terms,
        loop_slice=loop_slice if time_loop else "—",
    )
    for _ in range(repeats):
        timing.parallel += [seconds(parallel_step, device) for _ in range(per_repeat)]
        if timing.loop is not None:
            timing.loop.append(seconds(loop_step, device))
    return timing


def rate(x: float) -> str:
    """Agent-rounds per second, to about three significant digits."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats; skip the 300x40 and 1000x100 games")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2 mimics the reference CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random action traces")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(f"machine: {describe_machine(device)}")
    print()
    print(
        "| workload | E x T | parallel (ms) | parallel (agent-rounds/s) | parallel peak memory (MiB) "
        "| loop on E x T | loop (ms) | loop (agent-rounds/s) | speed-up (medians) | speed-up (minima) |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for workload in workloads():
        if args.quick and workload.heavy:
            continue
        timing = run(workload, device, args.quick, args.seed)
        parallel = statistics.median(timing.parallel)
        parallel_rate = timing.parallel_terms / parallel
        sizes = f"{workload.n_episodes} x {workload.n_rounds}"
        peak = "—" if timing.parallel_peak_mib is None else f"{timing.parallel_peak_mib:,.0f}"
        if timing.loop is None:
            loop_ms = loop_rate = ratio = best_ratio = "—"
        else:
            loop = statistics.median(timing.loop)
            loop_ms, loop_rate = f"{1e3 * loop:,.1f}", rate(timing.loop_terms / loop)
            ratio = f"{parallel_rate / (timing.loop_terms / loop):,.0f}×"
            best = (timing.parallel_terms / min(timing.parallel)) / (timing.loop_terms / min(timing.loop))
            best_ratio = f"{best:,.0f}×"
        print(
            f"| {workload.name} | {sizes} | {1e3 * parallel:,.2f} | {rate(parallel_rate)} | {peak} "
            f"| {timing.loop_slice} | {loop_ms} | {loop_rate} | {ratio} | {best_ratio} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
