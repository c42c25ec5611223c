"""``python -m diml_inverse.experiments``: run the paper's experiments E1–E4 and build their reports.

Examples::

    python -m diml_inverse.experiments run e1 --seeds 0 1 2 --out runs/experiments
    python -m diml_inverse.experiments run e4 --seeds 0 --cf-every 10 --out runs/experiments
    python -m diml_inverse.experiments run all --smoke --out /tmp/smoke
    python -m diml_inverse.experiments report runs/experiments --figures-dir docs/figures
    python -m diml_inverse.experiments misspec --seeds 0 1 2 --out runs/experiments --figures-dir docs/figures
    python -m diml_inverse.experiments zoo --seeds 0 1 2 --out runs/zoo --threads 1
    python -m diml_inverse.experiments calibration --seeds 0 1 2 --out runs/calibration --threads 1
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechgym.cli_support import json_object
from mechgym.devices import keep_freed_memory
from mechgym.errors import MechGymError

if TYPE_CHECKING:
    from diml_inverse.sweep import SweepOptions

EXIT_USAGE = 2


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """--engine, --address, --workers, --resume: where the study's tasks run (see docs/sweeps.md)."""
    group = parser.add_argument_group("sweep (the results do not depend on these; see docs/sweeps.md)")
    group.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="'local' (this machine) or 'ray' (the .[ray] extra)"
    )
    group.add_argument("--address", default=None, help="Ray: the cluster to join ('auto', HOST:PORT); default: new")
    group.add_argument(
        "--workers", type=int, default=None, help="tasks at once (local: processes, default 1; ray: default all CPUs)"
    )
    group.add_argument("--resume", action="store_true", help="skip the tasks an interrupted run of OUT finished")


def _sweep_options(args: argparse.Namespace) -> SweepOptions:
    from diml_inverse.sweep import SweepOptions

    threads = 1 if args.threads is None else args.threads
    return SweepOptions(args.engine, args.workers, args.address, threads_per_task=threads, resume=args.resume)


