"""The ``diml`` command line: fit a mechanism to saved traces, evaluate a fit against a known truth.

Examples::

    mechgym record mechgym/NeuralMechanism-v0 --episodes 60 --rounds 60 --seed 0 -o traces.parquet
    diml fit traces.parquet --epochs 60 -o fit.pt
    diml evaluate fit.pt --traces test.parquet
    mechgym record mechgym/Congestion-v0 --learner ppo -o ppo.parquet
    diml fit ppo.parquet --learner hedge --eta 0.05 -o ppo-fit.pt   # SB3 traces record no learning model

``diml fit`` never writes over its input and replaces an existing output only with ``--overwrite``; Ctrl-C
saves the best epoch so far. Every option's default is in ``diml COMMAND --help``; the options of ``diml fit``
are the fields of :class:`~diml_inverse.config.FitConfig` (``--batch-size`` sets ``batch_size``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from diml_inverse.config import FitConfig
from diml_inverse.errors import FitDivergedError
from diml_inverse.fit import FitInterrupted
from diml_inverse.fit_options import unrecorded_learner_note
from mechgym.cli_support import (
    EXIT_INTERRUPTED,
    HelpFormatter,
    add_command,
    add_dataclass_arguments,
    add_learner_arguments,
    add_version_and_verbose,
    check_output_path,
    dataclass_from_args,
    learner_from_args,
    parse_args,
    run_command,
)
from mechgym.errors import ConfigurationError, MechGymError

if TYPE_CHECKING:
    from mechgym.traces import TraceDataset


def _no_learner(path: Path, traces: TraceDataset) -> ConfigurationError:
    """The error for traces that record no learner (Stable-Baselines3 agents) and no ``--learner``."""
    played_by = unrecorded_learner_note(traces)
    return ConfigurationError(
        f"{path} records no learner{played_by}; name the learning model to assume with --learner and its "
        "parameters, e.g. --learner logit-q --alpha 0.25 --beta 3 --epsilon 0.06, or --learner hedge --eta 0.1"
    )


def _save_interrupted(output: Path, interrupted: FitInterrupted) -> int:
    """Save the best epoch of an interrupted fit (if one finished) and say so in one line on stderr."""
    result = interrupted.result
    if result is None:
        print(
            f"diml fit: interrupted before any of the {interrupted.epochs} epochs was done; nothing saved "
            f"({output} not written)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    path = result.save(output)
    print(
        f"diml fit: interrupted after {interrupted.epochs_done} of {interrupted.epochs} epochs; saved the best "
        f"epoch so far (epoch {result.selected_epoch}) to {path}",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


def _fit(args: argparse.Namespace) -> int:
    from diml_inverse.fit import fit  # looked up at each call (tests replace it)
    from mechgym.traces import load_traces

    output = check_output_path(args.output, inputs=[args.traces], overwrite=args.overwrite)  # before the work
    config = dataclass_from_args(FitConfig, args, progress=args.progress and not args.quiet)
    traces = load_traces(args.traces, env_id=args.env)
    learner = learner_from_args(args, traces.learner(), f"the learner recorded in {args.traces}")
    if learner is None:
        raise _no_learner(args.traces, traces)
    if args.test_fraction:
        traces, _ = traces.split(1.0 - args.test_fraction)
    try:
        result = fit(args.env, traces, learner=learner, config=config)
    except FitInterrupted as interrupted:
        return _save_interrupted(output, interrupted)
    path = result.save(output)
    last = result.history[result.selected_epoch - 1]
    nll = ", ".join(f"{key} {last[key]:.4f}" for key in ("train_nll", "valid_nll") if key in last)
    print(
        f"fitted {result.model_name} on {result.env_id} ({traces.n_episodes} episodes) assuming "
        f"{result.learner.name}; epoch {result.selected_epoch} of {len(result.history)}: {nll}; wrote {path}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from diml_inverse import metrics
    from diml_inverse.result import load
    from mechgym.devices import device_of
    from mechgym.registration import make
    from mechgym.traces import load_traces

    # three steps: every one is drawn (mininterval=0), each names the work under way
    with tqdm(total=3, desc="evaluate", unit="step", disable=args.quiet, leave=False, mininterval=0) as bar:
        bar.set_postfix_str("loading the fit and the traces")
        result = load(args.fit, device=args.device)
        env_id = result.env_id
        if env_id is None:
            raise MechGymError(f"{args.fit} names no environment: the truth cannot be rebuilt")
        test = load_traces(args.traces, env_id=env_id)
        if args.test_fraction:
            _, test = test.split(1.0 - args.test_fraction)
        env_kwargs = dict(result.env_kwargs)
        if args.truth_seed is not None:
            env_kwargs["mechanism_seed"] = args.truth_seed
        truth = make(env_id, **env_kwargs).mechanism.to(device_of(result.mechanism))
        generating = test.learner() or result.learner
        bar.update()
        bar.set_postfix_str("the truth's counterfactual play")
        evaluator = metrics.Evaluator(  # metrics.evaluate, in two steps for the progress bar
            truth,
            test,
            generating,
            diff_samples=args.diff_samples,
            cf_episodes=args.cf_episodes,
            cf_rounds=args.cf_rounds,
            seed=args.seed,
        )
        bar.update()
        bar.set_postfix_str("the fit's payoff differences and counterfactual play")
        values = evaluator(result.mechanism, result.learner)
        bar.update()
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
    parser = argparse.ArgumentParser(
        prog="diml", description="Differentiable inverse mechanism learning.", formatter_class=HelpFormatter
    )
    add_version_and_verbose(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    fit = add_command(
        commands,
        "fit",
        help="fit a mechanism to a trace file",
        description="Fit a mechanism to the actions of learning agents by maximum likelihood through their "
        "learning rule (DIML) and save it (the best held-out epoch) to a fit file for `diml evaluate`.",
    )
    fit.add_argument("traces", type=Path, help="a .parquet or .npz file from `mechgym record`")
    fit.add_argument("--env", default=None, help="environment id (default: the one recorded in the traces)")
    add_learner_arguments(
        fit,
        learner_help="the learning model to assume: needed for traces that record none (Stable-Baselines3 "
        "agents); a rule other than the recorded one makes a misspecified fit (DIML-Wrong)",
        default_learner="the learner recorded in the traces",
    )
    add_dataclass_arguments(
        fit,
        FitConfig,
        title="fit options",
        description="The fields of diml_inverse.FitConfig, as fit(...) takes them (docs/inverse.md).",
    )
    fit.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="leave the last share of episodes out entirely (for `diml evaluate --test-fraction`)",
    )
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    fit.add_argument("-o", "--output", type=Path, default=Path("fit.pt"), help="the fit file to write")
    fit.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    fit.set_defaults(run=_fit)

    evaluate = add_command(
        commands,
        "evaluate",
        help="compare a fit with the environment's true mechanism",
        description="Rebuild the true mechanism from the fit's environment and compare the fit with it on "
        "held-out traces; print the metrics table (docs/inverse.md explains every metric).",
    )
    evaluate.add_argument("fit", type=Path, help="a file from `diml fit`")
    evaluate.add_argument("--traces", type=Path, required=True, help="held-out traces (required)")
    evaluate.add_argument(
        "--test-fraction", type=float, default=0.0, help="evaluate on the last share of episodes only"
    )
    evaluate.add_argument(
        "--truth-seed",
        type=int,
        default=None,
        help="mechanism_seed of the true mechanism (default: the fit's env kwargs)",
    )
    evaluate.add_argument("--diff-samples", type=int, default=20_000, help="contexts of diff_mse")
    evaluate.add_argument("--cf-episodes", type=int, default=300, help="simulated episodes per mechanism of cfkl")
    evaluate.add_argument("--cf-rounds", type=int, default=50, help="rounds per simulated episode of cfkl")
    evaluate.add_argument("--seed", type=int, default=0, help="evaluation seed")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda, auto, ...")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``diml`` command line.

    Args:
        argv: Arguments without the program name (``None`` reads ``sys.argv``).

    Returns:
        The exit status: 0 on success; 2 on bad input (a :class:`~mechgym.errors.MechGymError`, a usage error,
        a diverged fit, an output path that exists, is an input or cannot be written) or when the operating
        system refuses a read or write, with one line on stderr; 130 after Ctrl-C (``diml fit`` first saves
        the best epoch so far); 1 after an unexpected error (a bug: ``-v`` prints its traceback) or when the
        reader of stdout goes away.
    """
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    return run_command("diml", args, args.run, expected=(FitDivergedError,))


if __name__ == "__main__":
    raise SystemExit(main())
