"""What bit-identical simulation costs: batch-invariant counterfactual payoffs against one batched call.

``Mechanism.counterfactual_payoffs_batch_invariant`` (used by the environment's ``step`` and by every
rollout) evaluates each distinct action-count vector of an anonymous game in a call of its own, so that a
one-episode step and a batched rollout round the same way. ``Mechanism.counterfactual_payoffs`` (used by the
likelihood) evaluates the whole batch in one call. Both are timed in the same process on the same joint
actions, and the script checks they agree to float tolerance first.

    python benchmarks/batch_invariance.py              # E4 sizes, 2 threads
    python benchmarks/batch_invariance.py --quick
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from _common import describe_machine, load_average, median_seconds

from mechgym.mechanisms import AnonymousCountMechanism

CASES = [(40, 10, 64), (40, 10, 1024), (120, 25, 24), (300, 40, 16)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the two smallest cases, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: the reference 2-core CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases, repeats = (CASES[:1], 1) if args.quick else (CASES, args.repeats)
    print(f"machine: {describe_machine(torch.device('cpu'))}, load average {load_average()}\n")
    print("| agents x actions | episodes | one batched call (ms) | one call per count vector (ms) | ratio |")
    print("|---|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for n_agents, n_actions, n_episodes in cases:
        mechanism = AnonymousCountMechanism(n_agents, n_actions, seed=0).freeze()
        joint = torch.randint(0, n_actions, (n_episodes, n_agents), generator=generator)
        with torch.no_grad():
            batched = mechanism.counterfactual_payoffs(joint)
            invariant = mechanism.counterfactual_payoffs_batch_invariant(joint)
            torch.testing.assert_close(invariant, batched, rtol=1e-5, atol=1e-6)
            batched_s = median_seconds(partial(mechanism.counterfactual_payoffs, joint), repeats)
            invariant_s = median_seconds(partial(mechanism.counterfactual_payoffs_batch_invariant, joint), repeats)
        print(
            f"| {n_agents} x {n_actions} | {n_episodes} | {batched_s * 1e3:.1f} | {invariant_s * 1e3:.1f} "
            f"| {invariant_s / batched_s:.2f}x |"
        )


if __name__ == "__main__":
    main()
