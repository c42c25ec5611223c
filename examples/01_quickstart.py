"""Quick start: record learning agents on a hidden neural mechanism, fit it with DIML, check the recovery.

    python examples/01_quickstart.py            # the paper's E1 size, about a minute on 2 CPU cores
    python examples/01_quickstart.py --smoke    # a few seconds

Writes ``runs/quickstart/traces.parquet``, ``fit.pt`` and ``recovery.png`` (if matplotlib is installed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import diml_inverse
import mechgym
from diml_inverse import metrics
from mechgym.devices import device_of

ENV_ID = "mechgym/NeuralMechanism-v0"  # 3 agents x 6 actions, a frozen random MLP as the hidden rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for a fast check")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    episodes, epochs = (12, 3) if args.smoke else (60, 60)
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. Record: logit-Q learners (alpha=0.25, beta=3, epsilon=0.06) play the hidden mechanism.
    traces = mechgym.rollout(ENV_ID, n_episodes=episodes, n_rounds=60, seed=0)
    traces.save(args.out / "traces.parquet")
    train, test = mechgym.load_traces(args.out / "traces.parquet").split(0.8)
    print(f"recorded {traces}")

    # 2. Fit: maximum likelihood through the learners' unroll (the model never sees the truth).
    result = diml_inverse.fit(ENV_ID, train, epochs=epochs, device=args.device, seed=0)
    result.save(args.out / "fit.pt")
    print(f"fitted {result}")

    # 3. Recovery: payoff differences on held-out contexts, against the zero mechanism.
    truth = mechgym.make(ENV_ID).mechanism.to(device_of(result.mechanism))
    error = metrics.diff_mse(truth, result.mechanism, test, n_samples=20_000, seed=1)
    baseline = metrics.zero_baseline_diff_mse(truth, test, n_samples=20_000, seed=1)
    print(f"diff_mse: DIML {error:.5f} vs zero mechanism {baseline:.5f} ({baseline / max(error, 1e-12):.1f}x better)")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install '.[plot]')")
        return
    joint = test.actions_tensor(device_of(result.mechanism)).reshape(-1, test.n_agents)[:2000]
    with torch.no_grad():
        true_cf = truth.counterfactual_payoffs(joint)
        fit_cf = result.mechanism.counterfactual_payoffs(joint)
    true_diff = (true_cf - true_cf.mean(-1, keepdim=True)).flatten().cpu()
    fit_diff = (fit_cf - fit_cf.mean(-1, keepdim=True)).flatten().cpu()
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.scatter(true_diff, fit_diff, s=2, alpha=0.3)
    limit = float(true_diff.abs().max()) * 1.1
    axis.plot([-limit, limit], [-limit, limit], color="black", linewidth=0.8)
    axis.set(
        xlabel="true payoff (gauge-fixed)",
        ylabel="recovered payoff (gauge-fixed)",
        title=f"{ENV_ID}\ndiff_mse {error:.4f} (zero mechanism {baseline:.4f})",
    )
    figure.tight_layout()
    figure.savefig(args.out / "recovery.png", dpi=120)
    print(f"wrote {args.out / 'recovery.png'}")


if __name__ == "__main__":
    main()