def _add_calibration_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``calibration`` subcommand's options."""
    calibration = commands.add_parser(
        "calibration",
        help="coverage of nominal 90 %% intervals (bootstrap, standard errors, posterior) on E1-E3 and zoo games",
    )
    calibration.add_argument("--out", type=Path, required=True, help="output directory (OUT/calibration/...)")
    calibration.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (seed s: truth s)")
    calibration.add_argument("--games", nargs="+", default=None, help="games: E1 E2 E3 or zoo names (default: 8)")
    calibration.add_argument("--replicates", type=int, default=None, help="bootstrap refits (default 20)")
    calibration.add_argument("--epochs", type=int, default=None, help="epochs of the bootstrapped fit (default 40)")
    calibration.add_argument("--model", default=None, help="model of the bootstrapped fit (default neural)")
    calibration.add_argument(
        "--bootstrap-mle", action="store_true", help="bootstrap the tabular MLE (the standard errors' fit) instead"
    )
    calibration.add_argument("--no-se", action="store_true", help="skip the tabular MLE's standard errors")
    calibration.add_argument(
        "--no-posterior", action="store_true", help="skip the interaction fit's posterior intervals"
    )
    calibration.add_argument("--no-bootstrap", action="store_true", help="skip the bootstrap")
    calibration.add_argument("--resume", action="store_true", help="keep the results already under --out")
    calibration.add_argument("--smoke", action="store_true", help="tiny sizes: proves the pipeline only")
    calibration.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    calibration.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_equilibrium_commands(commands: Any) -> None:
    """The ``goktas`` and ``equilibrium`` subcommands (docs/equilibrium.md)."""
    goktas = commands.add_parser(
        "goktas", help="Goktas et al.'s inverse-game table (Cournot, Bertrand, Fisher) reproduced and beaten"
    )
    goktas.add_argument("--out", type=Path, default=None, help="write OUT/goktas/table.{md,json} (default: print only)")
    goktas.add_argument("--seed", type=int, default=0, help="seed of the market draws")
    goktas.add_argument("--games", nargs="+", default=None, help="cournot bertrand fisher-linear fisher-cobb-douglas")
    goktas.add_argument("--iterations", type=int, default=None, help="override every row's iterations (quick check)")
    goktas.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    equilibrium = commands.add_parser(
        "equilibrium", help="DIML against inverse QRE and inverse Nash on the E1-E3 traces (same diff_mse)"
    )
    equilibrium.add_argument("--out", type=Path, default=None, help="write OUT/equilibrium/table.{md,json}")
    equilibrium.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (seed s: truth s)")
    equilibrium.add_argument("--games", nargs="+", default=["e1", "e2", "e3"], help="e1 e2 e3")
    equilibrium.add_argument("--epochs", type=int, default=None, help="DIML epochs (default: the experiment's)")
    equilibrium.add_argument("--smoke", action="store_true", help="tiny sizes: proves the pipeline only")
    equilibrium.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _parser() -> argparse.ArgumentParser:
    from diml_inverse.experiments.configs import EXPERIMENT_NAMES

    parser = argparse.ArgumentParser(
        prog="python -m diml_inverse.experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="record data, fit every method, evaluate every epoch, write the report")
    run.add_argument("experiment", choices=[*EXPERIMENT_NAMES, "all"], help="which experiment (or all four)")
    run.add_argument("--out", type=Path, required=True, help="output directory (OUT/<experiment>/seed<s>/...)")
    run.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="run seeds; seed s builds truth s and derives the data, fit and evaluation seeds from s",
    )
    run.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu' or 'cuda'")
    run.add_argument("--smoke", action="store_true", help="tiny sizes and 3 epochs: proves the pipeline, not the paper")
    run.add_argument("--epochs", type=int, default=None, help="override the published number of epochs")
    run.add_argument(
        "--cf-every",
        type=int,
        default=None,
        help="cfkl_params every K epochs and at the last (diff_mse and NLL stay per-epoch); "
        "default 1 for E1-E3 and 10 for E4",
    )
    run.add_argument(
        "--congestion-pricing",
        choices=["subsidy", "toll"],
        default=None,
        help="E2's pricing sign: 'subsidy' (+tau*load, the published code's; default) or 'toll'",
    )
    run.add_argument("--scales", nargs="+", default=None, help="E4 only: scales to run, e.g. n40 n80")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads of each task (default 1)")
    run.add_argument("--figures-dir", type=Path, default=None, help="also copy each figure here")
    run.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's malloc settings alone (by default freed memory is kept for reuse: faster E4)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    misspec = commands.add_parser(
        "misspec", help="fit logit-Q DIML to traces of other learners (Hedge, bandit Q, smooth FP, PPO, A2C, DQN)"
    )
    misspec.add_argument("--out", type=Path, required=True, help="output directory (OUT/misspec/...)")
    misspec.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (seed s: truth s)")
    misspec.add_argument("--games", nargs="+", default=None, help="games: e1 e2 e3 (default: all three)")
    misspec.add_argument("--generators", nargs="+", default=None, help="data generators (default: all)")
    misspec.add_argument("--epochs", type=int, default=None, help="override the 200 epochs of every fit")
    misspec.add_argument("--smoke", action="store_true", help="tiny sizes and 3 epochs: proves the pipeline only")
    misspec.add_argument("--threads", type=int, default=None, help="torch CPU threads of each task (default 1)")
    misspec.add_argument("--figures-dir", type=Path, default=None, help="also copy the figure here")
    misspec.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    zoo = commands.add_parser(
        "zoo", help="the recovery zoo: fit the default DIML to games that are not the paper's, score each one"
    )
    zoo.add_argument("--out", type=Path, required=True, help="output directory (OUT/zoo/...)")
    zoo.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (seed s: truth s)")
    zoo.add_argument(
        "--games", nargs="+", default=None, help="games by name, or the paper's E1 E2 E3 (default: every zoo game)"
    )
    zoo.add_argument(
        "--episodes",
        type=int,
        nargs="+",
        default=None,
        help="the data-needs study instead: fit the first E training episodes for each E, one fixed test set",
    )
    zoo.add_argument(
        "--fit-options",
        type=json_object,
        default=None,
        help='FitConfig fields as a JSON object: an alternative estimator, e.g. \'{"model": "neural"}\'',
    )
    zoo.add_argument("--epochs", type=int, default=None, help="override the default fit's epochs")
    zoo.add_argument("--smoke", action="store_true", help="tiny sizes and 2 epochs: proves the pipeline only")
    zoo.add_argument("--threads", type=int, default=None, help="torch CPU threads of each task (default 1)")
    zoo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    for command in (run, misspec, zoo):
        _add_sweep_arguments(command)
    _add_calibration_parser(commands)
    _add_equilibrium_commands(commands)
    report = commands.add_parser("report", help="merge the seeds under OUT into tables and figures")
    report.add_argument("out", type=Path, help="the --out directory of earlier runs")
    report.add_argument("experiments", nargs="*", default=None, help="which ones (default: every one found)")
    report.add_argument("--figures-dir", type=Path, default=None, help="also copy each figure here")
    return parser


def _report(out: Path, names: Sequence[str], figures_dir: Path | None) -> None:
    from diml_inverse.experiments.report import build_report

    for name in names:
        paths = build_report(out, name, figures_dir=figures_dir)
        print(paths["markdown"].read_text())
        print("wrote " + ", ".join(str(p) for p in paths.values()))


