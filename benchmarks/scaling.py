"""How the likelihood's cost grows with episodes, rounds, agents and actions (log-log fit of exponents).

For each factor, the others are held at a base size and the factor is swept; the time of one forward and
backward pass of the parallel likelihood (the work of one training step) is measured, and the exponent
``k`` of ``time ~ size**k`` is the least-squares slope on a log-log scale. Two model families are swept:
the anonymous count network (E4, counterfactual rows per (own, alternative) action pair) and the neural
joint network without a payoff table (its counterfactuals are per (agent, alternative) pair).

    python benchmarks/scaling.py                # prints the table, writes docs/figures/scaling.png
    python benchmarks/scaling.py --quick        # tiny sweep, no figure
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch
from _common import describe_machine, median_seconds

from diml_inverse.likelihood import log_likelihood
from mechgym.learners import LogitQ
from mechgym.mechanisms import AnonymousCountMechanism, Mechanism, NeuralJointMechanism

LEARNER = LogitQ(alpha=0.2, beta=6.0, epsilon=0.02)
BASE = {"episodes": 8, "rounds": 32, "agents": 64, "actions": 16}
SWEEPS = {
    "episodes": [2, 4, 8, 16, 32],
    "rounds": [8, 16, 32, 64, 128],
    "agents": [16, 32, 64, 128, 256],
    "actions": [4, 8, 16, 32, 48],
}
QUICK_SWEEPS = {name: values[:2] for name, values in SWEEPS.items()}
QUICK_BASE = {"episodes": 2, "rounds": 8, "agents": 16, "actions": 4}


def build(family: str, n_agents: int, n_actions: int) -> Mechanism:
    if family == "anonymous":
        return AnonymousCountMechanism(n_agents, n_actions, hidden=64, seed=0)
    mechanism = NeuralJointMechanism(n_agents, n_actions, hidden=64, seed=0)
    mechanism.max_table_size = 0  # force the per-agent structured path
    return mechanism


def step_seconds(family: str, size: dict[str, int], repeats: int) -> float:
    """Median time of one forward + backward of the mean negative log-likelihood."""
    mechanism = build(family, size["agents"], size["actions"])
    generator = torch.Generator().manual_seed(0)
    actions = torch.randint(0, size["actions"], (size["episodes"], size["rounds"], size["agents"]), generator=generator)

    def run() -> None:
        mechanism.zero_grad(set_to_none=True)
        (-log_likelihood(mechanism, actions, LEARNER, reduction="mean", validate=False)).backward()

    run()  # warm-up
    return median_seconds(run, repeats)


def slope(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in seconds]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)


def sweep(
    family: str, base: dict[str, int], sweeps: dict[str, list[int]], repeats: int
) -> dict[str, tuple[list[int], list[float]]]:
    results = {}
    for factor, values in sweeps.items():
        seconds = [step_seconds(family, {**base, factor: value}, repeats) for value in values]
        results[factor] = (values, seconds)
    return results


def plot(results: dict[str, dict[str, tuple[list[int], list[float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(13, 3.2), sharey=True)
    for axis, factor in zip(axes, SWEEPS, strict=True):
        for family, marker in (("anonymous", "o"), ("neural", "s")):
            sizes, seconds = results[family][factor]
            axis.loglog(sizes, seconds, marker=marker, label=f"{family} (k={slope(sizes, seconds):.2f})")
        axis.set(title=factor, xlabel=factor)
        axis.set_xticks(SWEEPS[factor], [str(size) for size in SWEEPS[factor]])
        axis.minorticks_off()
        axis.legend(fontsize=7)
    axes[0].set_ylabel("seconds per forward+backward")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny sweep, no figure")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/scaling.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base, sweeps = (QUICK_BASE, QUICK_SWEEPS) if args.quick else (BASE, SWEEPS)
    repeats = 1 if args.quick else args.repeats
    print(f"machine: {describe_machine(torch.device('cpu'))}; base size {base}\n")
    results = {family: sweep(family, base, sweeps, repeats) for family in ("anonymous", "neural")}
    print("| model | factor | sizes | seconds | exponent k |")
    print("|---|---|---|---|---:|")
    for family, by_factor in results.items():
        for factor, (sizes, seconds) in by_factor.items():
            times = ", ".join(f"{t:.3g}" for t in seconds)
            print(f"| {family} | {factor} | {sizes} | {times} | {slope(sizes, seconds):.2f} |")
    if not args.quick:
        plot(results, args.figure)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
