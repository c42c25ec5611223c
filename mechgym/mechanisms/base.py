"""The mechanism interface: a torch module from joint actions to every agent's payoff.

Shapes: ``N`` agents, ``A`` actions per agent, ``...`` any leading batch dimensions (episodes, rounds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mechgym.constants import constant_tensors
from mechgym.devices import device_of
from mechgym.errors import ConfigurationError, InvalidActionError
from mechgym.mechanisms.tables import TableIndex, gather_counterfactuals, gather_table, table_index
from mechgym.memory import check_memory
from mechgym.validation import COUNTER_LIMIT, check_int, check_seed

#: Games with at most this many joint actions evaluate counterfactuals by gathering from a payoff table.
DEFAULT_MAX_TABLE_SIZE = 4096
#: The generic path of :meth:`Mechanism.deviation_payoffs` runs forward passes of at most about this many actions.
DEVIATION_CHUNK_ELEMENTS = 1 << 22
#: Payoff tables of at most this many joint actions keep their input (every joint action) between calls.
CACHED_JOINT_ACTIONS = 1 << 16


def validate_joint_actions(joint_actions: Tensor, n_agents: int, n_actions: int, where: str = "") -> None:
    """Raise :class:`InvalidActionError` unless ``joint_actions`` is an integer tensor ``[..., N]`` in range.

    Call this at boundaries (``step``, dataset load, ``fit``), not in inner loops.
    """
    label = f" for {where}" if where else ""
    if not isinstance(joint_actions, Tensor):
        raise InvalidActionError(f"joint actions{label} must be a torch tensor; got {type(joint_actions).__name__}")
    if joint_actions.dtype.is_floating_point or joint_actions.dtype.is_complex or joint_actions.dtype == torch.bool:
        raise InvalidActionError(
            f"joint actions{label} must be integers (torch.long); got dtype {joint_actions.dtype}. "
            "Convert with .long() if the values are whole numbers."
        )
    if joint_actions.dim() == 0 or joint_actions.shape[-1] != n_agents:
        raise InvalidActionError(
            f"joint actions{label} must have shape [..., {n_agents}] (one action per agent); "
            f"got shape {tuple(joint_actions.shape)}"
        )
    if joint_actions.numel() == 0:
        return
    bad = (joint_actions < 0) | (joint_actions >= n_actions)
    if bool(bad.any()):
        where_bad = [int(i) for i in bad.nonzero()[0].tolist()]
        value = int(joint_actions[tuple(where_bad)])
        raise InvalidActionError(
            f"actions{label} must be integers in [0, {n_actions}); got {value} at index {tuple(where_bad)} "
            "(the last index is the agent)"
        )


def all_joint_actions(n_agents: int, n_actions: int, device: torch.device | str | None = None) -> Tensor:
    """Every joint action in lexicographic order (agent 0 most significant): LongTensor ``[A**N, N]``."""
    grids = torch.meshgrid(*[torch.arange(n_actions, device=device)] * n_agents, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=-1)


@constant_tensors(maxsize=32)
def _cached_joint_actions(n_agents: int, n_actions: int, device: torch.device) -> Tensor:
    """:func:`all_joint_actions`, made once per size and device (read-only: the payoff table's input)."""
    return all_joint_actions(n_agents, n_actions, device)


class Mechanism(nn.Module):
    """A map from joint actions ``LongTensor[..., N]`` to payoffs ``Tensor[..., N]``.

    Subclasses implement :meth:`forward`; :meth:`counterfactual_payoffs` works for every subclass by
    enumeration and takes faster paths where the game allows it (a payoff table for small games, the
    (own action, alternative action) rows of anonymous games).

    Attributes:
        n_agents: Number of agents ``N``.
        n_actions: Actions per agent ``A``.
        family: Registered name of the mechanism family (used to save and rebuild it).
        max_table_size: Games with at most this many joint actions use the payoff-table path.
        linear_in_parameters: Whether the payoffs are a linear function of the parameters (then the evidence's
            Hessian through the payoff table needs no second-order term of the model).
    """

    family: ClassVar[str] = ""
    anonymous: ClassVar[bool] = False
    linear_in_parameters: ClassVar[bool] = False
    max_table_size: int = DEFAULT_MAX_TABLE_SIZE

    def __init__(self, n_agents: int, n_actions: int) -> None:
        super().__init__()
        self.n_agents = check_int(n_agents, "n_agents", low=2, high=COUNTER_LIMIT)
        self.n_actions = check_int(n_actions, "n_actions", low=2, high=2**31)
        self._frozen = False
        self._table_cache: dict[tuple[str, torch.dtype], tuple[Tensor, list[Tensor]]] = {}

    # -- the interface -------------------------------------------------------------------------
    def forward(self, joint_actions: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Payoffs ``[..., N]`` of the joint actions ``[..., N]``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serialisable) that rebuild this mechanism's architecture."""
        return {"n_agents": self.n_agents, "n_actions": self.n_actions}

    @property
    def n_joint_actions(self) -> int:
        """``A**N``, the size of the joint action space (a Python int, may be astronomically large)."""
        return self.n_actions**self.n_agents

    def counterfactual_payoffs(self, joint_actions: Tensor, agents: Tensor | None = None) -> Tensor:
        """Counterfactual payoffs ``[..., N, A]``: entry ``[i, a]`` is ``M(a, a_-i)[i]`` (paper Eq. 1).

        Args:
            joint_actions: LongTensor ``[..., N]``.
            agents: Optional LongTensor ``[K]`` of agent indices: return only their rows, ``[..., K, A]``.
        """
        if self._use_table(joint_actions):
            return gather_counterfactuals(self.payoff_table(), joint_actions, self.n_actions, agents)
        return self._structured_counterfactual_payoffs(joint_actions, agents)

    def counterfactual_and_realised_payoffs(
        self, joint_actions: Tensor, agents: Tensor | None = None, *, index: TableIndex | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`counterfactual_payoffs` ``[..., K, A]`` and the realised payoffs ``M(a)[i]`` ``[..., K]``.

        The realised payoffs are the counterfactual ones read at the played actions. A game with a payoff table
        reads both from one table (the realised ones straight from it: a backward pass into the ``A**N x N``
        table instead of the ``[..., K, A]`` payoffs); the values are the same.

        Args:
            joint_actions: LongTensor ``[..., N]``.
            agents: Optional LongTensor ``[K]`` of agent indices, as in :meth:`counterfactual_payoffs`.
            index: These joint actions' :meth:`table_index` (and ``agents``'), made once for traces that are
                scored many times (a fit's training episodes); ``None`` computes what is needed. It must be the
                index of exactly ``joint_actions`` and ``agents``.
        """
        if index is not None:
            return index.gather(self.payoff_table())
        if self._table_shortcut(joint_actions):
            return gather_table(self.payoff_table(), joint_actions, self.n_actions, agents, with_realised=True)
        own = joint_actions if agents is None else joint_actions[..., agents]
        payoffs = self.counterfactual_payoffs(joint_actions, agents)
        return payoffs, payoffs.gather(-1, own[..., None]).squeeze(-1)

    def table_index(self, traces: Tensor) -> TableIndex | None:
        """Where the counterfactual and realised payoffs of ``traces`` sit in this game's payoff table.

        For :meth:`counterfactual_and_realised_payoffs` ``(index=...)`` of these traces, or of some of their
        episodes and agents (:meth:`~mechgym.mechanisms.tables.TableIndex.select`): a fit makes it once for its
        training episodes instead of once per minibatch.

        Args:
            traces: Joint actions ``[E, T, N]``.

        Returns:
            The index, or ``None`` for a game without a payoff table (or one that computes its counterfactual
            payoffs its own way).
        """
        if traces.dim() != 3 or not self._table_shortcut(traces):
            return None
        return table_index(traces, self.n_actions)

    def _table_shortcut(self, joint_actions: Tensor) -> bool:
        # the table's shortcut only where counterfactual_payoffs is this class's own (a subclass may override it)
        return self._use_table(joint_actions) and type(self).counterfactual_payoffs is Mechanism.counterfactual_payoffs

    def counterfactual_payoffs_batch_invariant(self, joint_actions: Tensor) -> Tensor:
        """:meth:`counterfactual_payoffs` whose every value is independent of the batch it is computed in.

        A matrix product's rounding depends on how many rows it gets (and on the thread count and the BLAS
        kernel chosen for that shape), so the same joint action can get payoffs that differ in the last bit in
        a one-episode environment step and in a batched rollout. Here every value comes from a call of one fixed
        shape: games with a payoff table gather from the table (one forward pass over every joint action);
        other games evaluate each *distinct* unit of the batch on its own — the others' action counts in
        anonymous games, the joint action otherwise. The environment's ``step``, :func:`mechgym.rollout` and
        every simulation use this, so they are bit-identical at any batch size and thread count.

        Args:
            joint_actions: LongTensor ``[..., N]``.

        Returns:
            ``[..., N, A]``, equal to :meth:`counterfactual_payoffs` up to float rounding.
        """
        if self._use_table(joint_actions):
            return gather_counterfactuals(self.payoff_table(), joint_actions, self.n_actions)
        flat = joint_actions.reshape(-1, self.n_agents)
        units, inverse = torch.unique(self._invariance_units(flat), dim=0, return_inverse=True)
        per_unit = torch.cat([self._unit_counterfactuals(units[k : k + 1]) for k in range(units.shape[0])])
        return self._expand_units(per_unit, inverse, flat).reshape(*joint_actions.shape, self.n_actions)

    def _invariance_units(self, flat_joint_actions: Tensor) -> Tensor:
        """The rows ``[B, ...]`` whose distinct values :meth:`counterfactual_payoffs_batch_invariant` evaluates."""
        return flat_joint_actions

    def _unit_counterfactuals(self, unit: Tensor) -> Tensor:
        """The counterfactual payoffs of one unit ``[1, ...]`` (a joint action here): ``[1, N, A]``."""
        return self._structured_counterfactual_payoffs(unit)

    def _expand_units(self, per_unit: Tensor, inverse: Tensor, flat_joint_actions: Tensor) -> Tensor:
        """Counterfactual payoffs ``[B, N, A]`` of the batch from those of its distinct units."""
        return per_unit[inverse]

    def deviation_payoffs(self, joint_actions: Tensor, agents: Tensor, actions: Tensor) -> Tensor:
        """Payoffs of single deviations: entry ``[k, d]`` is ``M(actions[k, d], a_-i)[i]`` (paper Eq. 1).

        Here ``i = agents[k]`` and ``a_-i`` are the others' actions in ``joint_actions[k]``: the counterfactual
        payoffs read at ``D`` chosen actions of one agent per row, for when the whole ``[K, N, A]`` of
        :meth:`counterfactual_payoffs` would be wasted (e.g. the payoff differences of diff_mse). Games with a
        payoff table gather from it; other games run forward passes over the deviated joint actions ``[K, D, N]``
        (at most :data:`DEVIATION_CHUNK_ELEMENTS` actions at once), anonymous ones evaluate
        :meth:`AnonymousMechanism.payoff_from_counts` on the others' counts (``D`` evaluations per row).

        Args:
            joint_actions: LongTensor ``[K, N]``.
            agents: The deviating agent of each row, LongTensor ``[K]``.
            actions: Its actions, LongTensor ``[K, D]``.

        Returns:
            ``[K, D]`` on the mechanism's device (the inputs are moved there).
        """
        device = self._device()
        joint, agents, actions = (x.to(device) for x in (joint_actions, agents, actions))
        if not self._use_table(joint):
            return self._structured_deviation_payoffs(joint, agents, actions)
        strides = self.n_actions ** torch.arange(self.n_agents - 1, -1, -1, device=device)
        own = joint.gather(-1, agents[:, None])  # [K, 1]
        index = (joint * strides).sum(-1, keepdim=True) + (actions - own) * strides[agents][:, None]  # [K, D]
        return self.payoff_table()[index, agents[:, None]]

    def _structured_deviation_payoffs(self, joint_actions: Tensor, agents: Tensor, actions: Tensor) -> Tensor:
        """The non-table path of :meth:`deviation_payoffs`: forward passes over the deviated joint actions."""
        k, d = actions.shape
        deviated = joint_actions[:, None, :].repeat(1, d, 1)  # [K, D, N]
        deviated.scatter_(-1, agents[:, None, None].expand(k, d, 1), actions[..., None])
        chunk = max(1, DEVIATION_CHUNK_ELEMENTS // (d * self.n_agents))
        pieces = [
            self(deviated[s : s + chunk]).gather(-1, agents[s : s + chunk, None, None].expand(-1, d, 1))
            for s in range(0, k, chunk)
        ]
        return torch.cat(pieces).squeeze(-1)

    def counterfactual_payoffs_generic(self, joint_actions: Tensor, agents: Tensor | None = None) -> Tensor:
        """Reference implementation of :meth:`counterfactual_payoffs`: one forward pass over ``[..., K, A, N]``."""
        n, a = self.n_agents, self.n_actions
        device = joint_actions.device
        agents = torch.arange(n, device=device) if agents is None else agents
        is_deviator = agents[:, None, None] == torch.arange(n, device=device)  # [K(i), 1, N(j)]
        alternatives = torch.arange(a, device=device)[None, :, None]  # [1, A, 1]
        deviations = torch.where(is_deviator, alternatives, joint_actions[..., None, None, :])  # [..., K, A, N]
        payoffs = self(deviations)  # [..., K, A, N]
        index = agents[:, None, None].expand(*payoffs.shape[:-1], 1)
        return payoffs.gather(-1, index).squeeze(-1)

    def prior_penalty(self) -> Tensor | None:
        """The model's negative log prior (up to a constant), which a fit adds to its summed NLL; ``None``: none.

        Families written as models with a prior (:class:`~mechgym.mechanisms.InteractionMechanism`) override it;
        the penalty is on the scale of the summed negative log-likelihood of the whole training set (a MAP fit).
        """
        return None

    def prior_classes(self) -> Tensor | None:
        """``[P]`` integer labels of the parameters (flattened in ``parameters()`` order) such that a diagonal
        :meth:`prior_precision` is the same within a label at every value of the prior's arguments (the interaction
        model's order), which lets the evidence search precompute per label; ``None`` (the default): unknown."""
        return None

    def prior_precision(self) -> Tensor | None:
        """The Hessian of :meth:`prior_penalty` (a Gaussian prior's precision) in closed form, over the mechanism's
        parameters flattened in ``parameters()`` order: ``[P]`` when the prior is independent across parameters (the
        diagonal), else ``[P, P]``. ``None`` (the default): not known, and the evidence computes it by automatic
        differentiation (``P`` Hessian-vector products of the penalty).
        """
        return None

    def payoff_table(self) -> Tensor:
        """Payoffs of every joint action, ``[A**N, N]`` in the order of :func:`all_joint_actions`.

        Cached while the mechanism is frozen, for the device, the dtype and the exact values of every parameter
        and buffer: the cache keeps a copy of them and is used only while they are unchanged (so an in-place
        change of a weight, even through ``.data``, recomputes the table). Never cached while a parameter
        requires gradients and gradient recording is on (the table must then carry its graph).
        """
        if self.n_joint_actions > max(self.max_table_size, 1 << 20):
            raise ConfigurationError(
                f"{type(self).__name__} has {self.n_actions}**{self.n_agents} joint actions: too many for a table"
            )
        device = self._device()
        cacheable = self._frozen and not (
            torch.is_grad_enabled() and any(parameter.requires_grad for parameter in self.parameters())
        )
        key = (str(device), self._dtype()) if cacheable else None
        tensors = [tensor.detach() for tensor in (*self.parameters(), *self.buffers())] if cacheable else []
        cached = self._table_cache.get(key) if key is not None else None
        if cached is not None:
            table, snapshot = cached
            if len(snapshot) == len(tensors) and all(
                old.shape == new.shape and torch.equal(old, new) for old, new in zip(snapshot, tensors, strict=True)
            ):
                return table
        small = self.n_joint_actions <= CACHED_JOINT_ACTIONS  # the input of every table of this size, kept
        joint = _cached_joint_actions if small else all_joint_actions
        table = self(joint(self.n_agents, self.n_actions, device))
        if key is not None:
            table = table.detach()
            self._table_cache = {key: (table, [tensor.clone() for tensor in tensors])}
        return table

    def freeze(self) -> Mechanism:
        """Stop gradients, switch to eval mode and cache the payoff table; returns ``self``."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()
        self._frozen = True
        self._table_cache.clear()
        return self

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` was called."""
        return self._frozen

    # -- helpers for subclasses ----------------------------------------------------------------
    def check_parameter_memory(self, n_parameters: int) -> None:
        """Refuse (:class:`~mechgym.memory.MemoryBudgetError`) before allocating parameters that cannot fit.

        Call it in ``__init__`` before building the layers, with the number of float32 parameters they hold.
        Under ``with torch.device("meta"):`` (a skeleton that allocates nothing, as ``fit``'s own estimate
        builds) there is nothing to check.
        """
        if torch.empty(0).device.type == "meta":
            return
        check_memory(
            4.0 * n_parameters,
            f"{type(self).__name__} with {self.n_agents} agents x {self.n_actions} actions "
            f"({n_parameters:,} parameters)",
            option=None,
        )

    def _structured_counterfactual_payoffs(self, joint_actions: Tensor, agents: Tensor | None = None) -> Tensor:
        """The fastest non-table path; the generic enumeration unless a subclass knows better."""
        return self.counterfactual_payoffs_generic(joint_actions, agents)

    def _use_table(self, joint_actions: Tensor) -> bool:
        # Independent of the batch size, so that one environment step and a batched rollout take the same path.
        return self.n_joint_actions <= self.max_table_size

    def _device(self) -> torch.device:
        return device_of(self)

    def _dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            if tensor.dtype.is_floating_point:
                return tensor.dtype
        return torch.get_default_dtype()

    def _apply(self, fn: Any, recurse: bool = True) -> Mechanism:  # .to(), .cuda(), .double()
        self._table_cache.clear()
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"n_agents={self.n_agents}, n_actions={self.n_actions}" + (", frozen" if self._frozen else "")


class AnonymousMechanism(Mechanism):
    """A mechanism in which agent i's payoff depends only on its own action and the others' action counts.

    Subclasses implement :meth:`payoff_from_counts`. Counterfactual payoffs then depend only on
    (own observed action, alternative action) within a round, so a round needs ``A x A`` evaluations
    instead of ``N x A``.
    """

    anonymous: ClassVar[bool] = True

    def payoff_from_counts(self, actions: Tensor, other_counts: Tensor) -> Tensor:  # pragma: no cover
        """Payoff of playing ``actions`` ``[...]`` when the others' action counts are ``other_counts`` ``[..., A]``."""
        raise NotImplementedError

    def counterfactual_rows(self, counts: Tensor) -> Tensor:
        """``F[..., o, a]``: payoff of playing ``a`` for an agent that played ``o``, given all counts ``[..., A]``.

        The others' counts are ``counts - onehot(o)``. Override for a faster closed form.
        """
        a = self.n_actions
        eye = torch.eye(a, device=counts.device, dtype=counts.dtype)
        other = (counts[..., None, :] - eye)[..., :, None, :].expand(*counts.shape[:-1], a, a, a)
        alternatives = torch.arange(a, device=counts.device).expand(*counts.shape[:-1], a, a)
        return self.payoff_from_counts(alternatives, other)

    def forward(self, joint_actions: Tensor) -> Tensor:
        counts = action_counts(joint_actions, self.n_actions, self._dtype())
        own = nn.functional.one_hot(joint_actions, self.n_actions).to(counts.dtype)
        return self.payoff_from_counts(joint_actions, counts[..., None, :] - own)

    #: Rows of counts per chunk when :meth:`counterfactual_rows_chunked` bounds memory.
    rows_chunk_size: int = 256

    def cache_rounds(self) -> int:
        """Rounds per piece when rows are built with gradients on the CPU (see :meth:`counterfactual_rows_chunked`).

        The default, :attr:`rows_chunk_size`, builds a chunk in one piece; families whose rows carry wide hidden
        activations return fewer, so that a piece's activations stay in the CPU's cache.
        """
        return self.rows_chunk_size

    def counterfactual_rows_chunked(self, counts: Tensor) -> Tensor:
        """:meth:`counterfactual_rows` over chunks of rounds; with gradients each chunk is checkpointed.

        The hidden activations of ``A x A`` deviations per round dominate memory in large games; checkpointing
        keeps only the rows ``[..., A, A]`` and recomputes a chunk's activations in the backward pass. With
        gradients on the CPU a chunk is built in pieces of :meth:`cache_rounds` rounds: the element-wise work
        of the forward and backward passes (activations, their gradients, the broadcast sums) then runs on
        data in the cache instead of main memory (docs/benchmarks.md). Every piece computes the same values.
        """
        flat = counts.reshape(-1, counts.shape[-1])
        keep_graph = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        rows = self._rows_in_pieces if keep_graph and flat.device.type == "cpu" else self.counterfactual_rows
        if flat.shape[0] <= self.rows_chunk_size:
            return rows(flat).reshape(*counts.shape, self.n_actions)
        chunks = []
        # torch.func transforms (the Hessians of diml_inverse.uncertainty) take no saved-tensor hooks: no checkpoint
        checkpointed = keep_graph and not torch._C._are_functorch_transforms_active()
        for chunk in flat.split(self.rows_chunk_size):
            if checkpointed:
                chunks.append(checkpoint(rows, chunk, use_reentrant=False))
            else:
                chunks.append(rows(chunk))
        return torch.cat(chunks).reshape(*counts.shape, self.n_actions)

    def _rows_in_pieces(self, flat_counts: Tensor) -> Tensor:
        pieces = flat_counts.split(max(1, self.cache_rounds()))
        if len(pieces) == 1:
            return self.counterfactual_rows(flat_counts)
        return torch.cat([self.counterfactual_rows(piece) for piece in pieces])

    def _invariance_units(self, flat_joint_actions: Tensor) -> Tensor:
        return action_counts(flat_joint_actions, self.n_actions, self._dtype())

    def _unit_counterfactuals(self, unit: Tensor) -> Tensor:
        return self.counterfactual_rows(unit)  # [1, A_own, A_alt]

    def _expand_units(self, per_unit: Tensor, inverse: Tensor, flat_joint_actions: Tensor) -> Tensor:
        return per_unit[inverse[:, None], flat_joint_actions]  # [B, N, A]: row (own action) of the round's unit

    def _structured_counterfactual_payoffs(self, joint_actions: Tensor, agents: Tensor | None = None) -> Tensor:
        counts = action_counts(joint_actions, self.n_actions, self._dtype())
        rows = self.counterfactual_rows_chunked(counts)  # [..., A_own, A_alt]
        own = joint_actions if agents is None else joint_actions[..., agents]
        return rows.gather(-2, own[..., None].expand(*own.shape, self.n_actions))

    def _structured_deviation_payoffs(self, joint_actions: Tensor, agents: Tensor, actions: Tensor) -> Tensor:
        dtype = self._dtype()
        own = joint_actions.gather(-1, agents[:, None])[:, 0]  # [K]
        others = action_counts(joint_actions, self.n_actions, dtype)  # [K, A], then less the agent's own action
        others = others - nn.functional.one_hot(own, self.n_actions).to(dtype)
        return self.payoff_from_counts(actions, others[:, None, :].expand(*actions.shape, self.n_actions))


def action_counts(joint_actions: Tensor, n_actions: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """How many agents play each action: ``[..., A]`` from joint actions ``[..., N]``."""
    counts = torch.zeros(*joint_actions.shape[:-1], n_actions, dtype=dtype, device=joint_actions.device)
    return counts.scatter_add_(-1, joint_actions, torch.ones_like(joint_actions, dtype=dtype))


def rowwise_linear(inputs: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``inputs @ weight.T + bias`` summed over the inputs in a fixed order.

    A matrix product's rounding can depend on how many rows it gets; this one does not, so a mechanism
    gives bit-identical payoffs for one environment step and for a batch of episodes. Use it where the
    reduction is short (counts over ``A`` actions, a single output unit).
    """
    if weight.shape[0] == 1:  # one output unit: one fused product and reduction
        out = (inputs * weight[0]).sum(-1, keepdim=True)
    else:
        out = inputs[..., 0, None] * weight[:, 0]
        for k in range(1, weight.shape[1]):
            out = out + inputs[..., k, None] * weight[:, k]
    return out if bias is None else out + bias


@contextlib.contextmanager
def seeded_init(seed: int | None) -> Iterator[None]:
    """Run module construction under ``torch.manual_seed(seed)`` without touching the global RNG state."""
    if seed is None:
        yield
        return
    seed = check_seed(seed, "the mechanism seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
