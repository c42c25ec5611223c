"""CI runs what the README tells a newcomer to run, verbatim, with nothing pinned before it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README.md's Quick start has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_commands_verbatim() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2, commands  # one installs and runs the example, one runs the tests
    script = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    for command in commands:
        assert command in script, f".ci/run does not run the README's command {command!r}"


def test_ci_installs_nothing_before_the_readme_install() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    install = _quick_start_commands()[0]
    before = script[: [line.strip() for line in script].index(install)]
    pins = [line for line in before if "pip install" in line and "--upgrade pip" not in line]
    assert not pins, f".ci/run installs packages before the README's install: {pins}"
