"""Level 2: kernel plans. A plan says what one kernel computes (a short list of level-1 ops),
what it loads and stores, which graph layout it walks, and how (a Schedule of knobs).

Plans are data: printable, hashable, comparable. ``KernelPlan.program()`` is the kernel's work as
a level-1 program whose inputs are exactly the values it loads, so a plan list can be checked
against the reference executor one kernel at a time.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from .cost import GraphStats, value_bytes
from .ops import Op
from .printer import format_node
from .program import Node, Program, freeze_attrs
from .types import Domain


class Strategy(enum.Enum):
    """How a kernel maps work to threads. Reductions into destinations are segmented (no
    atomics) in a DST_PARALLEL kernel; every other reduction uses atomics."""

    GEMM = "gemm"  # typed segment GEMM: rows grouped by type, one weight per segment
    WGRAD = "wgrad"  # per-type weight gradient: sum over the rows of a type of x^T dy
    DST_PARALLEL = "dst_parallel"  # a thread group per destination over its incoming edges
    EDGE_PARALLEL = "edge_parallel"  # a thread group per edge
    ROW_MAP = "row_map"  # a thread group per row of one domain


@dataclass(frozen=True)
class Schedule:
    """Knobs of a kernel; ``CHOICES`` lists the values each knob may take."""

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def knobs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.knobs().items())


@dataclass(frozen=True)
class GemmSchedule(Schedule):
    tile_rows: int = 64  # rows of the output tile a block computes
    tile_cols: int = 64  # columns of the output tile
    tile_k: int = 16  # reduction step held in shared memory
    thread_rows: int = 4  # output rows per thread
    thread_cols: int = 4  # output columns per thread
    vector_width: int = 1  # elements per load
    # weight gradients (split-K): each block sums at most this many rows of one type and adds its
    # partial gradient atomically, so a relation with many rows runs on many blocks
    split_rows: int = 4096
    # typed GEMMs on tensor cores (mma.sync) where the dtype allows: half and bfloat16 always,
    # float32 as TF32 only when torch.backends.cuda.matmul.allow_tf32 is set
    tensor_cores: bool = True

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "tile_rows": (16, 32, 64, 128), "tile_cols": (16, 32, 64, 128), "tile_k": (8, 16, 32),
        "thread_rows": (1, 2, 4, 8), "thread_cols": (1, 2, 4, 8), "vector_width": (1, 2, 4),
        "split_rows": (1024, 4096, 16384), "tensor_cores": (True, False),
    }


@dataclass(frozen=True)
class TraversalSchedule(Schedule):
    threads_per_row: int = 32  # threads sharing one row (a destination, an edge, a node)
    rows_per_block: int = 8  # rows one block handles
    edges_per_thread: int = 1  # rows one thread group takes in turn (edge-parallel kernels)
    vector_width: int = 1  # consecutive features each lane owns
    # per-destination kernels: a destination with more incoming edges than this takes a whole
    # block, whose thread groups split its edges (hubs would otherwise run on one group)
    hub_degree: int = 256

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "threads_per_row": (1, 4, 8, 16, 32), "rows_per_block": (1, 2, 4, 8, 16),
        "edges_per_thread": (1, 2, 4), "vector_width": (1, 2, 4), "hub_degree": (64, 256, 1024),
    }


@dataclass(frozen=True)
class CpuGemmSchedule(Schedule):
    """A typed segment GEMM on a CPU: one task per tile of rows of one type; a register
    micro-kernel of ``micro_rows`` x ``micro_cols`` outputs over the packed tile."""

    tile_rows: int = 64  # rows one task gathers and multiplies (also: the weight gradient's row block)
    micro_rows: int = 8  # output rows the micro-kernel keeps in registers
    micro_cols: int = 16  # output columns the micro-kernel keeps in registers
    # no generated code: the plan runs as torch ops, one torch.matmul per type (the BLAS that
    # torch links, MKL or OpenBLAS), where that measures faster (the tuner decides)
    blas: bool = False

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "tile_rows": (16, 32, 64, 128, 256), "micro_rows": (1, 2, 4, 6, 8), "micro_cols": (8, 16, 32, 64),
        "blas": (False, True),
    }


@dataclass(frozen=True)
class CpuTraversalSchedule(Schedule):
    """A traversal on a CPU: one row (destination, edge, node) per loop iteration, features
    vectorised; rows handed to threads in chunks of ``rows_per_task`` (dynamic schedule); a loop
    over a destination's edges prefetches the rows that the edge ``prefetch`` places ahead reads."""

    rows_per_task: int = 32
    prefetch: int = 4  # edges ahead whose rows a per-destination loop prefetches (0: none)

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"rows_per_task": (1, 4, 16, 32, 64, 256, 1024),
                                                     "prefetch": (0, 2, 4, 8, 16)}


def runs_on_blas(plan: "KernelPlan") -> bool:
    """Whether ``plan`` is a C++ GEMM scheduled to run as torch.matmul per type, not generated."""
    return isinstance(plan.schedule, CpuGemmSchedule) and plan.schedule.blas


# parameter-sized domains: a C++ kernel scatters into them through a private copy per thread, as
# every thread would contend for the same few rows with atomics
SMALL_DOMAINS = (Domain.GLOBAL, Domain.ETYPE, Domain.NTYPE, Domain.GRAPH)


def cpu_walk_order(plan: KernelPlan) -> str | None:
    """The index whose target order a C++ edge-parallel or row-map kernel walks its rows in: of
    its scatters into domains with many rows, the index that carries the most elements per row.
    Those scatters need atomics only at the ends of a thread's range; the others keep theirs."""
    return _walk_index(plan.strategy, plan.ops)


