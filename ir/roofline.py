"""A roofline floor for kernel plans: the least time a kernel can take on a given GPU, from the
bytes it must move and the FLOPs it must do. Modelled, not measured.

Bytes are compulsory traffic: every value a kernel loads or stores, once, and the index arrays it
walks; FLOPs are those of its level-1 ops (recomputation inside a kernel is not counted).
"""
from __future__ import annotations

from dataclasses import dataclass

from .cost import INDEX_BYTES, Cost, GraphStats, node_cost, value_bytes
from .ops import Op
from .plans import KernelPlan, Strategy


@dataclass(frozen=True)
class Device:
    name: str
    bandwidth: float  # bytes per second
    flops: dict[str, float]  # per dtype, FLOPs per second on the CUDA cores


# NVIDIA H100 SXM5 data sheet: 3.35 TB/s HBM3; 67 TFLOP/s fp32 and 34 TFLOP/s fp64 (CUDA cores)
H100 = Device("H100 SXM", 3.35e12, {"float32": 67e12, "float64": 34e12, "float16": 67e12, "bfloat16": 67e12})

_INDEXED = {Strategy.DST_PARALLEL: 2, Strategy.EDGE_PARALLEL: 1, Strategy.ROW_MAP: 0,
            Strategy.GEMM: 1, Strategy.WGRAD: 1}


def kernel_cost(kernel: KernelPlan, stats: GraphStats) -> Cost:
    """Compulsory bytes and the FLOPs of one kernel on a graph of these sizes."""
    types = {n.name: n.type for n in kernel.reads + kernel.ops}
    moved = sum(value_bytes(r.type, stats) for r in kernel.reads)
    moved += sum(value_bytes(types[w], stats) for w in kernel.writes)
    indices = {n.attrs["index"] for n in kernel.ops if n.op == Op.GATHER and n.attrs["index"] not in ("all", "to_dst")}
    rows = stats.rows(kernel.domain)
    moved += (len(indices) + _INDEXED[kernel.strategy]) * rows * INDEX_BYTES
    flops = sum(node_cost(n, tuple(types[a] for a in n.args), stats).flops
                for n in kernel.ops if n.op not in (Op.GATHER, Op.RESHAPE, Op.SLICE, Op.DEGREE, Op.CONST, Op.SIZE, Op.MATCH))
    return Cost(flops, moved)


def floor_seconds(cost: Cost, dtype: str, device: Device = H100) -> float:
    """The roofline floor: the larger of the memory time and the compute time."""
    return max(cost.bytes / device.bandwidth, cost.flops / device.flops[dtype])
