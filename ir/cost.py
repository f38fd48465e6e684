"""The cost model: FLOPs and bytes moved by every op of a program on a graph of given sizes.

Level-1 costs count every computed value as written to memory and read back by each user, with
one exception that fusion always makes true: gathers, reshapes, slices and degrees are views,
read through an index (or at an offset) by their users (they cost only their index reads). Level-2 plans count only
what their kernels materialise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .ops import ELEMENTWISE, Op
from .program import Node, Program
from .types import Domain, ValueType

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
INDEX_BYTES = 8


@dataclass(frozen=True)
class GraphStats:
    """The sizes a program's cost depends on: the row count of every domain."""

    num_nodes: int
    num_dst_nodes: int
    num_edges: int
    num_compact: int  # unique (src, etype) pairs
    num_compact_dst: int  # unique (dst, etype) pairs
    num_etypes: int
    num_ntypes: int
    num_graphs: int = 1  # graphs of a batch

    def rows(self, domain: Domain) -> int:
        return {
            Domain.NODE: self.num_nodes, Domain.DST: self.num_dst_nodes, Domain.EDGE: self.num_edges,
            Domain.COMPACT: self.num_compact, Domain.COMPACT_DST: self.num_compact_dst,
            Domain.ETYPE: self.num_etypes, Domain.NTYPE: self.num_ntypes, Domain.GRAPH: self.num_graphs,
            Domain.GLOBAL: 1,
        }[domain]

    def bucket(self) -> tuple[int, ...]:
        """Sizes rounded to half powers of two: graphs in one bucket get the same decisions."""
        return tuple(round(2 * math.log2(max(v, 1))) for v in (
            self.num_nodes, self.num_dst_nodes, self.num_edges, self.num_compact,
            self.num_compact_dst, self.num_etypes, self.num_ntypes))


@dataclass(frozen=True)
class Cost:
    flops: int = 0
    bytes: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)


@dataclass(frozen=True)
class ProgramCost:
    per_node: tuple[tuple[str, Cost], ...]
    total: Cost = field(default_factory=Cost)

    def table(self) -> str:
        """One line per op and the total, for people."""
        width = max([len(n) for n, _ in self.per_node] + [5])
        lines = [f"  {'value':<{width}}  {'MFLOP':>10}  {'MB':>10}"]
        for name, c in self.per_node:
            if c.flops or c.bytes:
                lines.append(f"  {name:<{width}}  {c.flops / 1e6:>10.3f}  {c.bytes / 1e6:>10.3f}")
        lines.append(f"  {'total':<{width}}  {self.total.flops / 1e6:>10.3f}  {self.total.bytes / 1e6:>10.3f}")
        return "\n".join(lines)


def value_bytes(t: ValueType, stats: GraphStats) -> int:
    return stats.rows(t.domain) * t.numel * DTYPE_BYTES[t.dtype]


def node_cost(node: Node, args: tuple[ValueType, ...], stats: GraphStats) -> Cost:
    """FLOPs and bytes of one op, with its inputs read from and its output written to memory."""
    op, out = node.op, node.type
    rows = stats.rows(out.domain)
    size = lambda t: value_bytes(t, stats)  # noqa: E731
    if op in (Op.INPUT, Op.RESHAPE, Op.SLICE, Op.CONST, Op.SIZE):
        return Cost()
    if op == Op.MATCH:
        return Cost(rows, rows * INDEX_BYTES * (1 if node.attrs.get("rhs") is None else 2))
    if op == Op.DEGREE or op == Op.GATHER:
        return Cost(0, 0 if node.attrs.get("index") in ("all", "to_dst") else rows * INDEX_BYTES)
    if op == Op.REDUCE:
        in_rows = stats.rows(args[0].domain)
        return Cost(in_rows * args[0].numel, size(args[0]) + in_rows * INDEX_BYTES + size(out))
    if op == Op.EDGE_SOFTMAX:
        return Cost(4 * rows * out.numel, 3 * size(out) + 2 * rows * INDEX_BYTES)
    if op == Op.LINEAR:
        x, w = args
        return Cost(2 * stats.rows(x.domain) * x.numel * out.shape[-1], size(x) + size(w) + size(out))
    if op == Op.LINEAR_WGRAD:
        x, dy = args
        return Cost(2 * stats.rows(x.domain) * x.numel * dy.shape[-1], size(x) + size(dy) + size(out))
    if op == Op.DOT:
        return Cost(2 * rows * max(args[0].numel, args[1].numel), size(args[0]) + size(args[1]) + size(out))
    if op == Op.CONCAT:
        return Cost(0, 2 * size(out))
    if op in ELEMENTWISE or op == Op.SUM_TO:
        work = max([a.numel for a in args] + [out.numel])
        return Cost(rows * work, sum(size(a) for a in args) + size(out))
    raise ValueError(f"no cost rule for {op.value}")


