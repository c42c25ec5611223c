"""The ``diml`` command line: fit a mechanism to saved traces, evaluate a fit against a known truth.

Examples::

    mechgym record mechgym/NeuralMechanism-v0 --episodes 60 --rounds 60 --seed 0 -o traces.parquet
    diml fit traces.parquet --epochs 60 -o fit.pt
    diml evaluate fit.pt --traces test.parquet
    diml fit traces.parquet --method qre -o qre-fit.pt   # the last rounds as logit-QRE play (docs/equilibrium.md)
    mechgym record mechgym/Congestion-v0 --learner ppo -o ppo.parquet
    diml fit ppo.parquet --learner hedge --eta 0.05 -o ppo-fit.pt   # SB3 traces record no learning model
    diml compare traces.parquet --candidate logit-q --candidate hedge:eta=0.1 --epochs 50
    diml report fit.pt --traces traces.parquet --test-fraction 0.2 --out fit.html

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
from mechgym.threads import parse_threads, threads_setting

if TYPE_CHECKING:
    from mechgym.learners import Learner
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


def _fit_equilibrium(
    args: argparse.Namespace, config: FitConfig, traces: TraceDataset, learner: Learner, output: Path
) -> int:
    """``diml fit --method qre|nash``: the last rounds as equilibrium play; a fit file ``diml evaluate`` scores."""
    from diml_inverse.equilibrium import equilibrium_fit_result, fit_equilibrium

    model = config.model if isinstance(config.model, str) and config.model != "auto" else "structured"
    with threads_setting(args.threads):
        inverse = fit_equilibrium(
            traces, args.method, env_id=args.env, model=model, last_rounds=args.last_rounds, pooled=args.pooled,
            lam=args.lam, seed=config.seed,
        )  # fmt: skip
    result = equilibrium_fit_result(inverse, traces, learner, env_id=args.env, model=model)
    path = result.save(output)
    lam = f", lam {float(inverse.params['lam']):.4g}" if "lam" in inverse.params else ""
    print(
        f"fitted {model} on {result.env_id} ({traces.n_episodes} episodes) by inverse {args.method} "
        f"({inverse.method}): {inverse.objective} {float(inverse.final.double().mean()):.4f}{lam}; wrote {path}"
    )
    return 0


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
    if args.method != "dynamics":
        return _fit_equilibrium(args, config, traces, learner, output)
    try:
        with threads_setting(args.threads):
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


def _candidate(text: str) -> tuple[str, dict[str, float]]:
    """``--candidate NAME[:PARAM=VALUE,...]``: a learner's registry name and parameter values."""
    from mechgym.cli_support import learner_name_type

    name, _, given = text.partition(":")
    values: dict[str, float] = {}
    for item in filter(None, given.split(",")):
        key, equals, value = item.partition("=")
        try:
            values[key.strip().replace("-", "_")] = float(value)
        except ValueError:
            equals = ""
        if not equals:
            raise argparse.ArgumentTypeError(
                f"{item!r} in {text!r} is not PARAM=NUMBER; write e.g. --candidate hedge:eta=0.1,epsilon=0.06"
            )
    return learner_name_type()(name), values


def _candidates(given: list[tuple[str, dict[str, float]]] | None, traces: TraceDataset) -> dict[str, Learner]:
    """The candidates of ``diml compare``: as given, or every built-in rule (the recorded one at its values)."""
    from diml_inverse.dynamics import DYNAMICS
    from mechgym.cli_support import cli_name
    from mechgym.learners import LEARNERS

    recorded = traces.learner()
    if given is not None and len(given) < 2:
        raise ConfigurationError("diml compare needs two or more --candidate (or none: every built-in rule)")
    if not given:
        rules = [name for name, cls in LEARNERS.items() if cls in DYNAMICS]
        given = [(name, {}) for name in rules]
    candidates: dict[str, Learner] = {}
    for name, values in given:
        cls = LEARNERS[name]
        base = recorded if type(recorded) is cls else cls()
        try:
            learner = base.replace(**values) if values else base
        except TypeError:
            accepted = ", ".join(sorted(base.params()))
            raise ConfigurationError(f"--candidate {cli_name(name)}: its parameters are {accepted}") from None
        settings = ",".join(f"{key}={value:g}" for key, value in values.items())
        label = f"{cli_name(name)}:{settings}" if values else cli_name(name)
        candidates[label] = learner
    return candidates


def _compare(args: argparse.Namespace) -> int:
    from diml_inverse.comparison import compare_learners
    from mechgym.traces import load_traces

    config = dataclass_from_args(FitConfig, args, progress=False)
    traces = load_traces(args.traces, env_id=args.env)
    candidates = _candidates(args.candidate, traces)
    skipped = ("learn_alpha", "learn_epsilon", "progress", "seed")  # set below; --seed seeds folds and fits
    options = {k: v for k, v in config.to_dict().items() if k not in skipped}
    options["model"] = config.model
    comparison = compare_learners(
        args.env,
        traces,
        candidates,
        progress=not args.quiet,
        folds=args.folds,
        seed=config.seed,
        learn_alpha=not args.fixed_rates,
        learn_epsilon=not args.fixed_rates,
        **options,
    )
    if args.json:
        print(json.dumps({"best": comparison.best, "decisive": comparison.decisive, "table": comparison.table}))
    else:
        print(comparison)
    return 0


