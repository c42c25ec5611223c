"""Does ``torch.compile`` speed up one DIML training step's likelihood work?

One training step as :func:`diml_inverse.fit` takes it on whole episodes: ``trace_terms`` of a minibatch of
action traces, the loss ``-log_probs.sum() / n + payoff_l2 * realised.pow(2).mean()``, and its backward
into the model's parameters. The baseline runs that loss eagerly; the alternative wraps the same loss
function in ``torch.compile`` (``dynamic=False``; the default mode, and ``max-autotune-no-cudagraphs`` with
``--max-autotune``). Both run in the same process, interleaved; the table gives the compile time (the
first compiled call, forward and backward, on an empty compile cache), the time of the recompilation that a
minibatch of half the episodes triggers (fit's shorter last minibatch; not with ``--quick``), the steady-state step
times (medians; the speed-up as the ratio of medians and, less sensitive to background load, of minima),
the graph breaks reported by ``torch._dynamo.explain``, and the largest difference of the compiled loss
and gradients from the eager ones. A variant that fails to compile is reported in the table, not raised.

    python benchmarks/compile.py --threads 1           # full run: E1, E2 (neural and structured), E4 n40
    python benchmarks/compile.py --quick --threads 1   # E1 only, few repeats
    python benchmarks/compile.py --max-autotune        # also mode="max-autotune-no-cudagraphs"

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from _common import describe_machine, load_average, seconds, synchronize
from torch import Tensor

from diml_inverse.likelihood import trace_terms
from mechgym.learners import LogitQ
from mechgym.mechanisms import AnonymousCountMechanism, CongestionMechanism, Mechanism, NeuralJointMechanism
from mechgym.rollout import simulate

E1_E3_LEARNER = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
E4_LEARNER = LogitQ(alpha=0.2, beta=6.0, epsilon=0.02)
PAYOFF_L2 = 1e-4  # fit's default


@dataclass(frozen=True)
class Workload:
    """A minibatch of ``n_episodes x n_rounds`` traces simulated from ``truth``, scored under ``model``."""

    name: str
    truth: Callable[[], Mechanism]
    model: Callable[[], Mechanism]  # the mechanism being trained: a fresh, unfrozen instance
    learner: LogitQ
    n_episodes: int
    n_rounds: int
    quick: bool = False  # run by --quick


def workloads() -> list[Workload]:
    return [
        Workload(
            "E1 neural 3x6",
            lambda: NeuralJointMechanism(3, 6, seed=0),
            lambda: NeuralJointMechanism(3, 6, seed=1),
            E1_E3_LEARNER,
            32,
            50,
            quick=True,
        ),
        Workload(
            "E2 congestion 4x5, neural model",  # fit's model="auto"
            lambda: CongestionMechanism(4, 5, seed=0),
            lambda: NeuralJointMechanism(4, 5, seed=1),
            E1_E3_LEARNER,
            32,
            60,
        ),
        Workload(
            "E2 congestion 4x5, structured model",  # StructMLE
            lambda: CongestionMechanism(4, 5, seed=0),
            lambda: CongestionMechanism(4, 5, seed=1),
            E1_E3_LEARNER,
            32,
            60,
        ),
        Workload(
            "E4 anonymous 40x10",
            lambda: AnonymousCountMechanism(40, 10, seed=0),
            lambda: AnonymousCountMechanism(40, 10, seed=1),
            E4_LEARNER,
            8,
            30,
        ),
        Workload(  # one round window of the 1,000-agent benchmark: 73 burn-in + 100 scored rounds + 1
            "anonymous 1000x100, hidden 64 (one round window)",
            lambda: AnonymousCountMechanism(1000, 100, seed=0),
            lambda: AnonymousCountMechanism(1000, 100, hidden=64, seed=1),
            E4_LEARNER,
            1,
            174,
        ),
    ]


def make_loss(mechanism: Mechanism, learner: LogitQ) -> Callable[[Tensor], Tensor]:
    """The loss of one whole-episode minibatch of diml_inverse.fit (no learned q0, alpha or epsilon)."""

    def loss(actions: Tensor) -> Tensor:
        log_probs, realised = trace_terms(mechanism, actions, learner, None, alpha=None, epsilon=None, validate=False)
        nll = -log_probs.sum() / log_probs.numel()
        return nll + PAYOFF_L2 * realised.pow(2).mean()

    return loss


def training_step(mechanism: Mechanism, loss: Callable[[Tensor], Tensor], actions: Tensor) -> Callable[[], None]:
    def step() -> None:
        mechanism.zero_grad(set_to_none=True)
        loss(actions).backward()

    return step


def loss_and_grads(mechanism: Mechanism, loss: Callable[[Tensor], Tensor], actions: Tensor) -> list[Tensor]:
    mechanism.zero_grad(set_to_none=True)
    value = loss(actions)
    value.backward()
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in mechanism.parameters()]
    return [value.detach().clone(), *grads]


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(error).__name__}: {message}"[:120].replace("|", "/")


def graph_breaks(loss: Callable[[Tensor], Tensor], actions: Tensor) -> str:
    """``graphs / breaks`` by torch._dynamo.explain (tracing only, no code generation)."""
    try:
        explain = torch._dynamo.explain
    except AttributeError:
        return "n/a"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = explain(loss)(actions)
        return f"{report.graph_count} / {report.graph_break_count}"
    except Exception as error:  # reported, not raised
        return first_line(error)
    finally:
        torch._dynamo.reset()


@dataclass
class Variant:
    """One compiled variant of a workload: timings or the reason it has none."""

    mode: str
    compile_s: float | None = None
    times: list[float] = field(default_factory=list)
    step: Callable[[], None] | None = None
    recompile_s: float | None = None
    loss_diff: float | None = None
    grad_diff: float | None = None
    error: str | None = None


@dataclass
class Result:
    eager: list[float]
    breaks: str
    variants: list[Variant]


def fresh_cache(root: str) -> contextlib.AbstractContextManager[None]:
    """Empty inductor caches, on disk (a new directory under ``root``) and in memory, for a cold compile time."""
    try:
        from torch._inductor.utils import fresh_cache as fresh
    except ImportError:
        try:
            from torch._inductor.utils import fresh_inductor_cache as fresh
        except ImportError:
            return contextlib.nullcontext()
    return fresh(dir=root, delete=False)  # `root` is removed at exit; compiled modules stay loaded until then


def run(workload: Workload, device: torch.device, modes: list[str], quick: bool, seed: int, root: str) -> Result:
    truth = workload.truth().to(device).freeze()
    actions, _ = simulate(truth, workload.learner, workload.n_episodes, workload.n_rounds, seed)
    actions = actions.to(device)
    mechanism = workload.model().to(device)
    mechanism.train()
    eager_loss = make_loss(mechanism, workload.learner)
    eager_step = training_step(mechanism, eager_loss, actions)
    reference = loss_and_grads(mechanism, eager_loss, actions)
    warmup = min(seconds(eager_step, device) for _ in range(2))
    breaks = graph_breaks(eager_loss, actions)

    variants = []
    for mode in modes:
        variant = Variant(mode)
        variants.append(variant)
        torch._dynamo.reset()
        try:
            options: dict = {} if mode == "default" else {"mode": mode}
            compiled = torch.compile(eager_loss, dynamic=False, **options)
            with fresh_cache(root):
                start = time.perf_counter()
                got = loss_and_grads(mechanism, compiled, actions)  # compiles the forward and, lazily, the backward
                synchronize(device)
                variant.compile_s = time.perf_counter() - start
                if not quick:  # fit's last, shorter minibatch: with dynamic=False a new shape compiles again
                    variant.recompile_s = seconds(
                        training_step(mechanism, compiled, actions[: max(1, workload.n_episodes // 2)]), device
                    )
            variant.loss_diff = (got[0] - reference[0]).abs().item()
            variant.grad_diff = max((g - r).abs().max().item() for g, r in zip(got[1:], reference[1:], strict=True))
            variant.step = training_step(mechanism, compiled, actions)
            variant.step()  # back to the full minibatch: cached, no recompilation expected
        except Exception as error:  # reported in the table, not raised
            variant.error = first_line(error)
            variant.step = None

    # about `budget` seconds of eager steps in `repeats` groups, each followed by as many steps of every variant
    repeats, budget = (3, 0.6) if quick else (9, 6.0)
    per_repeat = max(1, min(20, round(budget / repeats / max(warmup, 1e-6))))
    eager: list[float] = []
    for _ in range(repeats):
        eager += [seconds(eager_step, device) for _ in range(per_repeat)]
        for variant in variants:
            if variant.step is not None:
                variant.times += [seconds(variant.step, device) for _ in range(per_repeat)]
    torch._dynamo.reset()
    return Result(eager=eager, breaks=breaks, variants=variants)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="E1 only, fewer repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads and compile workers")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated traces")
    parser.add_argument("--only", nargs="*", default=None, help="workloads whose names start with these")
    parser.add_argument(
        "--max-autotune", action="store_true", help='also time mode="max-autotune-no-cudagraphs" (slow to compile)'
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    root = tempfile.mkdtemp(prefix="diml-compile-bench-")  # every compile starts from an empty cache under it
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = root
    try:
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = max(1, args.threads)
    except Exception:  # no inductor: compile fails below and is reported
        pass
    modes = ["default", *(["max-autotune-no-cudagraphs"] if args.max_autotune else [])]

    print(f"machine: {describe_machine(device)}; load average at start: {load_average()}")
    print()
    print(
        "| workload | E x T | graphs / breaks | mode | compile, first call (s) | recompile, E/2 (s) | eager (ms) "
        "| compiled (ms) "
        "| eager/compiled (medians) | (minima) | max abs diff loss | max abs diff grads |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for workload in workloads():
            if args.quick and not workload.quick:
                continue
            if args.only is not None and not any(workload.name.startswith(prefix) for prefix in args.only):
                continue
            sizes = f"{workload.n_episodes} x {workload.n_rounds}"
            try:
                result = run(workload, device, modes, args.quick, args.seed, root)
            except Exception as error:  # keep the table going
                print(
                    f"| {workload.name} | {sizes} | — | — | {first_line(error)} | — | — | — | — | — | — | — |",
                    flush=True,
                )
                continue
            eager = statistics.median(result.eager)
            for variant in result.variants:
                recompile = "—" if variant.recompile_s is None else f"{variant.recompile_s:.1f}"
                if variant.error is not None or not variant.times:
                    compile_s = "—" if variant.compile_s is None else f"{variant.compile_s:.1f}"
                    reason = variant.error or "no timings"
                    print(
                        f"| {workload.name} | {sizes} | {result.breaks} | {variant.mode} | {compile_s} | {recompile} "
                        f"| {1e3 * eager:.2f} | failed: {reason} | — | — | — | — |",
                        flush=True,
                    )
                    continue
                compiled = statistics.median(variant.times)
                print(
                    f"| {workload.name} | {sizes} | {result.breaks} | {variant.mode} | {variant.compile_s:.1f} "
                    f"| {recompile} | {1e3 * eager:.2f} | {1e3 * compiled:.2f} | {eager / compiled:.2f}× "
                    f"| {min(result.eager) / min(variant.times):.2f}× | {variant.loss_diff:.1e} "
                    f"| {variant.grad_diff:.1e} |",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