def program_cost(program: Program, stats: GraphStats) -> ProgramCost:
    """The cost of every op of ``program`` and the total."""
    per_node = []
    total = Cost()
    for node in program.nodes:
        c = node_cost(node, tuple(program.node(a).type for a in node.args), stats)
        per_node.append((node.name, c))
        total = total + c
    return ProgramCost(tuple(per_node), total)


# A machine balance of 20 FLOPs per byte (about an H100's fp32 rate over its memory bandwidth)
# turns a cost into one number for the passes that choose between two programs.
FLOPS_PER_BYTE = 20.0


def score(cost: Cost) -> float:
    """A single figure of merit, in byte-equivalents: lower is cheaper."""
    return cost.bytes + cost.flops / FLOPS_PER_BYTE


def cheaper(candidate: Program, current: Program, stats: GraphStats) -> bool:
    """Whether ``candidate`` costs less than ``current`` on graphs of these sizes."""
    return score(program_cost(candidate, stats).total) < score(program_cost(current, stats).total)


# ---- modelled time of kernel plans on the C++/OpenMP back end ---------------------------------
#
# A kernel's time is a weighted sum of what it does: a fixed cost per kernel (the ctypes call and
# the OpenMP region), a cost per task handed to a thread, bytes streamed, bytes read through an
# index (rows gathered at random), GEMM FLOPs scaled by how well the micro-kernel's register tile
# fits the output, and other FLOPs; work is split over the threads. The weights are seconds per
# unit, set by hand to this 2-core machine's rates and checked against measured times with
# benchmarks/cost_model.py (its --fit refits them; the refit ranks the measured candidates a
# little better but drops the FLOP and gather terms, so it is not used).

@dataclass(frozen=True)
class CpuWeights:
    kernel: float = 2.0e-5  # seconds per kernel call
    task: float = 1.0e-7  # seconds per task (a tile of GEMM rows, a chunk of traversal rows)
    byte: float = 1.0e-10  # seconds per byte streamed (loads, stores, index arrays)
    gathered_byte: float = 2.0e-10  # seconds per byte read through an index
    gemm_flop: float = 1.0e-10  # seconds per GEMM FLOP at a full register tile
    flop: float = 4.0e-10  # seconds per other FLOP
    atomic: float = 1.0e-9  # seconds per element added atomically


CPU_WEIGHTS = CpuWeights()
THREADS = 2  # the threads the weights were measured with (the machines here have 2 cores)


