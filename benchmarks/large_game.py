"""A 1,000-agent anonymous game: record 16 episodes x 1,000 rounds and fit it, on the CPU, within memory.

The truth is ``mechgym/AnonymousGame-v0`` at 1,000 agents x 100 actions (the count network, hidden 256) and
its default learner ``LogitQ(0.2, 6, 0.02)``. Recording costs ``A x A`` counterfactual rows per round (not
``N x A``). The fit uses the anonymous count model (hidden width ``--hidden``) with:

* round windows (``fit(round_window=...)``): a minibatch item is ``--round-window`` likelihood terms of one
  episode, preceded by a burn-in long enough that the learners' state is exact to float32, so one epoch
  makes ``episodes x rounds / window / batch`` Adam steps instead of ``episodes / batch``;
* ``--agent-batch-size`` agents per minibatch (the counterfactual rows still see all 1,000 agents' actions);
* checkpointed chunks of rounds, so memory stays bounded.

Reported: recording time, fit time per epoch, peak resident memory, and the recovery of payoff differences on
held-out episodes (``diff_mse``) against the zero mechanism after every epoch.

    python benchmarks/large_game.py --traces runs/large_game.parquet   # full size; re-uses saved traces
    python benchmarks/large_game.py --quick                            # 200 x 20 x 100 rounds x 4 episodes
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from _common import describe_machine

import diml_inverse
import mechgym
from diml_inverse import metrics
from mechgym.devices import keep_freed_memory
from mechgym.mechanisms import Mechanism


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small version of the same pipeline")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--actions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--test-episodes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--round-window", type=int, default=100, help="likelihood terms per minibatch item")
    parser.add_argument("--traces", default=None, help="a .parquet path: load the traces if it exists, else save them")
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of the fitted count network")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per minibatch")
    parser.add_argument("--agent-batch-size", type=int, default=100, help="agents per minibatch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc settings alone")
    parser.add_argument("--compile", action="store_true", help="fit(compile=True): torch.compile each step")
    args = parser.parse_args(argv)
    if not args.system_malloc:
        keep_freed_memory()
    if args.quick:
        args.agents, args.actions, args.rounds, args.episodes, args.test_episodes = 200, 20, 100, 4, 1
        args.epochs, args.agent_batch_size, args.round_window = 2, 50, 25
    torch.set_num_threads(args.threads)
    print(f"machine: {describe_machine(torch.device(args.device))}, device {args.device}")
    env_id = "mechgym/AnonymousGame-v0"
    env = mechgym.make(env_id, n_agents=args.agents, n_actions=args.actions, n_rounds=args.rounds)

    saved = Path(args.traces) if args.traces else None
    started = time.perf_counter()
    if saved is not None and saved.exists():
        traces = mechgym.load_traces(saved, env_id=env_id)
        if (traces.n_agents, traces.n_actions, traces.n_rounds, traces.n_episodes) != (
            args.agents,
            args.actions,
            args.rounds,
            args.episodes,
        ):
            raise SystemExit(f"{saved} holds another size; remove it or pass another --traces path")
        record_seconds = float(traces.metadata.extra.get("record_seconds", float("nan")))
        print(f"loaded {saved} (recorded in {record_seconds:.0f} s)")
    else:
        traces = mechgym.rollout(env, n_episodes=args.episodes, seed=0, device=args.device, progress=not args.quick)
        record_seconds = time.perf_counter() - started
        if saved is not None:
            traces.metadata.extra["record_seconds"] = record_seconds
            traces.save(saved)
    print(f"record: {record_seconds:.0f} s, peak memory so far {peak_rss_gb():.1f} GiB", flush=True)
    train, test = (
        traces.episodes(slice(0, args.episodes - args.test_episodes)),
        traces.episodes(slice(args.episodes - args.test_episodes, None)),
    )
    truth = env.unwrapped.mechanism.to(args.device)
    baseline = metrics.zero_baseline_diff_mse(truth, test, n_samples=50_000, seed=1)
    curve: list[tuple[int, float, float]] = []

    def track(epoch: int, mechanism: Mechanism) -> dict[str, float]:
        error = metrics.diff_mse(truth, mechanism, test, n_samples=50_000, seed=1)
        curve.append((epoch, error, time.perf_counter() - started))
        print(f"epoch {epoch}: diff_mse {error:.3g} (zero mechanism {baseline:.3g}), {curve[-1][2]:.0f} s", flush=True)
        return {"diff_mse": error}

    started = time.perf_counter()
    result = diml_inverse.fit(
        env_id,
        train,
        model="anonymous",
        model_kwargs={"hidden": args.hidden},
        epochs=args.epochs,
        batch_size=args.batch_size,
        agent_batch_size=args.agent_batch_size,
        round_window=args.round_window,
        compile=args.compile,
        lr=args.lr,
        valid_fraction=0.0,
        device=args.device,
        seed=0,
        progress=not args.quick,
        callback=track,
    )
    fit_seconds = time.perf_counter() - started
    error = curve[-1][1]

    print(
        f"\n| {args.agents} agents x {args.actions} actions x {args.rounds} rounds x {args.episodes} episodes | value |"
    )
    print("|---|---:|")
    print(f"| record (rollout) | {record_seconds:.0f} s |")
    print(
        f"| fit: {args.epochs} epochs, model hidden {args.hidden}, windows of {args.round_window} terms, "
        f"{args.batch_size} per batch, {args.agent_batch_size} agents per batch"
        f"{', compiled' if args.compile else ''} | "
        f"{fit_seconds:.0f} s ({fit_seconds / args.epochs:.0f} s per epoch) |"
    )
    print(f"| peak resident memory | {peak_rss_gb():.1f} GiB |")
    print(
        f"| train NLL per agent-round, first -> last epoch | {result.history[0]['train_nll']:.4f} -> "
        f"{result.history[-1]['train_nll']:.4f} (log A = {torch.log(torch.tensor(float(args.actions))):.4f}) |"
    )
    print(f"| diff_mse on {args.test_episodes} held-out episodes | {error:.3g} |")
    print(f"| zero-mechanism diff_mse | {baseline:.3g} ({baseline / max(error, 1e-12):.0f}x higher) |")


if __name__ == "__main__":
    main()
