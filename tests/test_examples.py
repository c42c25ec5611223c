"""Every example runs end to end with --smoke."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_with_smoke(script: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(tmp_path / "out"), "--device", "cpu"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "diff_mse" in completed.stdout
    assert (tmp_path / "out" / "traces.parquet").is_file() and (tmp_path / "out" / "fit.pt").is_file()