def _walk_index(strategy: Strategy, ops: Iterable[Node]) -> str | None:
    if strategy not in (Strategy.EDGE_PARALLEL, Strategy.ROW_MAP):
        return None
    carried: dict[str, int] = {}
    for n in ops:
        if n.op == Op.REDUCE and n.attrs["index"] not in ("all", "to_dst") and n.type.domain not in SMALL_DOMAINS:
            carried[n.attrs["index"]] = carried.get(n.attrs["index"], 0) + n.type.numel
    return max(sorted(carried), key=carried.__getitem__) if carried else None


def cpu_atomic_reductions(strategy: Strategy, ops: Iterable[Node], arg_domain: Callable[[Node], Domain]) -> list[Node]:
    """The reductions of a C++ kernel of ``strategy`` over ``ops`` that add into memory with
    atomics: not a per-destination kernel's sum over its own edges (in registers), not along a
    row's own destination ("to_dst"), not along the walk order (atomics only at the ends of a
    thread's range), not into a parameter-sized domain (a private copy per thread).
    ``arg_domain`` gives the domain of a reduction's operand."""
    ops = list(ops)
    walk = _walk_index(strategy, ops)
    out = []
    for n in ops:
        if n.op != Op.REDUCE:
            continue
        index = n.attrs["index"]
        own_edges = (strategy == Strategy.DST_PARALLEL and index == "dst"
                     and arg_domain(n) == Domain.EDGE and n.type.domain == Domain.DST)
        if not (own_edges or index in ("to_dst", walk) or n.type.domain in SMALL_DOMAINS):
            out.append(n)
    return out


TARGETS = ("cuda", "cpp")


def default_schedule(strategy: Strategy, target: str = "cuda") -> Schedule:
    """The schedule a new plan of ``strategy`` gets on ``target`` ("cuda" or "cpp")."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    gemm = strategy in (Strategy.GEMM, Strategy.WGRAD)
    if target == "cpp":
        return CpuGemmSchedule() if gemm else CpuTraversalSchedule()
    return GemmSchedule() if gemm else TraversalSchedule()


def fit_gemm_tile(schedule: GemmSchedule, cols: int, rows: int | None = None) -> GemmSchedule:
    """A CUDA GEMM tile no wider than the output needs (halved down to 16 while half of it
    still covers ``cols``; likewise the rows of a weight gradient, whose tile rows are the
    input features), so that few threads idle on narrow outputs such as HGT's heads."""
    def fit(size: int, tile: int) -> int:
        while tile > 16 and tile // 2 >= size:
            tile //= 2
        return tile
    changes = {"tile_cols": fit(cols, schedule.tile_cols)}
    if rows is not None:
        changes["tile_rows"] = fit(rows, schedule.tile_rows)
    return replace(schedule, **changes)


def schedule_target(schedule: Schedule) -> str:
    """The target a schedule belongs to."""
    return "cpp" if isinstance(schedule, (CpuGemmSchedule, CpuTraversalSchedule)) else "cuda"


@dataclass(frozen=True)
class KernelPlan:
    name: str
    strategy: Strategy
    domain: Domain  # the rows the kernel iterates over
    layout: str  # the graph layout it walks (see runtime.layouts)
    reads: tuple[Node, ...]  # values loaded from memory, as typed input nodes
    ops: tuple[Node, ...]  # the level-1 ops it computes, in order
    writes: tuple[str, ...]  # values stored to memory
    schedule: Schedule

    def program(self) -> Program:
        """The kernel's work as a level-1 program: inputs = reads, outputs = writes."""
        return Program(self.name, self.reads + self.ops, self.writes)

    @property
    def anchor(self) -> Node | None:
        """The typed linear of a GEMM plan."""
        return next((n for n in self.ops if n.op in (Op.LINEAR, Op.LINEAR_WGRAD)), None)

    def value_type(self, name: str) -> Any:
        return next(n.type for n in self.reads + self.ops if n.name == name)


@dataclass(frozen=True)
class PlanProgram:
    """The kernels of one level-1 program, in launch order."""

    name: str
    inputs: tuple[Node, ...]
    kernels: tuple[KernelPlan, ...]
    outputs: tuple[str, ...]

    def format(self, stats: GraphStats | None = None) -> str:
        """The plans as text; with ``stats``, the memory every stored value takes."""
        def size(t: Any) -> str:
            return f", {value_bytes(t, stats) / 1e6:.3f} MB" if stats else ""

        lines = [f"plans {self.name}: {len(self.kernels)} kernels"]
        for i, k in enumerate(self.kernels):
            lines.append(f"  kernel {i} {k.name}: {k.strategy.value} over {k.domain.value} rows, layout {k.layout}")
            lines.append(f"    schedule {k.schedule}")
            lines.append("    reads  " + ", ".join(f"%{r.name}" for r in k.reads))
            lines += [f"    {format_node(n)}" for n in k.ops]
            for w in k.writes:
                t = k.value_type(w)
                lines.append(f"    writes %{w} ({t}{size(t)})")
        if stats:
            stored = {w: k.value_type(w) for k in self.kernels for w in k.writes}
            total = sum(value_bytes(t, stats) for t in stored.values())
            lines.append(f"  stored values: {total / 1e6:.3f} MB")
        lines.append("  return " + ", ".join(f"%{o}" for o in self.outputs))
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.format()


def read_node(node: Node, position: int) -> Node:
    """The typed input node by which a kernel loads value ``node``."""
    return Node(node.name, Op.INPUT, (), node.type, freeze_attrs({"position": position}))
