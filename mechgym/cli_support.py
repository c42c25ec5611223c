"""Plumbing shared by the ``mechgym`` and ``diml`` command lines.

Help that shows every default, ``--version``, learning rules from ``--learner NAME`` and its parameter options,
output paths checked before any work is done, and :func:`run_command`, which turns every failure into one
line on stderr and an exit status (a traceback only with ``-v``), keeps ``-v`` logging from tearing the
progress bars and exits quietly when the reader of stdout goes away (``mechgym list | head -1``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import logging
import os
import sys
import textwrap
import traceback
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from mechgym.errors import ConfigurationError, MechGymError, suggest
from mechgym.learners import LEARNERS, Learner

T = TypeVar("T")

#: Exit status of a command that failed on something other than bad input (an unexpected error, a broken pipe).
EXIT_FAILURE = 1
#: Exit status for bad input (unknown id, malformed file, bad option, unwritable path), as argparse's usage errors.
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Loggers whose INFO (``-v``) and DEBUG (``-vv``) messages the command lines show.
PACKAGE_LOGGERS = ("mechgym", "diml_inverse")


# -- help and version --------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that ends every option's line with its default, unless the help text already says it.

    Write the default into the help text (``"(default: the environment's)"``) where the value alone says
    nothing (``None``, ``[]``); a required option has none.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.required:  # e.g. "(default: the environment's)" where the default is None
            return text
        return super()._get_help_string(action)


def package_version() -> str:
    """The installed version of the ``mechgym`` distribution (which ships ``diml_inverse`` too)."""
    try:
        return metadata.version("mechgym")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        from mechgym import __version__

        return f"{__version__} (not installed)"


def add_version_and_verbose(parser: argparse.ArgumentParser) -> None:
    """Add ``--version`` and ``-v/--verbose`` to a program's top-level parser."""
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version()}", help="print the version and exit"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log progress messages (-vv: debug messages) and print the traceback of an unexpected error "
        "(default: off)",
    )


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *, help: str, description: str
) -> argparse.ArgumentParser:
    """A sub-command parser with :class:`HelpFormatter` that also accepts ``-v`` after the command name."""
    parser = commands.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,  # keep a -v given before the command name
        help="log progress messages (-vv: debug messages) and print the traceback of an unexpected error "
        "(default: off)",
    )
    return parser


# -- learning rules from the command line ------------------------------------------------------
def cli_name(name: str) -> str:
    """The command-line spelling of a learner name: ``logit_q`` -> ``logit-q``."""
    return name.replace("_", "-")


def learner_name_type(extra: Sequence[str] = ()) -> Callable[[str], str]:
    """An argparse ``type`` for ``--learner``: the registry name (``logit_q``) or one of ``extra`` as given.

    Unknown names are usage errors with a did-you-mean hint (:func:`mechgym.errors.suggest`).
    """

    def learner_name(text: str) -> str:
        key = text.strip().lower()
        if key in extra:
            return key
        if key.replace("-", "_") in LEARNERS:
            return key.replace("-", "_")
        known = [*(cli_name(name) for name in LEARNERS), *extra]
        raise argparse.ArgumentTypeError(f"invalid choice: {suggest(text, known, 'learner')}")

    return learner_name


def _documented_arguments(cls: type) -> dict[str, str]:
    """``{name: first sentence}`` of the ``Args:`` section of a Google-style class docstring."""
    documented: dict[str, str] = {}
    name: str | None = None
    in_args = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        stripped = line.strip()
        if not in_args:
            in_args = stripped == "Args:"
            continue
        if line and not line.startswith(" "):  # the next section
            break
        entry, sep, text = stripped.partition(":")
        if line.startswith("    ") and not line.startswith("     ") and sep and entry.isidentifier():
            name = entry
            documented[name] = text.strip()
        elif name is not None and stripped:
            documented[name] += " " + stripped
    return {key: value.replace("``", "").split(". ")[0].rstrip(".") + "." for key, value in documented.items()}


def _learner_parameters() -> dict[str, dict[str, float]]:
    """``{parameter: {learner cli name: default}}`` over the numeric fields of every registered learner."""
    parameters: dict[str, dict[str, float]] = {}
    for name in sorted(LEARNERS):
        for field in dataclasses.fields(LEARNERS[name]):  # type: ignore[arg-type]
            default = field.default
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                parameters.setdefault(field.name, {})[cli_name(name)] = float(default)
    return parameters


