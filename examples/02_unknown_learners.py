"""Audit a payout rule whose users run Hedge: what DIML recovers when it assumes logit-Q, and when it knows.

The hidden rule is the public-goods game's subsidy (3 agents x 7 contribution levels). The agents learn by
Hedge (multiplicative weights). An auditor who does not know that fits DIML with the logit-Q model, learning
its ``alpha`` and ``epsilon``; one who does fits with ``learner=Hedge(...)``. Both are scored on held-out
episodes by

* ``diff_mse``: the error of the payoff differences, in the truth's units;
* ``rescaled_diff_mse``: the same after the best rescaling of the fit, i.e. the incentives' shape only (a
  logit learner's temperature and the payoff scale are confounded, so an unknown learner leaves the units
  unknown; see docs/results.md, "Misspecified learners");
* ``cfkl_params``: how well the fit predicts play under other learners (a shifted Hedge), against the
  KL between two simulations of the truth (its noise floor).

    python examples/02_unknown_learners.py            # 60 episodes x 60 rounds, about a minute on 2 CPU cores
    python examples/02_unknown_learners.py --smoke    # a few seconds

Writes ``runs/unknown_learners/traces.parquet`` and ``fit.pt`` (the fit that knows the learners).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import diml_inverse
import mechgym
from diml_inverse import metrics
from mechgym.learners import Hedge, LogitQ

ENV_ID = "mechgym/PublicGoods-v0"
AGENTS = Hedge(eta=0.1, epsilon=0.06)  # what the agents really run
ASSUMED = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)  # what an auditor who does not know would assume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for a fast check")
    parser.add_argument("--out", type=Path, default=Path("runs/unknown_learners"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    episodes, epochs, cf_episodes = (12, 3, 20) if args.smoke else (60, 200, 300)
    args.out.mkdir(parents=True, exist_ok=True)

    traces = mechgym.rollout(ENV_ID, AGENTS, n_episodes=episodes, n_rounds=60, seed=0)
    traces.save(args.out / "traces.parquet")
    train, test = traces.split(0.8)
    print(f"recorded {traces}")

    options = {"epochs": epochs, "batch_size": 16, "device": args.device, "seed": 0, "progress": False}
    fits = {
        "logit-Q assumed": diml_inverse.fit(
            ENV_ID, train, learner=ASSUMED, learn_alpha=True, learn_epsilon=True, **options
        ),
        "Hedge known": diml_inverse.fit(ENV_ID, train, learner=AGENTS, **options),
    }
    fits["Hedge known"].save(args.out / "fit.pt")

    truth = mechgym.make(ENV_ID).mechanism
    zero = metrics.zero_baseline_diff_mse(truth, test, seed=1)
    floor = metrics.cfkl_noise_floor(truth, AGENTS, cf_episodes, 50, seed=2)
    print(f"\nzero mechanism: diff_mse {zero:.4f}; cfkl noise floor {floor:.4f}\n")
    print("| fit | diff_mse | zero / diff_mse | rescaled diff_mse (scale) | held-out NLL | cfkl_params |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in fits.items():
        estimate = result.mechanism.cpu()
        error = metrics.diff_mse(truth, estimate, test, seed=1)
        scale, rescaled = metrics.rescaled_diff_mse(truth, estimate, test, seed=1)
        nll = metrics.heldout_nll(estimate, test, result.learner)
        cfkl = metrics.cfkl_params(truth, estimate, AGENTS, cf_episodes, 50, seed=2)
        print(f"| {name} | {error:.4f} | {zero / error:.1f}x | {rescaled:.4f} ({scale:.2f}) | {nll:.4f} | {cfkl:.4f} |")
    print(f"\nuniform play's NLL: {metrics.uniform_nll(truth.n_actions):.4f}")
    print(
        "The lower held-out NLL tells which learning model fits the agents better; the rescaled error shows how\n"
        "much of the remaining error is units (scale) rather than the shape of the incentives."
    )


if __name__ == "__main__":
    main()