def _run(args: argparse.Namespace) -> int:
    import torch

    from diml_inverse.experiments.configs import EXPERIMENT_NAMES, experiment_config
    from diml_inverse.experiments.runner import run_experiment

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not args.system_malloc:
        logging.getLogger(__name__).info("malloc keeps freed memory: %s", keep_freed_memory())
    names = list(EXPERIMENT_NAMES) if args.experiment == "all" else [args.experiment]
    if args.scales and names != ["e4"]:
        raise MechGymError("--scales applies to e4 only")
    for name in names:
        config = experiment_config(
            name,
            smoke=args.smoke,
            epochs=args.epochs,
            cf_every=args.cf_every,
            congestion_pricing=args.congestion_pricing if name == "e2" else None,
            scales=args.scales if name == "e4" else None,
        )
        walls = run_experiment(
            config, args.seeds, args.out, device=args.device, progress=not args.quiet, sweep=_sweep_options(args)
        )
        for seed, seconds in walls.items():
            print(f"{name} seed {seed}: {seconds:.1f} s ({torch.get_num_threads()} torch threads)")
    _report(args.out, names, args.figures_dir)
    return 0


def _misspec(args: argparse.Namespace) -> int:
    import torch

    from diml_inverse.experiments.misspec import build_misspec_report, misspec_config, run_misspec

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = misspec_config(games=args.games, generators=args.generators, epochs=args.epochs, smoke=args.smoke)
    walls = run_misspec(config, args.seeds, args.out, progress=not args.quiet, sweep=_sweep_options(args))
    for seed, seconds in walls.items():
        print(f"misspec seed {seed}: {seconds:.1f} s ({torch.get_num_threads()} torch threads)")
    paths = build_misspec_report(args.out, figures_dir=args.figures_dir)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _zoo(args: argparse.Namespace) -> int:
    import time

    import torch

    from diml_inverse.experiments.zoo import build_zoo_report, run_zoo, zoo_config

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = zoo_config(games=args.games, epochs=args.epochs, smoke=args.smoke, fit_options=args.fit_options)
    if args.episodes is not None:
        from diml_inverse.experiments.zoo.data_needs import run_data_needs

        paths = run_data_needs(
            config, args.seeds, args.episodes, args.out, progress=not args.quiet, sweep=_sweep_options(args)
        )
        print(paths["markdown"].read_text())
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        return 0
    started = time.perf_counter()
    walls = run_zoo(config, args.seeds, args.out, progress=not args.quiet, sweep=_sweep_options(args))
    for seed, seconds in walls.items():
        print(f"zoo seed {seed}: {seconds:.1f} s ({torch.get_num_threads()} torch threads)")
    paths = build_zoo_report(args.out, seeds=args.seeds)
    print(paths["markdown"].read_text())
    print(f"total {time.perf_counter() - started:.1f} s; wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _calibration(args: argparse.Namespace) -> int:
    import time

    import torch

    from diml_inverse.experiments.calibration import build_calibration_report, calibration_config, run_calibration

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = calibration_config(
        games=args.games,
        n_replicates=args.replicates,
        epochs=args.epochs,
        model=args.model,
        bootstrap_mle=args.bootstrap_mle,
        standard_errors=not args.no_se,
        posterior=not args.no_posterior,
        bootstrap=not args.no_bootstrap,
        smoke=args.smoke,
    )
    started = time.perf_counter()
    walls = run_calibration(config, args.seeds, args.out, progress=not args.quiet, resume=args.resume)
    for seed, seconds in walls.items():
        print(f"calibration seed {seed}: {seconds:.1f} s ({torch.get_num_threads()} torch threads)")
    paths = build_calibration_report(args.out, seeds=args.seeds)
    print(paths["markdown"].read_text())
    print(f"total {time.perf_counter() - started:.1f} s; wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _goktas(args: argparse.Namespace) -> int:
    import torch

    from diml_inverse.experiments.goktas import format_goktas_table, run_goktas

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = run_goktas(args.out, seed=args.seed, rows=args.games, iterations=args.iterations)
    print(format_goktas_table(rows))
    print(f"({torch.get_num_threads()} torch threads)" + (f"; wrote {args.out / 'goktas'}" if args.out else ""))
    return 0


def _equilibrium(args: argparse.Namespace) -> int:
    import torch

    from diml_inverse.experiments.equilibrium_vs_diml import format_comparison_table, run_comparison

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = run_comparison(args.games, args.seeds, epochs=args.epochs, smoke=args.smoke, out=args.out)
    print(format_comparison_table(rows))
    print(f"({torch.get_num_threads()} torch threads)" + (f"; wrote {args.out / 'equilibrium'}" if args.out else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "misspec":
            return _misspec(args)
        if args.command == "zoo":
            return _zoo(args)
        if args.command == "goktas":
            return _goktas(args)
        if args.command == "equilibrium":
            return _equilibrium(args)
        if args.command == "calibration":
            return _calibration(args)
        from diml_inverse.experiments.configs import EXPERIMENT_NAMES

        names = args.experiments or [n for n in EXPERIMENT_NAMES if (args.out / n).is_dir()]
        _report(args.out, names, args.figures_dir)
        return 0
    except MechGymError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
