"""Every code block of README.md and docs/*.md runs as written, the way a reader pastes them.

The ```python blocks of a page run in page order in one namespace, in a fresh interpreter whose working
directory is a new temporary directory: nothing is imported beforehand, so a block that forgets an import fails
here as it would for a reader. The ```bash blocks whose commands are all ``mechgym ...`` or ``diml ...`` run in
the same order, each command through the console-script entry point the installed program calls (in that
interpreter, which saves a fresh one's imports per command).

Long computations run smoke-sized: :data:`SMOKE` is a table of textual substitutions applied under test only
(each must match its page exactly as often as it says, so the table cannot rot), and ``-m slow`` runs the
README unchanged and checks the figure it states. Bash blocks that are not run (installation, CI, hours of
experiments) are listed in :data:`NOT_RUN`; every other bash block must be runnable. Blocks importing an
optional third-party reader that is not installed (:data:`OPTIONAL_MODULES`) are skipped with a warning.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md"))]

#: Programs whose commands in ```bash blocks are run.
CLI_PROGRAMS = frozenset({"mechgym", "diml"})

#: Modules a docs block may need that the project does not depend on (other tools reading trace files; OpenSpiel,
#: the .[openspiel] extra, in docs/interop.md).
OPTIONAL_MODULES = frozenset({"pandas", "polars", "duckdb", "pyspiel", "ray"})


@dataclass(frozen=True)
class Substitution:
    """A textual change applied to a page's code under test only.

    Attributes:
        page: The page, relative to the repository root.
        old: Text in the page's runnable blocks.
        new: Its smoke-sized replacement.
        count: How often ``old`` occurs in the page's runnable blocks.
        why: What the change avoids.
    """

    page: str
    old: str
    new: str
    count: int
    why: str


SMOKE: tuple[Substitution, ...] = (
    Substitution("README.md", "seed=0).learn(2_000)", "seed=0).learn(128)", 1, "PPO on make_vec_env, ~5 s"),
    Substitution("README.md", "train, epochs=100)", "train, epochs=2)", 1, "the 100-epoch Congestion fit, ~10 s"),
    Substitution("README.md", "--epochs 60", "--epochs 2", 1, "the 60-epoch CLI fit"),
    Substitution(
        "docs/environments.md",
        'PPO("MlpPolicy", env).learn(20_000)',
        'PPO("MlpPolicy", env, n_steps=64).learn(128)',
        1,
        "PPO on the single-agent view: 20,000 steps in rollouts of 2,048",
    ),
    Substitution("docs/inverse.md", "epochs=100,", "epochs=2,", 1, "the 100-epoch fit that lists every option"),
    Substitution(
        "docs/uncertainty.md", "n_replicates=20,", "n_replicates=2,", 1, "21 fits of the bootstrap example, ~40 s"
    ),
    Substitution("docs/uncertainty.md", '"epochs": 40}', '"epochs": 2}', 1, "the bootstrapped fit's 40 epochs"),
    Substitution("docs/sweeps.md", "for k in range(32)", "for k in range(2)", 1, "33 tiny fits, twice on Ray"),
    Substitution("docs/learners.md", "n_episodes=200", "n_episodes=2", 2, "train_sb3: PPO and DQN, ~25 s"),
    Substitution("docs/learners.md", "3 * 30 * 100", "3 * 30 * 2", 1, "PPO on AgentsVecEnv: 100 rollouts"),
    Substitution(
        "docs/learners.md",
        'PPO("MlpPolicy", env, seed=0).learn(6_000)',
        'PPO("MlpPolicy", env, n_steps=64, seed=0).learn(128)',
        1,
        "PPO on the single-agent view: 6,000 steps in rollouts of 2,048",
    ),
    Substitution(
        "docs/learners.md",
        'diml_inverse.fit("mechgym/Congestion-v0", traces',
        'diml_inverse.fit("mechgym/Congestion-v0", traces, epochs=2',
        3,
        "three fits of 100 epochs (the default)",
    ),
    Substitution("docs/learners.md", "--episodes 200", "--episodes 2", 1, "mechgym record --learner ppo"),
    Substitution(
        "docs/learners.md", "--shared --sb3-kwarg", "--shared --episodes 2 --sb3-kwarg", 1, "DQN for 48 episodes"
    ),
)

#: ```bash blocks that are not run, by page and first line, and why.
NOT_RUN: dict[tuple[str, str], str] = {
    (
        "docs/results.md",
        "python benchmarks/unseen_aggregative.py --models additive_counts aggregate_counts auto --threads 1",
    ): "two aggregative games outside the zoo: 18 fits, about 25 minutes (test_benchmarks.py runs it with --quick)",
    ("docs/results.md", "python -m diml_inverse.experiments goktas --out runs/goktas --threads 1"): (
        "Goktas et al.'s table: 14 rows, seconds (tests/diml_inverse/equilibrium/test_traces.py runs one game)"
    ),
    (
        "docs/results.md",
        "python -m diml_inverse.experiments equilibrium --seeds 0 1 2 --out runs/equilibrium --threads 1",
    ): "DIML against equilibrium inversion on E1-E3: 39 fits, minutes (test_traces.py: smoke-sized, -m slow)",
    (
        "docs/results.md",
        "python -m diml_inverse.experiments.openspiel_games --seeds 0 1 2 --out runs/openspiel --threads 1",
    ): "six OpenSpiel games: 36 fits, 3 minutes (tests/diml_inverse/experiments/test_openspiel_games.py: --smoke)",
    (
        "docs/results.md",
        "python -m diml_inverse.experiments zoo --games RandomNormalForm RandomNormalFormWeak RandomNormalFormStrong  "
        "Polymatrix Coordination AntiCoordination ShapleyCostSharing PluralityVoting ThresholdParticipation E1 E2 E3  "
        "--seeds 0 1 2 --out runs/zoo_new --threads 1 --workers 1",
    ): "the small zoo games and E1-E3 with and without the network as a candidate: 54 fits, minutes "
    "(test_zoo.py runs the zoo with --smoke; test_fit_full_batch.py refits E1 seed 2)",
    ("docs/results.md", "python -m diml_inverse.experiments zoo --out runs/zoo --threads 1"): (
        "the recovery zoo: 39 fits, minutes (tests/diml_inverse/experiments/test_zoo.py runs it with --smoke)"
    ),
    (
        "docs/results.md",
        "python -m diml_inverse.experiments zoo --games E1 E2 E3 --seeds 0 1 2 --out runs/paper_default --threads 1",
    ): ("the default fit on E1-E3: 9 fits, minutes (test_zoo.py runs E1 with --smoke)"),
    (
        "docs/results.md",
        "python -m diml_inverse.experiments zoo --episodes 24 48 96 192 384 960 --seeds 0 1 2 --out runs/data_needs  "
        "--threads 1 --engine ray --workers 2 --games RandomNormalForm RandomNormalFormWeak RandomNormalFormStrong  "
        "Polymatrix Coordination AntiCoordination ShapleyCostSharing PluralityVoting ThresholdParticipation",
    ): "the data-needs curves: 324 fits of up to 960 episodes, about 30 minutes on Ray with 2 workers (test_zoo.py "
    "runs --episodes with --smoke)",
    (
        "docs/results.md",
        "python -m diml_inverse.experiments zoo --episodes 24 48 96 192 --seeds 0 1 2 "
        "--out runs/data_needs_anonymous_1se  --threads 1 --workers 2 --games ThresholdPublicGood",
    ): "the threshold public good's data-needs curve: 12 fits of up to 192 episodes, about an hour on 2 workers "
    "(test_zoo.py runs --episodes with --smoke)",
    (
        "docs/results.md",
        "python -m diml_inverse.experiments zoo --episodes 24 48 96 192 384 960 --seeds 0 1 2 "
        "--out runs/data_needs_totals  --threads 1 --workers 1 --games ThresholdParticipation PluralityVoting",
    ): "two small games' data-needs curves: 36 fits of up to 960 episodes, about 18 minutes on 1 worker "
    "(test_zoo.py runs --episodes with --smoke)",
    (
        "docs/results.md",
        "python -m diml_inverse.experiments calibration --seeds 0 1 2 --out runs/calibration --threads 1",
    ): (
        "the calibration study and its two remedies: 675 fits and 24 Hessians, over an hour "
        "(tests/diml_inverse/uncertainty/test_calibration.py runs it with --smoke)"
    ),
    ("README.md", 'python -m pip install -e ".[dev]" && python examples/01_quickstart.py'): (
        "installs the package and runs example 01 (tests/test_examples.py runs it with --smoke); CI runs the "
        "install and the test command"
    ),
    ("docs/results.md", "python -m diml_inverse.experiments run e1 --seeds 0 1 2 --out runs/experiments --threads 1"): (
        "the experiments E1-E4: hours (tests/diml_inverse/experiments/test_experiments.py runs them smoke-sized)"
    ),
    (
        "docs/results.md",
        "python -m diml_inverse.experiments run e4 --seeds 0 --out runs/experiments --threads 1 "
        "--scales n40   # ... n300, one process per scale",
    ): "E4 at five scales: hours",
    (
        "docs/results.md",
        "python -m diml_inverse.experiments misspec --seeds 0 1 2 --out runs/experiments --threads 1 "
        "--figures-dir docs/figures",
    ): "the misspecification study: hours",
    ("docs/results.md", "python -m diml_inverse.comparison.study --seeds 0 1 2 --out runs/compare"): (
        "compare_learners on the misspecification generators: 432 fits, an hour on a loaded machine "
        "(tests/diml_inverse/test_compare.py runs one tiny comparison of the study)"
    ),
    (
        "docs/sweeps.md",
        "python -m diml_inverse.experiments misspec --seeds 0 1 2 --out runs/experiments --engine ray --workers 2",
    ): "the misspecification study on Ray: 33 CPU-minutes (tests/diml_inverse/sweep/test_ray.py runs e1 smoke-sized)",
    ("docs/sweeps.md", "ray start --head --port 6379 --num-cpus 64"): "starts a Ray cluster: needs other machines",
    (
        "docs/benchmarks.md",
        "python benchmarks/large_game.py --traces runs/large_game/traces_quiet.parquet --threads 2 --epochs 3",
    ): "a 1,000-agent benchmark (benchmarks are not run in CI)",
}


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page.

    Attributes:
        page: The page, relative to the repository root.
        line: The page's line number of the block's first line of code (1-based).
        language: The fence's info string (``"python"``, ``"bash"``, ``""``...).
        source: The code, one trailing newline.
    """

    page: str
    line: int
    language: str
    source: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def commands(self) -> list[str]:
        """The shell commands of a bash block: continuation lines joined, comments and blank lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.source)
        return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    def runs_commands(self) -> bool:
        """A bash block every command of which is a plain ``mechgym``/``diml`` command (no pipes, no ``&&``)."""
        commands = self.commands()
        return bool(commands) and all(
            shlex.split(command, comments=True)[0] in CLI_PROGRAMS and not set("|&;<>$`") & set(command.split("#")[0])
            for command in commands
        )

    def missing_optional_modules(self) -> list[str]:
        """The optional modules this python block imports and this machine lacks."""
        names = set()
        for node in ast.walk(ast.parse(self.source)):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        return sorted(name for name in names & OPTIONAL_MODULES if importlib.util.find_spec(name) is None)


def code_blocks(page: str) -> list[Block]:
    """Every fenced block of ``page``, in order."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = re.fullmatch(r"```(\S*)\s*", lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{page}:{index + 1}: the code block is never closed"
        blocks.append(Block(page, index + 2, opening.group(1), "\n".join(lines[index + 1 : end]) + "\n"))
        index = end + 1
    return blocks


def runnable_blocks(page: str) -> list[Block]:
    """The page's ```python blocks and its runnable ```bash blocks."""
    blocks = code_blocks(page)
    return [b for b in blocks if b.language == "python" or (b.language == "bash" and b.runs_commands())]


def smoke_sized(block: Block) -> Block:
    """The block with the page's :data:`SMOKE` substitutions applied."""
    source = block.source
    for substitution in SMOKE:
        if substitution.page == block.page:
            source = source.replace(substitution.old, substitution.new)
    return Block(block.page, block.line, block.language, source)


#: Runs the steps of a page (a JSON list) in one namespace, in the working directory; a failure exits non-zero.
RUNNER = """
import json, pathlib, shlex, sys, time
from importlib.metadata import entry_points
steps = json.loads(pathlib.Path(sys.argv[1]).read_text())
scripts = {script.name: script for script in entry_points(group="console_scripts")}
namespace = {"__name__": "__main__"}
start = time.perf_counter()
for step in steps:
    print(f"=== {step['where']} at {time.perf_counter() - start:.1f} s", flush=True)
    if "python" in step:
        code = compile("\\n" * (step["line"] - 1) + step["python"], step["path"], "exec")
        exec(code, namespace)
        continue
    for command in step["shell"]:
        print(f"$ {command}", flush=True)
        argv = shlex.split(command, comments=True)
        try:
            status = scripts[argv[0]].load()(argv[1:])
        except SystemExit as exit:
            status = exit.code
        if status:
            sys.exit(f"{step['where']}: `{command}` exited with status {status}")
print(f"=== done at {time.perf_counter() - start:.1f} s", flush=True)
"""


def run_page(page: str, directory: Path, *, smoke: bool = True, timeout: float = 600) -> str:
    """Run the page's runnable blocks in ``directory`` in a fresh interpreter and return its output.

    Blocks that import a missing optional module are left out (with a warning).
    """
    steps = []
    for block in runnable_blocks(page):
        if block.language == "python" and (missing := block.missing_optional_modules()):
            warnings.warn(f"{block.where} not run: {', '.join(missing)} is not installed", stacklevel=2)
            continue
        block = smoke_sized(block) if smoke else block
        step: dict[str, object] = {"where": block.where, "line": block.line, "path": str(ROOT / page)}
        if block.language == "python":
            step["python"] = block.source
        else:
            step["shell"] = block.commands()
        steps.append(step)
    steps_file = directory / "steps.json"
    steps_file.write_text(json.dumps(steps), encoding="utf-8")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    completed = subprocess.run(
        [sys.executable, "-c", RUNNER, str(steps_file)],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{page} failed when pasted:\n{output[-6000:]}"
    return completed.stdout


# -- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page: str, tmp_path: Path) -> None:
    if not runnable_blocks(page):
        pytest.skip(f"{page} has no runnable code blocks")
    output = run_page(page, tmp_path)
    for block in runnable_blocks(page):
        if block.language == "bash" or not block.missing_optional_modules():
            assert f"=== {block.where} at " in output  # every block ran


def test_smoke_substitutions_match_their_blocks() -> None:
    for substitution in SMOKE:
        assert substitution.page in PAGES, substitution
        found = sum(block.source.count(substitution.old) for block in runnable_blocks(substitution.page))
        assert found == substitution.count, (
            f"{substitution.page}: {substitution.old!r} ({substitution.why}) occurs {found} times in its code "
            f"blocks, not {substitution.count}; update SMOKE in {Path(__file__).name}"
        )
        changed = [smoke_sized(b).source for b in runnable_blocks(substitution.page)]
        assert sum(source.count(substitution.new) for source in changed) >= substitution.count


def test_every_bash_block_runs_or_says_why_not() -> None:
    not_run = {
        (block.page, block.commands()[0])
        for page in PAGES
        for block in code_blocks(page)
        if block.language == "bash" and not block.runs_commands()
    }
    assert not_run == set(NOT_RUN)


def test_code_blocks_are_fenced_with_a_language_that_runs_or_shows_text() -> None:
    known = {"python", "bash", "text", "console", "sql", ""}
    for page in PAGES:
        for block in code_blocks(page):
            assert block.language in known, f"{block.where}: unexpected fence language {block.language!r}"
            if block.language == "python":
                ast.parse(block.source, filename=block.where)  # a python block is real code


def test_gymnasium_make_in_the_docs_imports_mechgym() -> None:
    """Gymnasium 1.x loads no plugins: the docs build mechgym ids with the ``mechgym:`` prefix."""
    call = re.compile(r"""(?:gymnasium\.make|gymnasium\.make_vec|make_vec_env)\(\s*["']([^"']+)["']""")
    seen = 0
    for page in PAGES:
        for block in code_blocks(page):
            for env_id in call.findall(block.source):
                seen += 1
                assert env_id.startswith("mechgym:"), f"{block.where}: {env_id!r} needs the 'mechgym:' prefix"
    assert seen >= 3


@pytest.mark.slow
def test_readme_prints_the_figure_it_states(tmp_path: Path) -> None:
    """The README unchanged (a 100-epoch fit): the printed recovery matches the figure stated below the block."""
    output = run_page("README.md", tmp_path, smoke=False)
    pattern = re.compile(r"diff_mse ([0-9.]+) vs zero mechanism ([0-9.]+): ([0-9]+)x lower")
    stated = pattern.search((ROOT / "README.md").read_text(encoding="utf-8"))
    printed = pattern.search(output)
    assert stated is not None and printed is not None, output[-3000:]
    assert float(printed.group(3)) >= 15  # the fit recovers the payoff differences convincingly
    assert float(printed.group(1)) == pytest.approx(float(stated.group(1)), rel=0.2)
    assert float(printed.group(2)) == pytest.approx(float(stated.group(2)), rel=0.05)


def _table_cells(line: str) -> int:
    """Cells of a markdown table row, not counting escaped bars or bars inside inline code."""
    text = re.sub(r"`[^`]*`", "``", line.strip().replace(r"\|", ""))
    return text.strip("|").count("|") + 1


def test_every_markdown_table_row_has_its_header_s_cells() -> None:
    """A row with a cell more or less than its header renders wrongly (GitHub drops or pads the cell)."""
    checked = 0
    for page in PAGES:
        lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
        in_fence = False
        header: int | None = None
        for number, line in enumerate(lines, start=1):
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
                continue
            if in_fence or not line.lstrip().startswith("|"):
                header = None
                continue
            cells = _table_cells(line)
            if header is None:
                header = cells
                continue
            checked += 1
            assert cells == header, f"{page}:{number}: {cells} cells under a header of {header}"
    assert checked > 100
