"""The ``mechgym`` command line: list environments, record traces, inspect trace files.

Examples::

    mechgym list
    mechgym list --markdown          # the built-in games' table of docs/environments.md
    mechgym record mechgym/Congestion-v0 --episodes 48 --rounds 60 --seed 0 -o traces.parquet
    mechgym record mechgym/Congestion-v0 --learner hedge --eta 0.1 -o hedge.parquet
    mechgym record mechgym/Congestion-v0 --learner ppo --shared --sb3-kwarg n_steps=32 -o ppo.parquet
    mechgym info traces.parquet
    mechgym record mechgym/Congestion-v0 --episodes 96 -o traces.parquet --overwrite   # replace an existing file
    mechgym --version

Every option's default is in ``mechgym COMMAND --help``. Failures print one line on stderr (``-v`` adds the
traceback of an unexpected error); see :func:`main` for the exit statuses.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechgym.cli_support import (
    HelpFormatter,
    add_command,
    add_learner_arguments,
    add_version_and_verbose,
    check_output_path,
    cli_name,
    given_learner_options,
    learner_from_args,
    parse_args,
    run_command,
)
from mechgym.errors import ConfigurationError
from mechgym.learners import Learner
from mechgym.memory import format_bytes
from mechgym.threads import parse_threads

#: ``--learner`` values trained with Stable-Baselines3 (the others are mechgym learning rules, simulated).
SB3_LEARNERS = ("ppo", "a2c", "dqn")


def _parse_env_kwarg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (``3``, ``0.5``, ``true``, ``[1,2]``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _format_learner(learner: dict[str, Any] | None) -> str:
    if not learner:
        return "unknown"
    params = ", ".join(f"{key}={value}" for key, value in (learner.get("params") or {}).items())
    return f"{learner.get('name', '?')}({params})"


# -- commands ----------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    if args.markdown:
        from mechgym.envs import markdown_table

        print(markdown_table(), end="")
        return 0
    from mechgym.registration import pprint_registry

    pprint_registry(table=True)
    return 0


def _cli_learner(args: argparse.Namespace, default: Learner) -> Learner:
    """The learning rule of ``--learner`` (the environment's default without it) with the options given."""
    learner = learner_from_args(args, default, f"the default learner of {args.env_id}")
    assert learner is not None  # a default was given
    return learner


def _train_sb3(args: argparse.Namespace, env: Any) -> Any:
    """Train ``--learner ppo|a2c|dqn`` agents on ``env`` and return their traces."""
    from mechgym.devices import resolve_device

    given = [f"--{cli_name(name)}" for name in given_learner_options(args)]
    if given:
        raise ConfigurationError(
            f"{', '.join(given)} set mechgym learning rules; give {args.learner} hyperparameters as "
            "--sb3-kwarg KEY=VALUE (e.g. --sb3-kwarg learning_rate=0.001)"
        )
    try:
        from mechgym.integrations.sb3 import train_sb3
    except ImportError as error:
        raise ConfigurationError(str(error)) from None
    agents = train_sb3(
        env,
        args.learner,
        n_episodes=args.episodes,
        seed=args.seed,
        shared=args.shared,
        hyperparameters=dict(args.sb3_kwarg),
        device=str(resolve_device(args.device)),
        progress=not args.quiet,
    )
    return agents.traces


def _record(args: argparse.Namespace) -> int:
    from mechgym.registration import make
    from mechgym.rollout import rollout

    output = Path(args.output)
    if output.suffix.lower() not in (".parquet", ".npz"):
        raise ConfigurationError(f"--output must end in .parquet or .npz; got {str(output)!r}")
    check_output_path(output, overwrite=args.overwrite)  # before the (maybe long) simulation or training
    env = make(args.env_id, **dict(args.env_kwarg))
    if args.rounds is not None and args.rounds != env.n_rounds:
        if args.rounds < 1:
            raise ConfigurationError(f"--rounds must be at least 1; got {args.rounds}")
        env = env.with_n_rounds(args.rounds)  # keeps env_kwargs["n_rounds"] in the metadata truthful
    start = time.perf_counter()
    if args.learner in SB3_LEARNERS:
        traces = _train_sb3(args, env)
        sb3 = traces.metadata.extra["sb3"]
        played_by = f"{sb3['mode']} {args.learner.upper()} agents (Stable-Baselines3)"
    else:
        if args.shared or args.sb3_kwarg:
            raise ConfigurationError(f"--shared and --sb3-kwarg apply to --learner {'|'.join(SB3_LEARNERS)} only")
        traces = rollout(
            env,
            _cli_learner(args, env.default_learner),
            n_episodes=args.episodes,
            seed=args.seed,
            device=args.device,
            progress=not args.quiet,
            threads=args.threads,
        )
        played_by = _format_learner(traces.metadata.learner)
    output.parent.mkdir(parents=True, exist_ok=True)
    traces.save(output)
    elapsed = time.perf_counter() - start
    print(
        f"recorded {traces.n_episodes} episodes x {traces.n_rounds} rounds x {traces.n_agents} agents "
        f"(A={traces.n_actions}) of {args.env_id} by {played_by}, seed {args.seed} "
        f"-> {output} ({format_bytes(output.stat().st_size)}, {elapsed:.1f} s)"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from mechgym.traces.io import load_traces

    path = Path(args.path)
    traces = load_traces(path)
    meta = traces.metadata
    if args.json:
        summary = {
            "path": str(path),
            "n_episodes": traces.n_episodes,
            "n_rounds": traces.n_rounds,
            "rewards": traces.rewards is not None,
            "metadata": meta.to_dict(),
        }
        print(json.dumps(summary, indent=2))
        return 0
    kind = "npz" if path.suffix.lower() == ".npz" else "Parquet"
    lines = [
        f"{path} ({kind}, {format_bytes(path.stat().st_size)})",
        f"  episodes  {traces.n_episodes}",
        f"  rounds    {traces.n_rounds}",
        f"  agents    {traces.n_agents}",
        f"  actions   {traces.n_actions}",
        f"  rewards   {'yes' if traces.rewards is not None else 'no'}",
        f"  env       {meta.env_id or 'unregistered'}" + (f" {json.dumps(meta.env_kwargs)}" if meta.env_kwargs else ""),
        f"  learner   {_format_learner(meta.learner)}",
        f"  seed      {meta.seed}",
        f"  written   by mechgym {meta.package_version}, schema version {meta.schema_version}",
    ]
    if meta.extra:
        lines.append(f"  extra     {json.dumps(meta.extra)}")
    print("\n".join(lines))
    return 0


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mechgym``."""
    parser = argparse.ArgumentParser(
        prog="mechgym",
        description="Repeated mechanism games played by learning agents.",
        formatter_class=HelpFormatter,
    )
    add_version_and_verbose(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    listing = add_command(
        commands, "list", help="list the registered environments", description="List the registered environments."
    )
    listing.add_argument(
        "--markdown",
        action="store_true",
        help="print the built-in games' table of docs/environments.md instead (mechgym.envs.markdown_table)",
    )
    listing.set_defaults(run=_list)

    record = add_command(
        commands,
        "record",
        help="record learners playing an environment to a trace file",
        description="Simulate learners playing ENV_ID (vectorised), or train Stable-Baselines3 agents on it "
        "(--learner ppo|a2c|dqn, every joint action of training recorded), and save the traces (.parquet or .npz).",
    )
    record.add_argument(
        "env_id", metavar="ENV_ID", help="registered id, e.g. mechgym/Congestion-v0 (see `mechgym list`)"
    )
    record.add_argument("--episodes", type=int, default=48, help="number of episodes E")
    record.add_argument("--rounds", type=int, default=None, help="rounds T per episode (default: the environment's)")
    record.add_argument("--seed", type=int, default=0, help="seed of the action draws")
    add_learner_arguments(
        record,
        extra=SB3_LEARNERS,
        learner_help="learning rule of every agent; ppo, a2c and dqn train Stable-Baselines3 agents for --episodes "
        "episodes (pip install '.[sb3]')",
        default_learner="the environment's default learner",
    )
    record.add_argument(
        "--shared", action="store_true", help="ppo/a2c/dqn: one parameter-shared model, not one per agent"
    )
    record.add_argument(
        "--sb3-kwarg",
        metavar="KEY=VALUE",
        type=_parse_env_kwarg,
        action="append",
        default=[],
        help="ppo/a2c/dqn: Stable-Baselines3 constructor argument (VALUE read as JSON if it parses); repeatable "
        "(default: mechgym.integrations.sb3.DEFAULT_HYPERPARAMETERS)",
    )
    record.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    record.add_argument(
        "--threads",
        type=parse_threads,
        default=None,
        help="torch CPU threads: a count or auto (default: $MECHGYM_THREADS, else auto: 1 for small games and on a "
        "loaded machine); the traces do not depend on it",
    )
    record.add_argument(
        "--env-kwarg",
        metavar="KEY=VALUE",
        type=_parse_env_kwarg,
        action="append",
        default=[],
        help="keyword argument of the environment (VALUE read as JSON if it parses); repeatable "
        "(default: the registered ones)",
    )
    record.add_argument("-o", "--output", required=True, help="output file, .parquet or .npz (required)")
    record.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    record.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    record.set_defaults(run=_record)

    info = add_command(
        commands,
        "info",
        help="summarise a trace file",
        description="Validate a trace file and print its summary and metadata.",
    )
    info.add_argument("path", metavar="PATH", help="a .parquet or .npz trace file")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mechgym`` command line.

    Args:
        argv: Arguments without the program name (``None`` reads ``sys.argv``).

    Returns:
        The exit status: 0 on success; 2 on bad input (a :class:`~mechgym.errors.MechGymError`, a usage error,
        an output path that exists or cannot be written) or when the operating system refuses a read or write,
        with one line on stderr; 130 after Ctrl-C; 1 after an unexpected error (a bug: ``-v`` prints its
        traceback) or when the reader of stdout goes away (``mechgym list | head -1``).
    """
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    return run_command("mechgym", args, args.run)
