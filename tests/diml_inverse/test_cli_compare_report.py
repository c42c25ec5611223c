"""``diml compare`` and ``diml report``: they print and write what they say, and refuse bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mechgym
from diml_inverse.cli import main
from mechgym import LogitQ

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--epochs", "2", "--model", "structured", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("cli")
    traces = mechgym.rollout("mechgym/PublicGoods-v0", LogitQ(), 10, 8, seed=0).save(directory / "traces.parquet")
    fit_file = directory / "fit.pt"
    assert main(["fit", str(traces), *FAST, "-o", str(fit_file)]) == 0
    return traces, fit_file


def test_compare_prints_the_table_and_json(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    traces, _ = files
    argv = ["compare", str(traces), "--candidate", "logit-q", "--candidate", "hedge:eta=0.2", "--folds", "2", *FAST]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2-fold cross-validation" in out and "| hedge:eta=0.2 |" in out.replace("  ", " ")
    assert main([*argv, "--json", "--fixed-rates"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {row["candidate"] for row in printed["table"]} == {"logit-q", "hedge:eta=0.2"}
    assert all("alpha (mean)" not in row for row in printed["table"])  # --fixed-rates: nothing learned


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--candidate", "hedge"], "two or more --candidate"),
        (["--candidate", "hedg", "--candidate", "logit-q"], "Did you mean 'hedge'"),
        (["--candidate", "hedge:eta", "--candidate", "logit-q"], "is not PARAM=NUMBER"),
        (["--candidate", "hedge:beta=1", "--candidate", "logit-q"], "its parameters are epsilon, eta, q0"),
        (["--folds", "11"], "folds must be an integer < 11"),
    ],
    ids=["one-candidate", "typo", "no-value", "wrong-parameter", "folds"],
)
def test_compare_refuses_bad_input(
    files: tuple[Path, Path], extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(files[0]), *extra, *FAST]) == 2
    assert message in capsys.readouterr().err


def test_report_writes_once_and_replaces_only_when_forced(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traces, fit_file = files
    page = tmp_path / "fit.html"
    argv = ["report", str(fit_file), "--traces", str(traces), "--test-fraction", "0.2", "--out", str(page)]
    assert main(argv) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    assert page.read_text().count("<img") == 3
    assert main(argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert main([*argv, "--force", "--bootstrap", str(tmp_path / "missing.bootstrap")]) == 2
    assert "no bootstrap file" in capsys.readouterr().err
    assert main([*argv[:-2], "--out", str(traces)]) == 2  # never over an input
    assert "is the input file" in capsys.readouterr().err