def kernel_features(kernel: Any, stats: GraphStats) -> dict[str, float]:
    """What ``CpuWeights`` multiplies for one kernel plan: per-thread counts of each unit."""
    from .plans import CpuGemmSchedule, CpuTraversalSchedule, cpu_walk_order
    from .roofline import kernel_cost

    types = {n.name: n.type for n in kernel.reads + kernel.ops}
    rows = stats.rows(kernel.domain)
    compulsory = kernel_cost(kernel, stats)
    gathered = sum(value_bytes(n.type, stats) for n in kernel.ops
                   if n.op == Op.GATHER and n.attrs["index"] not in ("all", "to_dst"))
    gemm = [n for n in kernel.ops if n.op in (Op.LINEAR, Op.LINEAR_WGRAD)]
    gemm_flops = sum(node_cost(n, tuple(types[a] for a in n.args), stats).flops for n in gemm)
    other_flops = max(compulsory.flops - gemm_flops, 0)
    s = kernel.schedule
    segments = stats.num_etypes if any(n.attrs.get("by") == "etype" for n in gemm) else \
        stats.num_ntypes if any(n.attrs.get("by") == "ntype" for n in gemm) else 1
    if isinstance(s, CpuGemmSchedule) and s.blas:
        # torch ops: one matmul per type at about a full register tile's rate, and every other
        # op a pass of its own over memory (its result written, read back by the next)
        ops = [n for n in kernel.ops if n.op not in (Op.RESHAPE, Op.SLICE)]
        passes = sum(2 * value_bytes(n.type, stats) for n in ops if n.op not in (Op.LINEAR, Op.LINEAR_WGRAD))
        return {"kernel": 1.0 + 0.5 * len(ops) + 0.5 * segments, "task": 0.0,
                "byte": (compulsory.bytes + passes) / THREADS, "gathered_byte": gathered / THREADS,
                "gemm_flop": gemm_flops / THREADS, "flop": other_flops / THREADS, "atomic": 0.0}
    if isinstance(s, CpuGemmSchedule):
        tasks = rows / s.tile_rows + segments
        cols = max((n.type.shape[-1] for n in gemm if n.type.shape), default=1)
        padded = math.ceil(cols / s.micro_cols) * s.micro_cols / max(cols, 1)
        # loads per FLOP of a micro_rows x micro_cols register tile: (mr + mc) / (mr * mc)
        intensity = (s.micro_rows + s.micro_cols) / (s.micro_rows * s.micro_cols) / (24 / 128)
        gemm_flops *= padded * max(intensity, 1.0)
    elif isinstance(s, CpuTraversalSchedule):
        tasks = rows / s.rows_per_task
        if s.prefetch == 0:
            gathered *= 1.25
    else:
        tasks = rows / 32
    walk = cpu_walk_order(kernel) if isinstance(s, CpuTraversalSchedule) else None
    if walk is not None:  # rows in target order: the values of the kernel's own rows are read at random rows
        gathered += sum(value_bytes(r.type, stats) for r in kernel.reads if r.type.domain == kernel.domain)
    atomics = sum(stats.rows(types[n.args[0]].domain) * types[n.args[0]].numel for n in kernel.ops
                  if n.op == Op.REDUCE and _atomic(n, types, kernel.strategy, walk))
    return {"kernel": 1.0, "task": tasks / THREADS, "byte": compulsory.bytes / THREADS,
            "gathered_byte": gathered / THREADS, "gemm_flop": gemm_flops / THREADS,
            "flop": other_flops / THREADS, "atomic": atomics / THREADS}


def _atomic(node: Node, types: dict[str, Any], strategy: Any, walk: str | None) -> bool:
    """Whether a C++ kernel adds ``node``'s reduction into memory with atomics: not a
    per-destination kernel's sum over its own edges (in registers), not along a row's own
    destination ("to_dst"), not along the walk order (atomics only at the ends of a thread's
    range), not into a parameter-sized domain (a private copy per thread)."""
    from .plans import SMALL_DOMAINS, Strategy
    index = node.attrs["index"]
    own_edges = (strategy == Strategy.DST_PARALLEL and index == "dst"
                 and types[node.args[0]].domain == Domain.EDGE and node.type.domain == Domain.DST)
    return not (own_edges or index in ("to_dst", walk) or node.type.domain in SMALL_DOMAINS)


def plans_seconds(plans: Any, stats: GraphStats, weights: CpuWeights = CPU_WEIGHTS) -> float:
    """The modelled time of a plan program's kernels on graphs of these sizes."""
    total = 0.0
    for kernel in plans.kernels:
        features = kernel_features(kernel, stats)
        total += sum(getattr(weights, name) * value for name, value in features.items())
    return total
