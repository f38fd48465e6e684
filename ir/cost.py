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
# index (rows gathered at random), GEMM FLOPs divided by the rate the micro-kernel's register tile
# reaches, and other FLOPs; work is split over the threads. The weights are seconds per unit,
# fitted with benchmarks/cost_model.py --fit to timings of ten candidates per case (RGCN, RGAT and
# HGT on aifb, mutag and biokg at 0.05, inference and training, 64 and 128 features) on this
# 2-core machine. The fit leaves other FLOPs at zero (they ride with the bytes they touch, which
# cost more) and a gathered byte cheaper than a streamed one (these graphs' node tables fit in
# the L2 and L3 caches, so most gathered rows come from cache; streamed bytes include stores).

@dataclass(frozen=True)
class CpuWeights:
    kernel: float = 7.8e-6  # seconds per kernel call
    task: float = 1.1e-7  # seconds per task (a tile of GEMM rows, a chunk of traversal rows)
    byte: float = 2.3e-10  # seconds per byte streamed (loads, stores, index arrays)
    gathered_byte: float = 5.6e-11  # seconds per byte read through an index (the gathered rows' volume)
    gemm_flop: float = 4.3e-12  # seconds per GEMM FLOP at a full register tile
    flop: float = 0.0  # seconds per other FLOP
    atomic: float = 7.3e-9  # seconds per element added atomically


CPU_WEIGHTS = CpuWeights()
THREADS = 2  # the threads the weights were measured with (the machines here have 2 cores)
# the generated micro-kernel as g++ -O3 -march=native compiles it for this machine's AVX-512
# cores (AMD Zen 4: 64-byte vectors in 32 registers, 512-bit FMAs and loads issued as two
# 256-bit halves, so 64 bytes of each per cycle; an FMA's result ready 4 cycles later)
VECTOR_BYTES, REGISTERS, FMA_BYTES, LOAD_BYTES, FMA_LATENCY = 64, 32, 64, 64, 4
BLAS_CALLS_PER_TYPE = 1.0  # kernel-call costs of one type's torch.matmul and its slices (measured)


def kernel_features(kernel: Any, stats: GraphStats) -> dict[str, float]:
    """What ``CpuWeights`` multiplies for one kernel plan: per-thread counts of each unit."""
    from .plans import SMALL_DOMAINS, CpuGemmSchedule, CpuTraversalSchedule, cpu_atomic_reductions, cpu_walk_order
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
        # torch ops (runtime/reference.py): the rows gathered into type order, one small matmul
        # call per type, the pieces concatenated and put back in row order; every other op a
        # pass of its own over memory (its result written, read back by the next)
        ops = [n for n in kernel.ops if n.op not in (Op.RESHAPE, Op.SLICE)]
        passes = sum(2 * value_bytes(n.type, stats) for n in ops if n.op not in (Op.LINEAR, Op.LINEAR_WGRAD))
        moved = sum(value_bytes(t, stats) for n in gemm for t in (*(types[a] for a in n.args), n.type)
                    if t.domain not in SMALL_DOMAINS)  # the weights stay in place
        return {"kernel": 1.0 + 0.5 * len(ops) + BLAS_CALLS_PER_TYPE * segments, "task": 0.0,
                "byte": (compulsory.bytes + passes + 2 * moved) / THREADS,
                "gathered_byte": (gathered + moved) / THREADS,
                "gemm_flop": gemm_flops / THREADS, "flop": other_flops / THREADS, "atomic": 0.0}
    if isinstance(s, CpuGemmSchedule):
        tasks = rows / s.tile_rows + segments
        cols = max((n.type.shape[-1] for n in gemm if n.type.shape), default=1)
        padded = math.ceil(cols / s.micro_cols) * s.micro_cols / max(cols, 1)
        # a tile's last micro-tile multiplies micro_rows rows, its padding too
        padded *= 1 + tasks * (s.micro_rows - 1) / 2 / max(rows, 1)
        dtype = next((n.type.dtype for n in gemm), "float32")
        gemm_flops *= padded / micro_kernel_efficiency(s.micro_rows, s.micro_cols, dtype)
    elif isinstance(s, CpuTraversalSchedule):
        tasks = rows / s.rows_per_task
        if s.prefetch == 0:
            gathered *= 1.25
    else:
        tasks = rows / 32
    walk = cpu_walk_order(kernel) if isinstance(s, CpuTraversalSchedule) else None
    if walk is not None:  # rows in target order: the values of the kernel's own rows are read at random rows
        gathered += sum(value_bytes(r.type, stats) for r in kernel.reads if r.type.domain == kernel.domain)
    atomics = sum(stats.rows(types[n.args[0]].domain) * types[n.args[0]].numel
                  for n in cpu_atomic_reductions(kernel.strategy, kernel.ops, lambda n: types[n.args[0]].domain))
    return {"kernel": 1.0, "task": tasks / THREADS, "byte": compulsory.bytes / THREADS,
            "gathered_byte": gathered / THREADS, "gemm_flop": gemm_flops / THREADS,
            "flop": other_flops / THREADS, "atomic": atomics / THREADS}


def micro_kernel_efficiency(micro_rows: int, micro_cols: int, dtype: str = "float32") -> float:
    """The fraction of a core's peak FMA rate that a ``micro_rows`` x ``micro_cols`` register
    tile reaches. Each step over k loads ``micro_cols`` weights (as few vectors as hold them)
    and broadcasts one input per row, then issues one FMA per accumulator vector. The core
    issues FMA_BYTES of FMA lanes and LOAD_BYTES of vector loads (or two broadcasts) per cycle,
    and an accumulator's FMAs wait on each other, so too few accumulators leave the FMA units
    idle; accumulators beyond the registers spill."""
    width = DTYPE_BYTES.get(dtype, 4)
    vector = min(VECTOR_BYTES, max(micro_cols * width, 16))
    vectors = math.ceil(micro_cols * width / vector)
    accumulators = micro_rows * vectors
    fma_cycles = accumulators * vector / FMA_BYTES
    load_cycles = vectors * vector / LOAD_BYTES + micro_rows / 2
    cycles = max(fma_cycles, load_cycles, FMA_LATENCY) + max(accumulators + vectors + 1 - REGISTERS, 0)
    return micro_rows * micro_cols * width / FMA_BYTES / cycles


def plans_seconds(plans: Any, stats: GraphStats, weights: CpuWeights = CPU_WEIGHTS) -> float:
    """The modelled time of a plan program's kernels on graphs of these sizes."""
    total = 0.0
    for kernel in plans.kernels:
        features = kernel_features(kernel, stats)
        total += sum(getattr(weights, name) * value for name, value in features.items())
    return total
