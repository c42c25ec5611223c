"""Time and peak memory to fit E1–E4 to convergence (early stopping on the held-out likelihood).

Each workload runs in its own process, so that its peak resident memory is its own: record the paper-sized
traces, fit DIML with the published optimiser settings until the held-out likelihood has not improved for
``--patience`` epochs (at most the published number of epochs), and report the wall time of the fit, the
epochs it ran, the peak RSS of the process, and the recovery (``diff_mse`` against the zero mechanism).

    python benchmarks/fit.py                 # E1, E2, E3, E4 n40 ... n300
    python benchmarks/fit.py --only E1 E4-n300
    python benchmarks/fit.py --quick         # tiny sizes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from _common import describe_machine


@dataclass(frozen=True)
class Workload:
    """One paper experiment's data and fit settings."""

    name: str
    env_id: str
    env_kwargs: dict[str, object]
    n_episodes: int
    n_rounds: int
    epochs: int
    batch_size: int
    train_fraction: float


WORKLOADS = [
    Workload("E1", "mechgym/NeuralMechanism-v0", {}, 60, 60, 100, 32, 0.8),
    Workload("E2", "mechgym/Congestion-v0", {"pricing": "subsidy"}, 60, 60, 100, 32, 0.8),
    Workload("E3", "mechgym/PublicGoods-v0", {}, 60, 60, 100, 32, 0.8),
    *(
        Workload(f"E4-n{n}", "mechgym/AnonymousGame-v0", {"n_agents": n, "n_actions": a}, e, t, 200, 8, 0.8)
        for n, a, e, t in ((40, 10, 24, 30), (80, 20, 24, 30), (120, 25, 24, 30), (200, 30, 20, 30), (300, 40, 16, 25))
    ),
]
QUICK_WORKLOADS = [
    Workload("E1-tiny", "mechgym/NeuralMechanism-v0", {}, 8, 12, 3, 4, 0.75),
    Workload("E4-tiny", "mechgym/AnonymousGame-v0", {"n_agents": 12, "n_actions": 4}, 6, 10, 3, 4, 0.67),
]


def run_workload(workload: Workload, patience: int, threads: int) -> dict[str, object]:
    """Record, fit to convergence and evaluate one workload (in this process)."""
    import diml_inverse
    import mechgym
    from diml_inverse import metrics
    from mechgym.devices import keep_freed_memory

    keep_freed_memory()  # as the experiments' command line does (docs/benchmarks.md, "malloc")
    torch.set_num_threads(threads)
    env = mechgym.make(workload.env_id, **workload.env_kwargs)
    traces = mechgym.rollout(env, n_episodes=workload.n_episodes, n_rounds=workload.n_rounds, seed=0)
    train, test = traces.split(workload.train_fraction)
    started = time.perf_counter()
    result = diml_inverse.fit(
        workload.env_id,
        train,
        epochs=workload.epochs,
        batch_size=workload.batch_size,
        patience=patience,
        device="cpu",
        seed=0,
        progress=False,
    )
    seconds = time.perf_counter() - started
    truth = env.unwrapped.mechanism
    return {
        "fit_seconds": seconds,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "diff_mse": metrics.diff_mse(truth, result.mechanism, test, n_samples=20_000, seed=1),
        "zero_diff_mse": metrics.zero_baseline_diff_mse(truth, test, n_samples=20_000, seed=1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny workloads")
    parser.add_argument("--only", nargs="*", default=None, help="workload names (E1, E2, E3, E4-n40, ...)")
    parser.add_argument("--patience", type=int, default=10, help="epochs without a better held-out likelihood")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    if args.worker is not None:
        workload = next(w for w in workloads if w.name == args.worker)
        print(json.dumps(run_workload(workload, args.patience, args.threads)))
        return
    selected = [w for w in workloads if args.only is None or w.name in args.only]
    torch.set_num_threads(args.threads)  # as in each worker, so that the machine line names their threads
    print(f"machine: {describe_machine(torch.device('cpu'))}, patience {args.patience}\n")
    print("| workload | episodes x rounds | fit time (s) | epochs run (best) | peak RSS (MB) | diff_mse | zero |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for workload in selected:
        command = [
            sys.executable,
            __file__,
            "--worker",
            workload.name,
            "--patience",
            str(args.patience),
            "--threads",
            str(args.threads),
            *(["--quick"] if args.quick else []),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        print(
            f"| {workload.name} | {workload.n_episodes} x {workload.n_rounds} | "
            f"{row['fit_seconds']:.1f} | {row['epochs_run']} ({row['best_epoch']}) | {row['peak_rss_mb']:.0f} | "
            f"{row['diff_mse']:.3g} | {row['zero_diff_mse']:.3g} |"
        )


if __name__ == "__main__":
    main()
