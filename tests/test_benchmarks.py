"""Every benchmark script runs to completion in --quick mode (no timing is asserted).

``benchmarks/reference.py`` times the published DIML code, which is not part of this repository (it has no
licence): it runs only when ``DIML_REFERENCE_DIR`` names a checkout of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDS_REFERENCE = {"reference"}
BENCHMARKS = sorted(
    p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_") and p.stem not in NEEDS_REFERENCE
)


def _run(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_runs_in_quick_mode(script: Path, tmp_path: Path) -> None:
    completed = _run([str(script), "--quick", "--threads", "1"], tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "|" in completed.stdout  # printed its table


def test_reference_benchmark_agrees_with_the_published_code(tmp_path: Path) -> None:
    directory = os.environ.get("DIML_REFERENCE_DIR")
    if not directory:
        pytest.skip(
            "DIML_REFERENCE_DIR is not set: fetch github.com/ryeii/DIML-Differentiable-Inverse-Mechanism-Learning "
            "(not part of this repository: it has no licence) and point DIML_REFERENCE_DIR at it"
        )
    script = ROOT / "benchmarks" / "reference.py"
    completed = _run([str(script), "--reference-dir", directory, "--quick", "--threads", "1"], tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]  # it exits non-zero when the losses disagree
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| E")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "E1 minibatch 32x50",
        "E4 n40 minibatch 8x30",
        "E4 n40 training epoch",
    ]
    for row in rows:
        loss_difference = float(row.split("|")[-3])
        assert loss_difference <= 1e-6


def test_reference_benchmark_refuses_a_directory_without_the_published_code(tmp_path: Path) -> None:
    completed = _run([str(ROOT / "benchmarks" / "reference.py"), "--reference-dir", str(tmp_path)], tmp_path)
    assert completed.returncode != 0
    assert "run_experiments.py" in completed.stderr