def add_learner_arguments(
    parser: argparse.ArgumentParser, *, extra: Sequence[str] = (), learner_help: str, default_learner: str
) -> None:
    """Add ``--learner NAME`` and one option per learner hyperparameter (``--alpha``, ``--eta``, ...).

    The options are the numeric fields of the registered learner dataclasses, with their docstrings as help,
    so a newly registered learner brings its own options. :func:`learner_from_args` reads them back.

    Args:
        parser: The sub-command parser.
        extra: ``--learner`` values that are not mechgym learning rules (e.g. ``ppo``), passed through as given.
        learner_help: What ``--learner`` selects (the line of ``--help``).
        default_learner: What is used without ``--learner`` (e.g. ``"the env's default learner"``).
    """
    names = [*(cli_name(name) for name in sorted(LEARNERS)), *extra]
    group = parser.add_argument_group(
        "learning rule",
        "A parameter option applies to the rules named in its help. Parameters not given keep the values of "
        f"{default_learner} if it is the same rule, else the rule's own defaults.",
    )
    group.add_argument(
        "--learner",
        metavar="{" + ",".join(names) + "}",
        type=learner_name_type(extra),
        default=None,
        help=f"{learner_help} (default: {default_learner})",
    )
    added: list[str] = []
    for parameter, defaults in _learner_parameters().items():
        sentences = [_documented_arguments(LEARNERS[n.replace("-", "_")]).get(parameter) for n in defaults]
        described = min((s for s in sentences if s), key=len, default=f"The {parameter} hyperparameter.")
        values = ", ".join(f"{learner} {value:g}" for learner, value in defaults.items())
        try:
            group.add_argument(
                f"--{cli_name(parameter)}",
                type=float,
                default=None,
                help=f"{described} For {', '.join(defaults)} (default: the learner's value; the rules' own: {values})",
            )
        except argparse.ArgumentError:  # a third-party learner field named like another option: not settable here
            continue
        added.append(parameter)
    parser.set_defaults(learner_parameters=tuple(added))


def given_learner_options(args: argparse.Namespace) -> dict[str, float]:
    """The learner hyperparameters given on the command line (``{"alpha": 0.5}`` for ``--alpha 0.5``)."""
    names: Sequence[str] = getattr(args, "learner_parameters", ())
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def learner_from_args(args: argparse.Namespace, default: Learner | None, which_default: str) -> Learner | None:
    """The learning rule of ``--learner`` (``default`` without it) with the parameter options applied.

    Args:
        args: Parsed arguments of a parser set up by :func:`add_learner_arguments`.
        default: The learner without ``--learner`` (the environment's, the traces' recorded one), or ``None``.
        which_default: How an error names ``default`` (e.g. ``"the default learner of mechgym/Congestion-v0"``).

    Returns:
        The learner, or ``None`` when neither ``--learner`` nor a default is there (and no parameter is given).

    Raises:
        ConfigurationError: a parameter the learner does not have, a value it rejects, or parameters without
            any learner to apply them to.
    """
    changes = given_learner_options(args)
    options = ", ".join(f"--{cli_name(name)}" for name in sorted(changes))
    if args.learner is None:
        if default is None:
            if changes:
                raise ConfigurationError(
                    f"{options} set a learning rule's parameters but there is no learner to apply them to "
                    f"({which_default}); name one with --learner, e.g. --learner logit-q"
                )
            return None
        learner, which = default, f"{which_default} ({default.name})"
    else:
        cls = LEARNERS[args.learner]
        learner, which = (default if type(default) is cls else cls()), f"the {cls.name} learner"
    if not changes:
        return learner
    try:
        return learner.replace(**changes)
    except TypeError:
        accepted = ", ".join(f"--{cli_name(name)}" for name in sorted(learner.params()))
        raise ConfigurationError(
            f"{which} has no parameter among {options}; its parameters are {accepted}. "
            "Drop the others or choose another learner with --learner"
        ) from None


# -- options from a dataclass ------------------------------------------------------------------
def field_docstrings(cls: type) -> dict[str, str]:
    """The docstring of every field of the dataclass ``cls``: the string literal right after the field.

    That is how CleanRL's ``Args`` documents its fields; the literals are read from the class's source with
    :mod:`ast` (they are not kept at run time).
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
    documented: dict[str, str] = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            documented[statement.target.id] = inspect.cleandoc(following.value.value)
    return documented


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, or ``None`` for ``none`` (an option whose default is a value and that ``None`` turns off)."""

    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")  # argparse names it in "invalid int value"
    return parse_optional


