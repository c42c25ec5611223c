"""Rollout throughput: the vectorised ``mechgym.rollout`` against the plain PettingZoo loop.

Both record the same traces (bit-identical, see tests/mechgym/test_rollout.py): ``play_episodes`` steps the
ParallelEnv once per round with one ``LearnerPolicy`` per agent; ``rollout`` simulates all episodes and agents
at once. Figures are agent-steps per second (episodes x rounds x agents / seconds), median of repeats, both
measured in the same process.

    python benchmarks/rollout.py            # 3, 40 and 300 agents
    python benchmarks/rollout.py --quick    # a fast run
    python benchmarks/rollout.py --device cuda
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from _common import describe_machine, median_seconds

import mechgym


@dataclass(frozen=True)
class Game:
    """A registered game at a given size, with the episode counts each side runs."""

    label: str
    env_id: str
    kwargs: dict[str, int]
    loop_episodes: int
    rollout_episodes: int


GAMES = [
    Game("3 agents x 6 actions (E1)", "mechgym/NeuralMechanism-v0", {"n_agents": 3, "n_actions": 6}, 8, 256),
    Game("40 agents x 10 actions (E4 n40)", "mechgym/AnonymousGame-v0", {"n_agents": 40, "n_actions": 10}, 2, 64),
    Game("300 agents x 40 actions (E4 n300)", "mechgym/AnonymousGame-v0", {"n_agents": 300, "n_actions": 40}, 1, 16),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: the reference 2-core CPU)")
    parser.add_argument("--device", default="cpu", help="device of the vectorised rollout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, repeats = (5, 1) if args.quick else (args.rounds, args.repeats)
    print(f"machine: {describe_machine(torch.device('cpu'))}, rollout on {args.device}, {rounds} rounds per episode\n")
    print("| game | PettingZoo loop (agent-steps/s) | rollout (agent-steps/s) | speed-up |")
    print("|---|---:|---:|---:|")
    for game in GAMES:
        env = mechgym.make(game.env_id, n_rounds=rounds, **game.kwargs)
        n_agents = game.kwargs["n_agents"]
        loop_episodes = game.loop_episodes
        rollout_episodes = 2 if args.quick else game.rollout_episodes
        mechgym.rollout(env, n_episodes=1, seed=0, device=args.device)  # warm-up
        loop = median_seconds(lambda: mechgym.play_episodes(env, None, loop_episodes, seed=0), repeats)  # noqa: B023
        fast = median_seconds(
            lambda: mechgym.rollout(env, n_episodes=rollout_episodes, seed=0, device=args.device),  # noqa: B023
            repeats,
        )
        loop_rate = loop_episodes * rounds * n_agents / loop
        fast_rate = rollout_episodes * rounds * n_agents / fast
        print(f"| {game.label} | {loop_rate:,.0f} | {fast_rate:,.0f} | {fast_rate / loop_rate:,.0f}x |")


if __name__ == "__main__":
    main()
