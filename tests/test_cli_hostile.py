"""Both command lines against hostile conditions: closed pipes, clobbered or unwritable outputs, corrupted
files, unexpected errors; and what both promise everywhere: ``--version`` and a documented default per option.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mechgym
from diml_inverse import cli as diml_cli
from diml_inverse.result import FitResult
from mechgym import cli as mechgym_cli
from mechgym.traces import TraceDataset
from mechgym.traces.io import METADATA_KEY

ENV_ID = "mechgym/PublicGoods-v0"
CLIS: dict[str, Callable[[list[str]], int]] = {"mechgym": mechgym_cli.main, "diml": diml_cli.main}
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "mechgym": mechgym_cli.build_parser,
    "diml": diml_cli.build_parser,
}
FIT_MODULE = importlib.import_module("diml_inverse.fit")  # ``diml_inverse.fit`` the attribute is the function


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "traces.parquet"
    mechgym.rollout(ENV_ID, n_episodes=6, n_rounds=8, seed=0).save(path)
    return path


def one_line_error(err: str, prefix: str) -> str:
    """The single error line of stderr (besides logged warnings), which must start with ``prefix``; no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


def run_python(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], stdout=stdout, stderr=subprocess.PIPE, env=env)


# -- --version and --help ------------------------------------------------------------------------------
@pytest.mark.parametrize("prog", sorted(CLIS))
def test_version(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert CLIS[prog](["--version"]) == 0
    assert capsys.readouterr().out == f"{prog} {metadata.version('mechgym')}\n"


def test_version_from_the_installed_command() -> None:
    process = run_python("-m", "diml_inverse", "--version")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and err == b""
    assert out.decode().split() == ["diml", metadata.version("mechgym")]


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from all_parsers(child)


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default(prog: str) -> None:
    parsers = dict(all_parsers(PARSERS[prog]()))
    assert set(parsers) >= {
        f"{prog} {command}" for command in (["list", "record", "info"] if prog == "mechgym" else ["fit", "evaluate"])
    }
    for name, parser in parsers.items():
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            if not action.option_strings or action.required:
                continue
            formatter = parser._get_formatter()
            shown = formatter._get_help_string(action) or ""
            assert "default" in shown, f"{name} {action.option_strings}: {shown!r} does not show its default"
            assert "default: None" not in shown and "default: []" not in shown, f"{name}: {shown!r}"
        assert "(default:" in text


def test_diml_fit_help_lists_every_learner_and_its_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert diml_cli.main(["fit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--learner {bandit-q,hedge,logit-q,smooth-fp}" in text
    for option in ("--alpha", "--beta", "--epsilon", "--q0", "--eta", "--prior-weight"):
        assert f"{option} " in text
    assert "For hedge (default: the learner's value; the rules' own: hedge 0.1)" in text
    assert "--epochs EPOCHS passes over the training episodes (default: 100)" in text


# -- broken pipes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["list"], ["info", "TRACES"], ["record", "--help"]], ids=["list", "info", "help"])
def test_reader_gone_before_the_output(command: list[str], trace_file: Path) -> None:
    """``mechgym ... | head -1`` where the reader has already gone: no traceback, no error line, exit 1."""
    process = run_python("-m", "mechgym", *[str(trace_file) if arg == "TRACES" else arg for arg in command])
    assert process.stdout is not None
    process.stdout.close()  # before the program has printed anything: its writes fail with EPIPE
    _, err = process.communicate(timeout=120)
    assert err.decode() == ""
    assert process.returncode in ((0, 1) if command == ["record", "--help"] else (1,))  # argparse swallows EPIPE itself


def test_piped_into_head(trace_file: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    python = sys.executable
    script = f"'{python}' -m mechgym list | head -1; '{python}' -m mechgym info '{trace_file}' | head -1"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.stderr == ""
    assert result.stdout.splitlines()[0].split() == ["id", "family", "N", "A", "rounds"]
    assert result.stdout.splitlines()[1].startswith(f"{trace_file} (Parquet, ")


# -- outputs: never an input, never clobbered, checked before the work --------------------------------
@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make recording and fitting fail loudly: the output checks must come first."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the work started before the output path was checked")

    monkeypatch.setattr(FIT_MODULE, "fit", refuse)
    monkeypatch.setattr(importlib.import_module("mechgym.rollout"), "rollout", refuse)


def test_fit_refuses_to_write_over_its_input(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None
) -> None:
    before = trace_file.read_bytes()
    symlink, hardlink = tmp_path / "link.parquet", tmp_path / "hard.parquet"
    symlink.symlink_to(trace_file)
    os.link(trace_file, hardlink)
    for traces, output in [
        (trace_file, trace_file),
        (trace_file, symlink),
        (hardlink, trace_file),
        (symlink, hardlink),
    ]:
        for overwrite in ([], ["--overwrite"]):
            assert diml_cli.main(["fit", str(traces), "-q", "-o", str(output), *overwrite]) == 2
            line = one_line_error(capsys.readouterr().err, "diml fit: error: ")
            assert f"the output {output} is the input file {traces}" in line and "choose another output" in line
    relative = Path(os.path.relpath(trace_file))
    assert diml_cli.main(["fit", str(relative), "-q", "-o", str(trace_file.parent / "." / trace_file.name)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert trace_file.read_bytes() == before


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_existing_output_needs_overwrite(
    prog: str, trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None
) -> None:
    output = tmp_path / ("old.parquet" if prog == "mechgym" else "old.pt")
    output.write_bytes(b"precious")
    argv = ["record", ENV_ID] if prog == "mechgym" else ["fit", str(trace_file)]
    assert CLIS[prog]([*argv, "-q", "-o", str(output)]) == 2
    line = one_line_error(capsys.readouterr().err, f"{prog} {argv[0]}: error: ")
    assert f"the output {output} already exists; pass --overwrite" in line
    assert output.read_bytes() == b"precious"
    # with --overwrite the checks pass and the work starts (here: the patched work, which fails as a bug would)
    assert CLIS[prog]([*argv, "-q", "-o", str(output), "--overwrite"]) == 1
    assert "unexpected AssertionError: the work started" in capsys.readouterr().err
    assert output.read_bytes() == b"precious"


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_overwrite_replaces_the_output(prog: str, trace_file: Path, tmp_path: Path) -> None:
    output = tmp_path / ("old.parquet" if prog == "mechgym" else "old.pt")
    output.write_bytes(b"stale")
    if prog == "mechgym":
        argv = ["record", ENV_ID, "--episodes", "2", "--rounds", "3"]
    else:
        argv = ["fit", str(trace_file), "--epochs", "1", "--device", "cpu"]
    assert CLIS[prog]([*argv, "-q", "-o", str(output), "--overwrite"]) == 0
    assert output.read_bytes() != b"stale"
    if prog == "mechgym":
        assert mechgym.load_traces(output).actions.shape == (2, 3, 3)
    else:
        assert importlib.import_module("diml_inverse").load(output).env_id == ENV_ID


@pytest.mark.parametrize("prog", sorted(CLIS))
@pytest.mark.parametrize("case", ["directory", "parent-is-a-file"])
def test_unwritable_output_is_one_line_before_the_work(
    prog: str, case: str, trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None
) -> None:
    if case == "directory":
        output, expected = tmp_path / "out.parquet", "is a directory; give a file path"
        output.mkdir()
    else:
        (tmp_path / "file").write_text("not a directory")
        output, expected = tmp_path / "file" / "sub" / "out.parquet", f"{tmp_path / 'file'} is a file, not a directory"
    argv = ["record", ENV_ID] if prog == "mechgym" else ["fit", str(trace_file)]
    assert CLIS[prog]([*argv, "-q", "-o", str(output), "--overwrite"]) == 2
    line = one_line_error(capsys.readouterr().err, f"{prog} {argv[0]}: error: ")
    assert expected in line and str(tmp_path) in line


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_read_only_directory(
    prog: str,
    trace_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_work: None,
) -> None:
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o500)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes anyway: make os.access answer as for a user
        access = os.access

        def user_access(path: str | os.PathLike[str], mode: int, **kwargs: object) -> bool:
            return False if Path(path) == directory and mode & os.W_OK else access(path, mode)

        monkeypatch.setattr(os, "access", user_access)
    try:
        argv = ["record", ENV_ID] if prog == "mechgym" else ["fit", str(trace_file)]
        assert CLIS[prog]([*argv, "-q", "-o", str(directory / "new" / "out.parquet")]) == 2
        line = one_line_error(capsys.readouterr().err, f"{prog} {argv[0]}: error: ")
        assert f"permission denied on the directory {directory} (cannot create {directory / 'new'} in it)" in line
        assert CLIS[prog]([*argv, "-q", "-o", str(directory / "out.parquet")]) == 2
        assert "(cannot write in it)" in one_line_error(capsys.readouterr().err, f"{prog} {argv[0]}: error: ")
    finally:
        directory.chmod(0o700)


def test_os_errors_while_writing_name_the_path_and_the_reason(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the checks cannot foresee (a full disk, permissions changed meanwhile): one line, exit 2."""

    def no_space(self: object, path: str | Path) -> Path:
        raise OSError(28, "No space left on device", str(path))

    def denied(self: object, path: str | Path) -> Path:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(TraceDataset, "save", no_space)
    output = tmp_path / "t.parquet"
    assert mechgym_cli.main(["record", ENV_ID, "--episodes", "1", "--rounds", "2", "-q", "-o", str(output)]) == 2
    line = one_line_error(capsys.readouterr().err, "mechgym record: error: ")
    assert line == f"mechgym record: error: {output}: No space left on device"

    monkeypatch.setattr(FitResult, "save", denied)
    output = tmp_path / "fit.pt"
    assert diml_cli.main(["fit", str(trace_file), "--epochs", "1", "--device", "cpu", "-q", "-o", str(output)]) == 2
    line = one_line_error(capsys.readouterr().err, "diml fit: error: ")
    assert line == f"diml fit: error: {output}: Permission denied"


# -- unexpected errors: one line, and the traceback with -v ---------------------------------------------
@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
@pytest.mark.parametrize("prog", sorted(CLIS))
def test_unexpected_errors(
    prog: str, verbose: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("internal invariant violated\nsecond line")

    if prog == "mechgym":
        monkeypatch.setattr(importlib.import_module("mechgym.registration"), "registered_ids", broken)
        argv = ["list"]
    else:
        monkeypatch.setattr(importlib.import_module("diml_inverse.result"), "load", broken)
        argv = ["evaluate", str(tmp_path / "fit.pt"), "--traces", str(tmp_path / "t.parquet"), "-q"]
    assert CLIS[prog]((["-v"] if verbose else []) + argv) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{prog} {argv[0]}: error: unexpected RuntimeError: internal invariant violated second line")
    assert "probably a bug" in last
    if verbose:
        assert "Traceback (most recent call last)" in err and "the traceback is above" in last
    else:
        one_line_error(err, f"{prog} {argv[0]}: error: ")
        assert f"rerun with {prog} -v" in last
    # -v after the command name works too
    assert CLIS[prog]([*argv, "-v"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_diverged_fit_is_bad_input_not_a_bug(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def diverge(*args: object, **kwargs: object) -> None:
        raise FIT_MODULE.FitDivergedError("the fit diverged at epoch 3: ... Lower lr (now 10.0)")

    monkeypatch.setattr(FIT_MODULE, "fit", diverge)
    assert diml_cli.main(["fit", str(trace_file), "-q", "-o", str(tmp_path / "fit.pt")]) == 2
    assert "Lower lr" in one_line_error(capsys.readouterr().err, "diml fit: error: the fit diverged at epoch 3")


# -- mechgym info on corrupted and tampered files -------------------------------------------------------
def rewrite(path: Path, source: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(source)), path)


def with_metadata(text: bytes) -> Callable[[pa.Table], pa.Table]:
    return lambda table: table.replace_schema_metadata({METADATA_KEY: text})


def edited_metadata(raw: dict[str, str] | None = None, **changes: object) -> Callable[[pa.Table], pa.Table]:
    """Metadata with ``changes`` applied, and fields replaced by ``raw`` JSON text (which may not parse)."""

    def change(table: pa.Table) -> pa.Table:
        data = json.loads(table.schema.metadata[METADATA_KEY])
        data.update(changes)
        data.update({key: f"<{key}>" for key in raw or {}})
        text = json.dumps(data)
        for key, value in (raw or {}).items():
            text = text.replace(json.dumps(f"<{key}>"), value)
        return table.replace_schema_metadata({METADATA_KEY: text.encode()})

    return change


def with_actions(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        column = table.column("actions").combine_chunks()
        n_agents = column.type.list_size
        flat = values(column.flatten().to_numpy(zero_copy_only=False))
        index = table.column_names.index("actions")
        return table.set_column(index, "actions", pa.FixedSizeListArray.from_arrays(pa.array(flat), n_agents))

    return change


TAMPERED: dict[str, Callable[[Path, Path], object]] = {
    "empty": lambda path, source: path.write_bytes(b""),
    "garbage": lambda path, source: path.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1"),
    "truncated": lambda path, source: path.write_bytes(source.read_bytes()[: source.stat().st_size // 2]),
    "tail-cut": lambda path, source: path.write_bytes(source.read_bytes()[:-9]),
    "metadata-not-json": lambda path, source: rewrite(path, source, with_metadata(b"{not json")),
    "metadata-not-utf8": lambda path, source: rewrite(path, source, with_metadata(b"\xff\xfe{}")),
    "metadata-a-list": lambda path, source: rewrite(path, source, with_metadata(b"[1, 2]")),
    "metadata-deeply-nested": lambda path, source: rewrite(
        path, source, edited_metadata(raw={"extra": "[" * 100_000 + "]" * 100_000})
    ),
    "metadata-huge-integer": lambda path, source: rewrite(path, source, edited_metadata(raw={"seed": "1" * 5000})),
    "metadata-huge-float": lambda path, source: rewrite(path, source, edited_metadata(raw={"n_agents": "1e999"})),
    "metadata-nan": lambda path, source: rewrite(path, source, edited_metadata(raw={"n_actions": "NaN"})),
    "metadata-n-actions-too-small": lambda path, source: rewrite(path, source, edited_metadata(n_actions=2)),
    "metadata-n-agents-a-string": lambda path, source: rewrite(path, source, edited_metadata(n_agents="three")),
    "metadata-no-schema-version": lambda path, source: rewrite(path, source, edited_metadata(schema_version=None)),
    "metadata-unknown-learner": lambda path, source: rewrite(
        path, source, edited_metadata(learner={"name": "sarsa", "params": {}})
    ),
    "metadata-env-kwargs-a-list": lambda path, source: rewrite(path, source, edited_metadata(env_kwargs=[1])),
    "no-metadata": lambda path, source: rewrite(path, source, lambda table: table.replace_schema_metadata(None)),
    "negative-actions": lambda path, source: rewrite(path, source, with_actions(lambda a: a.astype(np.int64) - 100)),
    "float-actions": lambda path, source: rewrite(path, source, with_actions(lambda a: a.astype(np.float64) + 0.5)),
    "missing-rows": lambda path, source: rewrite(path, source, lambda table: table.slice(0, table.num_rows - 3)),
    "duplicated-rows": lambda path, source: rewrite(path, source, lambda table: pa.concat_tables([table, table])),
    "no-actions-column": lambda path, source: rewrite(path, source, lambda table: table.drop_columns(["actions"])),
    "npz-garbage": lambda path, source: path.write_bytes(b"PK\x03\x04" + b"\x00" * 64),
    "a-directory": lambda path, source: path.mkdir(),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_info_on_corrupted_or_tampered_files(
    case: str, trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / ("t.npz" if case.startswith("npz") else "t.parquet")
    TAMPERED[case](path, trace_file)
    for extra in ([], ["--json"]):
        assert mechgym_cli.main(["info", str(path), *extra]) == 2, capsys.readouterr()
        captured = capsys.readouterr()
        assert captured.out == ""
        one_line_error(captured.err, f"mechgym info: error: {path}")


@pytest.mark.parametrize("seed", range(6))
def test_info_on_flipped_bytes(seed: int, trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Random bytes of a trace file flipped: either still a valid file or one line of error, never a traceback."""
    data = bytearray(trace_file.read_bytes())
    rng = np.random.default_rng(seed)
    for position in rng.choice(len(data), size=4, replace=False):
        data[position] ^= 0xFF
    path = tmp_path / "flipped.parquet"
    path.write_bytes(bytes(data))
    status = mechgym_cli.main(["info", str(path)])
    captured = capsys.readouterr()
    assert status in (0, 2)
    if status == 2:
        one_line_error(captured.err, "mechgym info: error: ")
    else:
        assert captured.err == "" and captured.out.startswith(f"{path} (Parquet, ")
