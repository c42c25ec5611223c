"""Our training steps against the published DIML code, on the same saved traces and the same weights.

The published experiment script (GitHub ryeii/DIML-Differentiable-Inverse-Mechanism-Learning, no licence)
is *not* part of this repository: fetch it yourself and pass its directory. It is imported unmodified from
there (``run_experiments.py``), never copied::

    git clone https://github.com/ryeii/DIML-Differentiable-Inverse-Mechanism-Learning /tmp/diml-ref
    python benchmarks/reference.py --reference-dir /tmp/diml-ref            # every workload, 1 thread
    python benchmarks/reference.py --reference-dir /tmp/diml-ref --quick    # E1, E4 n40 only, 3 repeats
    python benchmarks/reference.py --reference-dir /tmp/diml-ref --device cuda   # both sides on a GPU

For every workload the script records the traces with ``mechgym.rollout`` (the game's ground truth and its
learner), saves and reloads them (both sides read the same file), builds our model and copies its weights
into the published code's model of the same architecture. Then:

1. **Agreement.** Both sides' negative log-likelihood of the same minibatch, without the payoff penalty (the
   published code regularises the payoffs of every round, ours those of the scored rounds), must agree to a
   relative ``1e-6``; the script stops otherwise. The gradients of the shared weights are compared too.
2. **Timing.** The two sides take turns in one process (published, ours, published, ours, ...), so both see
   the same background load; the table gives the minimum and the median of each and the ratio of minima and
   of medians. In a minibatch turn each side repeats its step back to back for ``--turn-seconds`` (0.25 s: two
   published steps of E1, about 150 of ours) and counts the mean, as in a training loop. A *minibatch* is one
   forward and backward pass of the training loss (the published
   ``DIMLTrainer.nll_batch``; ours as ``diml_inverse.fit`` computes it, with the payoff-table index that a
   fit makes once for its training episodes). An *epoch* is one training epoch
   (the published ``DIMLTrainer.fit`` with ``epochs=1``; ours ``diml_inverse.fit(..., epochs=1)``'s epoch
   time, with the same episodes, batch size and optimiser, no held-out split).
3. **Limit.** ``benchmarks/limit.py``: the FLOPs of the mechanism's dense layers, forward and backward,
   over the distinct counterfactual rows, at this machine's fp32 GEMM rate measured at those shapes in the
   same process. ``% of limit`` is the limit's time divided by ours (100 %: as fast as the GEMMs alone).

The workloads are the issue's (E1 minibatch 32 x 50, E4 n40 epoch, E4 n300 minibatch 4 x 25), the E2 and E3
minibatches, and the E4 n80-n200 minibatches and epochs. Prints a Markdown table (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
from _common import describe_machine, load_average, seconds
from limit import distinct_rows, limit_seconds
from torch import Tensor, nn

import diml_inverse
import mechgym
from diml_inverse.likelihood import trace_terms
from mechgym.learners import LogitQ
from mechgym.mechanisms import AnonymousCountMechanism, Mechanism, NeuralJointMechanism
from mechgym.mechanisms.tables import TableIndex

E1_E3_LEARNER = LogitQ(alpha=0.25, beta=3.0, epsilon=0.06)
E4_LEARNER = LogitQ(alpha=0.2, beta=6.0, epsilon=0.02)
PAYOFF_L2 = 1e-4  # both sides' default penalty
LOSS_RTOL = 1e-6


@dataclass(frozen=True)
class Workload:
    """``kind`` of work on traces of ``n_episodes x n_rounds`` recorded in ``env_id``.

    ``minibatch``: the first ``batch`` episodes and ``rounds`` rounds. ``epoch``: the first 80 % of the
    episodes (the published split), in minibatches of ``batch``.
    """

    name: str
    env_id: str
    n_agents: int
    n_actions: int
    n_episodes: int
    n_rounds: int
    kind: Literal["minibatch", "epoch"]
    batch: int
    rounds: int
    quick: bool = False
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return self.env_id == "mechgym/AnonymousGame-v0"

    @property
    def learner(self) -> LogitQ:
        return E4_LEARNER if self.anonymous else E1_E3_LEARNER


def workloads() -> list[Workload]:
    small = [
        Workload("E1 minibatch 32x50", "mechgym/NeuralMechanism-v0", 3, 6, 60, 60, "minibatch", 32, 50, quick=True),
        Workload(
            "E2 minibatch 32x50",
            "mechgym/Congestion-v0",
            4,
            5,
            60,
            60,
            "minibatch",
            32,
            50,
            env_kwargs={"pricing": "subsidy"},
        ),
        Workload("E3 minibatch 32x50", "mechgym/PublicGoods-v0", 3, 7, 60, 60, "minibatch", 32, 50),
    ]
    large = []
    for n, a, e, t in ((40, 10, 24, 30), (80, 20, 24, 30), (120, 25, 24, 30), (200, 30, 20, 30), (300, 40, 16, 25)):
        batch = 4 if n == 300 else 8  # n300: the 4 x 25 (the last minibatch of 12 training episodes)
        env = "mechgym/AnonymousGame-v0"
        large.append(Workload(f"E4 n{n} minibatch {batch}x{t}", env, n, a, e, t, "minibatch", batch, t, quick=n == 40))
        large.append(Workload(f"E4 n{n} training epoch", env, n, a, e, t, "epoch", 8, t, quick=n == 40))
    return small + large


# -- the published code ------------------------------------------------------------------------------
def load_reference(directory: Path) -> ModuleType:
    """Import ``run_experiments.py`` from the user's checkout of the published code, unmodified."""
    script = directory / "run_experiments.py"
    if not script.is_file():
        raise SystemExit(
            f"--reference-dir {directory} has no run_experiments.py; clone "
            "https://github.com/ryeii/DIML-Differentiable-Inverse-Mechanism-Learning there first"
        )
    spec = importlib.util.spec_from_file_location("diml_published_run_experiments", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(module)
    return module


def published_model(ref: ModuleType, ours: Mechanism) -> nn.Module:
    """The published code's model of ``ours``'s architecture, with ``ours``'s weights."""
    if isinstance(ours, AnonymousCountMechanism):
        model = ref.SymmetricCountMechanism(ours.n_actions, hidden=ours.hidden, depth=2)
        model.a_emb.weight.data.copy_(ours.embedding.weight.data)
    elif isinstance(ours, NeuralJointMechanism):
        model = ref.NeuralJointMechanism(ours.n_agents, ours.n_actions, hidden=ours.hidden, depth=2)
        per_agent = ours.embedding.weight.data.view(ours.n_agents, ours.n_actions, ours.embed_dim)
        for i, table in enumerate(model.embs):
            table.weight.data.copy_(per_agent[i])
    else:
        raise TypeError(type(ours).__name__)
    for index, layer in zip((0, 2, 4), (ours.layer1, ours.layer2, ours.layer3), strict=True):
        model.net[index].weight.data.copy_(layer.weight.data)
        model.net[index].bias.data.copy_(layer.bias.data)
    return model


def published_trainer(
    ref: ModuleType, model: nn.Module, workload: Workload, payoff_l2: float, device: torch.device
) -> Any:
    """The published ``DIMLTrainer`` with the published optimiser settings for the workload's block."""
    learner = workload.learner
    rule = ref.LogitQRule(workload.n_agents, workload.n_actions, learner.alpha, learner.beta, learner.epsilon)
    config = ref.TrainCfg(
        epochs=1,
        batch_size=workload.batch,
        lr=1e-3,
        trunc_bptt=workload.n_rounds,  # whole episodes, as ours
        verbose_every=10**9,
        reg_l2_pay=payoff_l2,
    )
    return ref.DIMLTrainer(model, rule, workload.n_agents, workload.n_actions, device, config, workload.anonymous)


# -- ours ----------------------------------------------------------------------------------------------
def our_model(workload: Workload, device: torch.device) -> Mechanism:
    if workload.anonymous:
        return AnonymousCountMechanism(workload.n_agents, workload.n_actions, seed=1).to(device)
    return NeuralJointMechanism(workload.n_agents, workload.n_actions, seed=1).to(device)


def our_loss(
    model: Mechanism, batch: Tensor, learner: LogitQ, payoff_l2: float, index: TableIndex | None = None
) -> tuple[Tensor, Tensor]:
    """``(loss, nll)`` of one minibatch as ``diml_inverse.fit`` computes it (NLL per term + payoff penalty).

    ``index``: the payoff-table index of the batch, which a fit makes once for its training episodes.
    """
    log_probs, realised = trace_terms(model, batch, learner, validate=False, table_index=index)
    nll = -log_probs.sum() / log_probs.numel()
    return nll + payoff_l2 * realised.pow(2).sum() / log_probs.numel(), nll


def record_traces(workload: Workload, directory: Path) -> mechgym.TraceDataset:
    """Record, save and reload the workload's traces (both sides read the reloaded file)."""
    env = mechgym.make(workload.env_id, n_agents=workload.n_agents, n_actions=workload.n_actions, **workload.env_kwargs)
    traces = mechgym.rollout(env, workload.learner, n_episodes=workload.n_episodes, n_rounds=workload.n_rounds, seed=0)
    path = directory / f"{workload.name.replace(' ', '_')}.parquet"
    traces.save(path)
    return mechgym.load_traces(path)


# -- whole blocks ----------------------------------------------------------------------------------------
#: E1-E3 as the published ``main()`` runs them: (agents, actions, truth class, structured model class, tabular
#: baseline); every block fits all its models for 100 epochs with the per-epoch evaluation.
BLOCKS: dict[str, tuple[int, int, str, str | None, bool]] = {
    "E1": (3, 6, "NeuralJointMechanism", None, True),
    "E2": (4, 5, "CongestionParamMechanism", "CongestionParamMechanism", True),
    "E3": (3, 7, "PublicGoodsParamMechanism", "PublicGoodsParamMechanism", False),
}


def published_block(ref: ModuleType, name: str, device: torch.device) -> float:
    """Seconds of the published ``run_small_medium_experiment`` for block ``name``, with ``main()``'s settings."""
    n, a, truth_class, structured_class, tabular = BLOCKS[name]

    def model(class_name: str) -> nn.Module:
        cls = getattr(ref, class_name)
        return (cls(n, a, hidden=128, depth=2) if class_name == "NeuralJointMechanism" else cls(n, a)).to(device)

    ref.set_seed(0)
    truth = model(truth_class)
    for parameter in truth.parameters():
        parameter.requires_grad = False
    diml = model("NeuralJointMechanism")
    diml.init_args = (n, a, 128, 2)  # the published runner rebuilds DIML-Wrong from these
    structured = model(structured_class) if structured_class is not None else None
    learner = ref.LearnerCfg(alpha=E1_E3_LEARNER.alpha, beta=E1_E3_LEARNER.beta, eps=E1_E3_LEARNER.epsilon)
    arguments = {
        "data_cfg": ref.DataCfg(n_episodes=60, horizon=60, train_frac_time=1.0, static_only_last_frac=0.0),
        "train_cfg": ref.TrainCfg(
            epochs=100, batch_size=32, lr=1e-3, trunc_bptt=50, verbose_every=10, reg_l2_pay=PAYOFF_L2
        ),
        "gen_cfg": learner,
        "infer_cfg": learner,
        "eval_cfg": ref.EvalCfg(
            probe_k=8000, cf_alpha_scale=0.6, cf_beta_scale=1.4, cf_eps_scale=1.5, cf_initq_std=0.6, ece_bins=15
        ),
    }

    def block() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            ref.run_small_medium_experiment(
                name, truth, diml, structured, n, a, device=device, enable_tabular=tabular, **arguments
            )

    return seconds(block, device)


def our_block(name: str, device: torch.device) -> float:
    """Seconds of our experiment runner's block ``name`` (seed 0: data, every method, per-epoch evaluation)."""
    from diml_inverse.experiments.configs import experiment_config
    from diml_inverse.experiments.runner import run_game

    config = experiment_config(name.lower())
    return seconds(lambda: run_game(config, config.games[0], 0, device=device, progress=False), device)


BlockRow = tuple[str, list[float], list[float]]


def run_blocks(ref: ModuleType, names: list[str], repeats: int, device: torch.device) -> list[BlockRow]:
    """``(name, published seconds, our seconds)`` of each block, the two sides alternating."""
    rows = []
    for name in names:
        published, ours = [], []
        for _ in range(repeats):
            published.append(published_block(ref, name, device))
            ours.append(our_block(name, device))
        print(f"{name} block: done, load average {load_average()}", file=sys.stderr, flush=True)
        rows.append((name, published, ours))
    return rows


def print_blocks(rows: list[BlockRow]) -> None:
    print(
        "| block (all models, per-epoch evaluation) | published min / median (s) | ours min / median (s) "
        "| ratio (minima) | ratio (medians) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, published, ours in rows:
        p_min, p_med, o_min, o_med = min(published), statistics.median(published), min(ours), statistics.median(ours)
        print(
            f"| {name} | {p_min:,.1f} / {p_med:,.1f} | {o_min:,.2f} / {o_med:,.2f} | {p_min / o_min:.1f}× "
            f"| {p_med / o_med:.1f}× |"
        )


# -- one workload ----------------------------------------------------------------------------------------
@dataclass
class Row:
    workload: Workload
    published: list[float]
    ours: list[float]
    loss_rel: float
    grad_rel: float
    limit: float
    gflop: float


def check_agreement(ref: ModuleType, workload: Workload, ours: Mechanism, batch: Tensor) -> tuple[float, float]:
    """Relative differences of the two sides' NLL and of the gradients of the hidden layer's weight."""
    device = batch.device
    theirs = published_model(ref, ours).to(device)
    trainer = published_trainer(ref, theirs, workload, 0.0, device)
    their_nll = trainer.nll_batch(batch) / ((batch.shape[1] - 1) * batch.shape[2])  # its sum over rounds of n x mean
    ours.zero_grad(set_to_none=True)
    _, our_nll = our_loss(ours, batch, workload.learner, 0.0)
    our_nll.backward()
    their_nll.backward()
    theirs_value, ours_value = float(their_nll.detach()), float(our_nll.detach())
    loss_rel = abs(theirs_value - ours_value) / abs(ours_value)
    grad_ours, grad_theirs = ours.layer2.weight.grad, theirs.net[2].weight.grad
    assert grad_ours is not None and grad_theirs is not None
    grad_rel = float((grad_ours - grad_theirs).norm() / grad_ours.norm())
    ours.zero_grad(set_to_none=True)
    if loss_rel > LOSS_RTOL:
        raise SystemExit(f"{workload.name}: the losses disagree: published {theirs_value!r}, ours {ours_value!r}")
    return loss_rel, grad_rel


def turn_seconds(step: Callable[[], object], device: torch.device, turn: float) -> float:
    """Mean seconds per call of ``step`` called back to back until ``turn`` seconds have passed (at least once).

    A training loop runs its steps back to back; a single call after the other side's turn would also time
    the caches and the allocator warming up again, which is most of a millisecond-long step.
    """
    calls, elapsed = 0, 0.0
    while calls == 0 or elapsed < turn:
        elapsed += seconds(step, device)
        calls += 1
    return elapsed / calls


def timers(
    ref: ModuleType, workload: Workload, traces: mechgym.TraceDataset, device: torch.device, turn: float
) -> tuple[Callable[[], float], ...]:
    """``(published, ours)``: each call runs the work on ``device`` and returns its seconds per run.

    A minibatch turn repeats the step for ``turn`` seconds (:func:`turn_seconds`); an epoch runs once.
    """
    actions = traces.actions_tensor(device)
    ours = our_model(workload, device)
    theirs = published_model(ref, ours).to(device)
    if workload.kind == "minibatch":
        batch = actions[: workload.batch, : workload.rounds]
        trainer = published_trainer(ref, theirs, workload, PAYOFF_L2, device)

        def published_step() -> None:
            trainer.opt.zero_grad(set_to_none=True)
            trainer.nll_batch(batch).backward()

        index = ours.table_index(batch[:, :-1])  # made once per fit (a table game's), not per step

        def our_step() -> None:
            ours.zero_grad(set_to_none=True)
            our_loss(ours, batch, workload.learner, PAYOFF_L2, index)[0].backward()

        return (lambda: turn_seconds(published_step, device, turn)), (lambda: turn_seconds(our_step, device, turn))
    train, _ = traces.split(0.8)
    train_actions = train.actions_tensor(device)
    trainer = published_trainer(ref, theirs, workload, PAYOFF_L2, device)

    def published_epoch() -> float:
        with contextlib.redirect_stdout(io.StringIO()):
            return seconds(lambda: trainer.fit(train_actions, "reference", []), device)

    def our_epoch() -> float:
        result = diml_inverse.fit(
            None,
            train,
            model=ours,
            learner=workload.learner,
            epochs=1,
            batch_size=workload.batch,
            valid_fraction=0.0,
            device=str(device),
            progress=False,
        )
        return float(result.history[0]["seconds"])

    return published_epoch, our_epoch


def run(ref: ModuleType, workload: Workload, directory: Path, repeats: int, device: torch.device, turn: float) -> Row:
    traces = record_traces(workload, directory)
    actions = traces.actions_tensor()
    ours = our_model(workload, device)
    agreement_batch = actions[: workload.batch, : workload.rounds]
    loss_rel, grad_rel = check_agreement(ref, workload, ours, agreement_batch.to(device))
    published, our = timers(ref, workload, traces, device, turn)
    published_times, our_times = [], []
    for _ in range(repeats):  # alternate, so both see the same load
        published_times.append(published())
        our_times.append(our())
    # the limit: an epoch's rows are those of all its training episodes (each scored once per epoch)
    work = agreement_batch if workload.kind == "minibatch" else actions[: int(actions.shape[0] * 0.8)]
    bound, flops = limit_seconds(ours, distinct_rows(ours, work), device)
    return Row(workload, published_times, our_times, loss_rel, grad_rel, bound, flops / 1e9)


def print_table(rows: list[Row]) -> None:
    print(
        "| workload | published min / median (ms) | ours min / median (ms) | ratio (minima) | ratio (medians) "
        "| limit (ms) | % of limit | GFLOP | loss rel. diff | grad rel. diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        p_min, p_med = min(row.published), statistics.median(row.published)
        o_min, o_med = min(row.ours), statistics.median(row.ours)
        cells = [
            row.workload.name,
            f"{p_min * 1e3:,.1f} / {p_med * 1e3:,.1f}",
            f"{o_min * 1e3:,.1f} / {o_med * 1e3:,.1f}",
            f"{p_min / o_min:.1f}×",
            f"{p_med / o_med:.1f}×",
            f"{row.limit * 1e3:,.1f}",
            f"{100 * row.limit / o_min:.0f} %",
            f"{row.gflop:.2f}",
            f"{row.loss_rel:.1e}",
            f"{row.grad_rel:.1e}",
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", type=Path, required=True, help="a checkout of the published DIML code")
    parser.add_argument("--quick", action="store_true", help="E1 and E4 n40 only, 3 repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides run")
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 5; --quick 3)")
    parser.add_argument("--only", nargs="*", default=None, help="workloads whose name contains one of these")
    parser.add_argument(
        "--blocks",
        nargs="*",
        default=None,
        choices=sorted(BLOCKS),
        help="time these whole blocks (E1 E2 E3: every model, 100 epochs, per-epoch evaluation; minutes each); "
        "alone it runs only them, with --only or --quick the chosen workloads too",
    )
    parser.add_argument("--block-repeats", type=int, default=1, help="alternating repeats of each block (default 1)")
    parser.add_argument(
        "--turn-seconds",
        type=float,
        default=0.25,
        help="a minibatch turn repeats its step back to back for this long and gives the mean (default 0.25)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    torch.set_num_threads(args.threads)
    ref = load_reference(args.reference_dir.resolve())
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    chosen = [w for w in workloads() if not args.quick or w.quick]
    if args.blocks and args.only is None and not args.quick:
        chosen = []  # --blocks alone: only the blocks
    if args.only:
        chosen = [w for w in chosen if any(part in w.name for part in args.only)]
    started = time.perf_counter()
    print(f"machine: {describe_machine(device)}; load average {load_average()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for workload in chosen:
            rows.append(run(ref, workload, Path(directory), repeats, device, args.turn_seconds))
            print(f"{workload.name}: done, load average {load_average()}", file=sys.stderr, flush=True)
    if rows:
        print_table(rows)
        print(f"\n{repeats} alternating repeats, {time.perf_counter() - started:.0f} s; load average {load_average()}")
    if args.blocks:
        print_blocks(run_blocks(ref, list(args.blocks), args.block_repeats, device))
        print(f"\n{args.block_repeats} alternating repeats per block; load average {load_average()}")


if __name__ == "__main__":
    main()
