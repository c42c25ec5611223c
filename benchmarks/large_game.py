"""A 1,000-agent anonymous game: record 16 episodes x 1,000 rounds and fit it, on the CPU, within memory.

The truth is ``mechgym/AnonymousGame-v0`` at 1,000 agents x 100 actions (the count network, hidden 256).
Recording costs ``A x A`` counterfactual rows per round (not ``N x A``). The fit uses the anonymous count
model (hidden width ``--hidden``), minibatches of ``--batch-size`` episodes and ``--agent-batch-size`` agents
(the counterfactual rows still see all 1,000 agents' actions), and checkpointed chunks of rounds, so memory
stays bounded. Reported: recording time, fit time per epoch, peak resident memory, and the recovery of payoff
differences on held-out episodes against the zero mechanism.

    python benchmarks/large_game.py                       # the full size (tens of minutes on 2 CPU cores)
    python benchmarks/large_game.py --quick               # 200 agents x 20 actions x 100 rounds x 4 episodes
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

import diml_inverse
import mechgym
from diml_inverse import metrics


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
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of the fitted count network")
    parser.add_argument("--batch-size", type=int, default=1, help="episodes per minibatch")
    parser.add_argument("--agent-batch-size", type=int, default=100, help="agents per minibatch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.actions, args.rounds, args.episodes, args.test_episodes = 200, 20, 100, 4, 1
        args.epochs, args.agent_batch_size = 2, 50
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}"
    )
    env_id = "mechgym/AnonymousGame-v0"
    env = mechgym.make(env_id, n_agents=args.agents, n_actions=args.actions, n_rounds=args.rounds)

    started = time.perf_counter()
    traces = mechgym.rollout(env, n_episodes=args.episodes, seed=0, device=args.device, progress=False)
    record_seconds = time.perf_counter() - started
    train, test = (
        traces.episodes(slice(0, args.episodes - args.test_episodes)),
        traces.episodes(slice(args.episodes - args.test_episodes, None)),
    )

    started = time.perf_counter()
    result = diml_inverse.fit(
        env_id,
        train,
        model="anonymous",
        model_kwargs={"hidden": args.hidden},
        epochs=args.epochs,
        batch_size=args.batch_size,
        agent_batch_size=args.agent_batch_size,
        lr=args.lr,
        valid_fraction=0.0,
        device=args.device,
        seed=0,
        progress=False,
    )
    fit_seconds = time.perf_counter() - started
    truth = env.unwrapped.mechanism.to(result.mechanism._device())
    error = metrics.diff_mse(truth, result.mechanism, test, n_samples=50_000, seed=1)
    baseline = metrics.zero_baseline_diff_mse(truth, test, n_samples=50_000, seed=1)

    print(
        f"\n| {args.agents} agents x {args.actions} actions x {args.rounds} rounds x {args.episodes} episodes | value |"
    )
    print("|---|---:|")
    print(f"| record (rollout) | {record_seconds:.0f} s |")
    print(
        f"| fit: {args.epochs} epochs, model hidden {args.hidden}, {args.agent_batch_size} agents per batch | "
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