def json_object(text: str) -> dict[str, Any]:
    """An argparse ``type``: a JSON object (``'{"hidden": 64}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"hidden\": 64}}'; got {text!r}")
    return value


def _argument_options(name: str, hint: Any, default: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords of a field of type ``hint`` (see :func:`add_dataclass_arguments`)."""
    members = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    optional = type(None) in members
    members = tuple(member for member in members if member is not type(None))
    if members == (bool,):
        return {"action": argparse.BooleanOptionalAction if default else "store_true"}
    choices = [value for member in members if get_origin(member) is Literal for value in get_args(member)]
    plain = [member for member in members if get_origin(member) is not Literal]
    options: dict[str, Any]
    if str in plain or (choices and all(isinstance(value, str) for value in choices)):
        options = {"type": str} if str in plain else {"type": str, "choices": choices}
    elif int in plain or float in plain:
        options = {"type": int if int in plain else float}
    elif any(member is dict or get_origin(member) in (dict, Mapping) for member in plain):
        options = {"type": json_object, "metavar": "JSON"}
    elif any(get_origin(member) is tuple and get_args(member)[0] is str for member in plain):
        return {"type": str, "nargs": "+", "metavar": "NAME"}  # a list of names
    else:
        raise TypeError(f"no command-line type for the field {name!r} of type {hint!r}")
    if optional and default is not None:
        options["type"] = _optional(options["type"])
    return options


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, title: str, description: str | None = None
) -> tuple[str, ...]:
    """Add one option per field of the dataclass ``cls``, in a group: ``--field-name``, its default, its help.

    The help is the first paragraph of the field's docstring (:func:`field_docstrings`). A ``bool`` field is
    a flag: ``--name`` when its default is ``False``, ``--name/--no-name`` when it is ``True``; a ``Literal``
    gives the choices; ``int``, ``float`` and ``str`` are parsed as such (a type that includes ``str`` as a
    string), an optional one also accepts ``none`` when its default is not ``None``; a mapping is a JSON object; a
    tuple of strings takes one or more words.
    :func:`dataclass_from_args` reads the options back.

    Args:
        parser: The sub-command parser.
        cls: The dataclass.
        title: The group's title in ``--help``.
        description: The group's description.

    Returns:
        The field names, which are the options' destinations.
    """
    group = parser.add_argument_group(title, description)
    documented, hints = field_docstrings(cls), get_type_hints(cls)
    names = []
    for field in dataclasses.fields(cls):
        text = " ".join(documented.get(field.name, "").split("\n\n")[0].split()).replace("``", "")
        group.add_argument(
            f"--{cli_name(field.name)}",
            dest=field.name,
            default=field.default,
            help=text.replace("%", "%%") or None,
            **_argument_options(field.name, hints[field.name], field.default),
        )
        names.append(field.name)
    return tuple(names)


