"""The package's layout rules: short functions, one-way imports, optional integrations."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 100


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (at the top or inside a function), absolute names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def function_lengths(*packages: str) -> dict[str, int]:
    """``"path:line name" -> lines`` of every function and method in ``packages``."""
    lengths = {}
    for package in packages:
        for path in modules(package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    where = f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {node.name}"
                    lengths[where] = (node.end_lineno or node.lineno) - node.lineno + 1
    return lengths


def test_no_function_is_over_100_lines() -> None:
    long = {where: n for where, n in function_lengths("mechgym", "diml_inverse").items() if n > MAX_FUNCTION_LINES}
    assert long == {}, f"split these functions (at most {MAX_FUNCTION_LINES} lines each): {long}"


def test_fit_is_a_short_pipeline() -> None:
    (fit_length,) = (
        n
        for where, n in function_lengths("diml_inverse").items()
        if where.startswith("diml_inverse/fit.py:") and where.endswith(" fit")
    )
    assert fit_length <= 80, fit_length


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # the learning rules know nothing of the game that runs them (no learners <-> env cycle)
        ("mechgym/learners", ("mechgym.env", "mechgym.envs", "mechgym.registration", "mechgym.integrations")),
        # the registry is machinery: the games are data in mechgym.envs, which imports it
        ("mechgym/registration.py", ("mechgym.envs", "mechgym.integrations", "mechgym.mechanisms")),
        # dependencies point one way
        ("mechgym", ("diml_inverse",)),
    ],
)
def test_imports_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    paths = [ROOT / package] if package.endswith(".py") else modules(package)
    found = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in paths
        for name in imported(path)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
    )
    assert found == []


def test_the_core_works_without_stable_baselines3() -> None:
    """``import mechgym`` never imports SB3; with SB3 missing the core works and the integration says how to fix it."""
    script = textwrap.dedent(
        """
        import sys

        import mechgym

        assert "stable_baselines3" not in sys.modules, "import mechgym imported stable_baselines3"
        sys.modules["stable_baselines3"] = None  # as if it were not installed
        env = mechgym.make("mechgym/Congestion-v0", n_rounds=3)
        mechgym.rollout(env, n_episodes=1, seed=0)
        try:
            import mechgym.integrations.sb3
        except ImportError as error:
            assert "pip install '.[sb3]'" in str(error), error
        else:
            raise AssertionError("mechgym.integrations.sb3 imported without stable_baselines3")
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
