"""The ``diml`` command line: fit a mechanism to saved traces, evaluate a fit against a known truth.

Examples::

    mechgym record mechgym/NeuralMechanism-v0 --episodes 60 --rounds 60 --seed 0 -o traces.parquet
    diml fit traces.parquet --epochs 60 -o fit.pt
    diml evaluate fit.pt --traces test.parquet
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from diml_inverse.models import MODEL_NAMES
from mechgym.errors import MechGymError

EXIT_USAGE = 2


def _fit(args: argparse.Namespace) -> int:
    from diml_inverse.fit import fit
    from mechgym.traces import load_traces

    traces = load_traces(args.traces, env_id=args.env)
    if args.test_fraction:
        traces, _ = traces.split(1.0 - args.test_fraction)
    result = fit(
        args.env,
        traces,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        valid_fraction=args.valid_fraction,
        patience=args.patience,
        device=args.device,
        seed=args.seed,
        learn_alpha=args.learn_alpha,
        learn_epsilon=args.learn_epsilon,
        learn_q0=args.learn_q0,
        agent_batch_size=args.agent_batch_size,
        round_window=args.round_window,
        burn_in=args.burn_in,
        compile=args.compile,
        progress=not args.quiet,
    )
    path = result.save(args.output)
    last = result.history[result.selected_epoch - 1]
    nll = ", ".join(f"{key} {last[key]:.4f}" for key in ("train_nll", "valid_nll") if key in last)
    print(
        f"fitted {result.config['model']} on {result.env_id} ({traces.n_episodes} episodes); "
        f"epoch {result.selected_epoch} of {len(result.history)}: {nll}; wrote {path}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from diml_inverse import metrics
    from diml_inverse.result import load
    from mechgym.registration import make
    from mechgym.traces import load_traces

    result = load(args.fit, device=args.device)
    env_id = result.env_id
    if env_id is None:
        raise MechGymError(f"{args.fit} names no environment: the truth cannot be rebuilt")
    test = load_traces(args.traces, env_id=env_id)
    if args.test_fraction:
        _, test = test.split(1.0 - args.test_fraction)
    env_kwargs = dict(result.config.get("env_kwargs", {}))
    if args.truth_seed is not None:
        env_kwargs["mechanism_seed"] = args.truth_seed
    truth = make(env_id, **env_kwargs).mechanism.to(result.mechanism._device())
    generating = test.learner() or result.learner
    values = metrics.evaluate(
        truth,
        result.mechanism,
        test,
        generating,
        model_learner=result.learner,
        diff_samples=args.diff_samples,
        cf_episodes=args.cf_episodes,
        cf_rounds=args.cf_rounds,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        print(
            f"{args.fit} on {env_id} (truth mechanism_seed={env_kwargs.get('mechanism_seed')}), "
            f"{test.n_episodes} test episodes"
        )
        print(metrics.format_metrics_table([{"metric": k, "value": v} for k, v in values.items()]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``diml``."""
    parser = argparse.ArgumentParser(prog="diml", description="Differentiable inverse mechanism learning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fit a mechanism to a trace file")
    fit.add_argument("traces", type=Path, help="a .parquet or .npz file from `mechgym record`")
    fit.add_argument("--env", default=None, help="environment id (default: the one recorded in the traces)")
    fit.add_argument("--model", default="auto", choices=[m for m in MODEL_NAMES], help="model family")
    fit.add_argument("--epochs", type=int, default=100)
    fit.add_argument("--batch-size", type=int, default=32)
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument("--valid-fraction", type=float, default=0.2, help="held-out share for epoch selection")
    fit.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="leave the last share of episodes out entirely (for `diml evaluate --test-fraction`)",
    )
    fit.add_argument("--patience", type=int, default=None)
    fit.add_argument("--learn-alpha", action="store_true")
    fit.add_argument("--learn-epsilon", action="store_true")
    fit.add_argument("--learn-q0", action="store_true")
    fit.add_argument("--agent-batch-size", type=int, default=None, help="agents per minibatch (large games)")
    fit.add_argument("--round-window", type=int, default=None, help="score windows of this many rounds (long episodes)")
    fit.add_argument("--burn-in", type=int, default=None, help="rounds before each window (default: exact)")
    fit.add_argument("--compile", action="store_true", help="torch.compile each step (see docs/benchmarks.md)")
    fit.add_argument("--device", default="auto")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    fit.add_argument("-o", "--output", type=Path, default=Path("fit.pt"))
    fit.set_defaults(run=_fit)

    evaluate = commands.add_parser("evaluate", help="compare a fit with the environment's true mechanism")
    evaluate.add_argument("fit", type=Path, help="a file from `diml fit`")
    evaluate.add_argument("--traces", type=Path, required=True, help="held-out traces")
    evaluate.add_argument(
        "--test-fraction", type=float, default=0.0, help="evaluate on the last share of episodes only"
    )
    evaluate.add_argument(
        "--truth-seed",
        type=int,
        default=None,
        help="mechanism_seed of the true mechanism (default: the fit's env kwargs)",
    )
    evaluate.add_argument("--diff-samples", type=int, default=20_000)
    evaluate.add_argument("--cf-episodes", type=int, default=300)
    evaluate.add_argument("--cf-rounds", type=int, default=50)
    evaluate.add_argument("--seed", type=int, default=0, help="evaluation seed")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``diml`` command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.run(args))
    except MechGymError as error:
        print(f"diml {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