def dataclass_from_args(cls: type[T], args: argparse.Namespace, **changes: Any) -> T:
    """The dataclass ``cls`` from the options :func:`add_dataclass_arguments` added, with ``changes`` applied."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{**values, **changes})


# -- output paths ------------------------------------------------------------------------------
def _same_file(first: Path, second: Path) -> bool:
    try:
        if first.resolve() == second.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop
        pass
    try:
        return os.path.samefile(first, second)  # hard links, case-insensitive file systems
    except OSError:  # one of them does not exist
        return False


def check_output_path(
    output: str | os.PathLike[str], *, inputs: Sequence[str | os.PathLike[str]] = (), overwrite: bool = False
) -> Path:
    """Refuse an output path that would destroy data or cannot be written; call it before doing the work.

    Args:
        output: The file a command is about to write (``-o``).
        inputs: The files the command reads: the output may never be one of them, even with ``overwrite``.
        overwrite: Whether an existing output file may be replaced.

    Returns:
        ``output`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigurationError: the output is an input, exists (without ``overwrite``), is a directory, or its
            directory cannot be created or written.
    """
    path = Path(output)
    for source in inputs:
        if _same_file(path, Path(source)):
            raise ConfigurationError(
                f"the output {path} is the input file {source}: writing it would destroy the input; "
                "choose another output path with -o"
            )
    if path.is_dir():
        raise ConfigurationError(f"the output {path} is a directory; give a file path, e.g. -o {path / 'out'}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise ConfigurationError(
            f"the output {path} already exists; pass --overwrite to replace it, or choose another -o"
        )
    directory = path.absolute().parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigurationError(
            f"cannot create the directory {directory} for the output {path}: {existing} is a file, not a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "cannot write in it" if existing == directory else f"cannot create {directory} in it"
        raise ConfigurationError(
            f"cannot write the output {path}: permission denied on the directory {existing} ({reason}); "
            "choose a writable location with -o"
        )
    return path


# -- running a command -------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def describe_os_error(error: OSError) -> str:
    """``"PATH: reason"`` (``"a -> b: reason"`` for a rename), or the reason when no path is known."""
    reason = error.strerror or _one_line(str(error)) or type(error).__name__
    if error.filename is None:
        return reason
    where = os.fsdecode(error.filename)
    if error.filename2 is not None:
        where += f" -> {os.fsdecode(error.filename2)}"
    return f"{where}: {reason}"


class _CliFormatter(logging.Formatter):
    """Messages as they are; warnings and errors start with ``warning: ``/``error: `` (so they stand out)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def _is_console_handler(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


@contextmanager
def cli_logging(verbosity: int, progress: bool) -> Iterator[None]:
    """Show the packages' log messages on stderr (INFO with ``-v``, DEBUG with ``-vv``) during a command.

    With ``progress``, console logging goes through ``tqdm.write`` (``logging_redirect_tqdm``), so a message
    never lands in the middle of a progress bar. Everything is restored afterwards (``main`` may be called
    in-process, e.g. by tests).
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger()
    handler: logging.Handler | None = None
    if not any(_is_console_handler(h) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_CliFormatter("%(message)s"))
        root.addHandler(handler)
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    loggers = [logging.getLogger(name) for name in PACKAGE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        with logging_redirect_tqdm() if progress else nullcontext():
            yield
    finally:
        for logger, old in zip(loggers, levels, strict=True):
            logger.setLevel(old)
        if handler is not None:
            root.removeHandler(handler)


def _silence_stdout() -> None:
    """Point stdout at devnull, so that the flush at exit does not fail again (the Python docs' recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (captured in-process)
        pass


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or the exit status of ``--help``, ``--version`` or a usage error (never ``SystemExit``)."""
    try:
        try:
            return parser.parse_args(argv)
        except SystemExit as exit_:
            sys.stdout.flush()  # --help into a closed pipe fails here, not at interpreter exit
            if exit_.code is None:
                return 0
            return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE


def run_command(
    prog: str,
    args: argparse.Namespace,
    command: Callable[[argparse.Namespace], int],
    *,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``command(args)`` and turn every way it can fail into one line on stderr and an exit status.

    * a :class:`MechGymError` or one of ``expected`` (bad input): ``PROG COMMAND: error: message``, 2;
    * an ``OSError`` (missing parent, permission denied, disk full): the path and the reason, 2;
    * a broken pipe on stdout (the reader went away): nothing, 1, and stdout redirected to devnull;
    * Ctrl-C: ``PROG COMMAND: interrupted``, 130;
    * anything else is a bug: one line naming the exception, with a hint to rerun with ``-v``, which prints
      the traceback, 1.

    Args:
        prog: The program name (``mechgym``, ``diml``).
        args: Parsed arguments with ``command``, ``verbose`` and, for commands with a progress bar, ``quiet``.
        command: The sub-command.
        expected: Further exception types that mean bad input rather than a bug.

    Returns:
        The exit status.
    """
    where = f"{prog} {args.command}"
    verbosity = int(getattr(args, "verbose", 0))
    progress = not getattr(args, "quiet", True)
    bad_input: tuple[type[BaseException], ...] = (MechGymError, *expected)
    try:
        with cli_logging(verbosity, progress):
            status = int(command(args))
        sys.stdout.flush()  # a closed pipe fails here, inside the handlers, not at interpreter exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    except bad_input as error:
        print(f"{where}: error: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"{where}: error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if verbosity > 0:
            traceback.print_exc(file=sys.stderr)
        hint = "the traceback is above" if verbosity > 0 else f"rerun with {prog} -v ... for the traceback"
        message = _one_line(str(error))
        print(
            f"{where}: error: unexpected {type(error).__name__}{': ' + message if message else ''} "
            f"(probably a bug: {hint}, and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "HelpFormatter",
    "add_command",
    "add_dataclass_arguments",
    "add_learner_arguments",
    "add_version_and_verbose",
    "check_output_path",
    "cli_logging",
    "cli_name",
    "dataclass_from_args",
    "describe_os_error",
    "field_docstrings",
    "given_learner_options",
    "json_object",
    "learner_from_args",
    "learner_name_type",
    "package_version",
    "parse_args",
    "run_command",
]