def _report(args: argparse.Namespace) -> int:
    import importlib

    from diml_inverse.result import load
    from mechgym.traces import load_traces

    output = check_output_path(args.out, inputs=[args.fit, args.traces], overwrite=args.overwrite)
    result = load(args.fit)
    traces = load_traces(args.traces, env_id=result.env_id)
    test = None if args.test_traces is None else load_traces(args.test_traces, env_id=result.env_id)
    if args.test_fraction:
        if test is not None:
            raise ConfigurationError("give held-out episodes with --test-traces or --test-fraction, not both")
        traces, test = traces.split(1.0 - args.test_fraction)
    bootstrap = None
    if args.bootstrap is not None:
        try:  # the bootstrap of issue 13 (diml_inverse.bootstrap), looked up when asked for
            uncertainty = importlib.import_module("diml_inverse.uncertainty")
        except ImportError:
            raise ConfigurationError("--bootstrap needs diml_inverse.bootstrap, which this version lacks") from None
        bootstrap = uncertainty.load_bootstrap(args.bootstrap)
    path = result.report(output, test, bootstrap, traces=traces, overwrite=args.overwrite, level=args.level)
    print(f"wrote {path}")
    return 0


def _add_compare_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``diml compare``: which learning model generated a trace file."""

    compare = add_command(
        commands,
        "compare",
        help="which learning model generated a trace file",
        description="Fit the mechanism once per candidate learning model and cross-validation fold, score every "
        "episode's held-out NLL and print each candidate's NLL, its paired difference to the best with a standard "
        "error over episodes, and whether it is significant (diml_inverse.compare_learners, docs/reports.md).",
    )
    compare.add_argument("traces", type=Path, help="a .parquet or .npz file from `mechgym record`")
    compare.add_argument("--env", default=None, help="environment id (default: the one recorded in the traces)")
    compare.add_argument(
        "--candidate",
        type=_candidate,
        action="append",
        metavar="NAME[:PARAM=VALUE,...]",
        help="a candidate learner, repeatable, e.g. --candidate logit-q --candidate hedge:eta=0.1 (default: every "
        "built-in rule; the one the traces record at its recorded parameters)",
    )
    compare.add_argument("--folds", type=int, default=5, help="cross-validation folds over episodes")
    compare.add_argument("--fixed-rates", action="store_true", help="keep alpha and epsilon instead of learning them")
    add_dataclass_arguments(compare, FitConfig, title="fit options", description="The options of every fit.")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")
    compare.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    compare.set_defaults(run=_compare)


def _add_report_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``diml report``: one HTML page about a fit."""
    report = add_command(
        commands,
        "report",
        help="write an HTML report of a fit",
        description="One HTML page with embedded PNG figures: learning curves, calibration by round, the support "
        "of the training traces, payoff differences with bootstrap intervals (docs/reports.md).",
    )
    report.add_argument("fit", type=Path, help="a file from `diml fit`")
    report.add_argument("--traces", type=Path, required=True, help="the traces the fit was trained on")
    report.add_argument("--test-traces", type=Path, default=None, help="held-out traces (for calibration)")
    report.add_argument("--test-fraction", type=float, default=0.0, help="hold out the last share of --traces")
    report.add_argument("--bootstrap", type=Path, default=None, help="a bootstrap of the fit (BootstrapResult.save)")
    report.add_argument("--level", type=float, default=0.9, help="nominal level of the bootstrap intervals")
    report.add_argument("--out", type=Path, required=True, help="the .html page to write")
    report.add_argument("--overwrite", "--force", action="store_true", help="replace the page if it exists")
    report.set_defaults(run=_report)


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
    fit.add_argument(
        "--threads",
        type=parse_threads,
        default=None,
        help="torch CPU threads: a count or auto (default: $MECHGYM_THREADS, else auto: 1 for small problems and on a "
        "loaded machine)",
    )
    inversion = fit.add_argument_group(
        "equilibrium inversion (--method qre|nash; docs/equilibrium.md)",
        "Treat the last rounds of each episode as equilibrium play and fit --model (default: structured) by "
        "inverse logit QRE or inverse Nash instead of through the learning rule.",
    )
    inversion.add_argument(
        "--method",
        choices=["dynamics", "qre", "nash"],
        default="dynamics",
        help="dynamics: DIML through the learning rule; qre: inverse logit QRE; nash: inverse Nash",
    )
    inversion.add_argument(
        "--last-rounds", type=int, default=None, help="rounds read at the end of each episode (default: the last third)"
    )
    inversion.add_argument("--pooled", action="store_true", help="pool the episodes into one profile")
    inversion.add_argument("--lam", type=float, default=None, help="QRE precision (default: the learner's beta)")
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
    _add_compare_command(commands)
    _add_report_command(commands)
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
