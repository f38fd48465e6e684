"""Per-kernel figures on a GPU: each generated kernel of the three layers, timed with CUDA events,
against the GPU's measured ceilings (device copy bandwidth, torch.matmul's rate at the kernel's
shape). Bytes are the cost model's compulsory traffic (``pigeon.ir.roofline``), so a share near
100% means the kernel moves little more than it must.

    python -m pigeon.benchmarks.gpu_kernels --datasets biokg aifb --feats 64
"""
from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict

import torch

from pigeon.benchmarks.case import bench_graph
from pigeon.benchmarks.systems import layer_for
from pigeon.ir.plans import Strategy
from pigeon.ir.roofline import kernel_cost
from pigeon.runtime.cuda import kernel_timer
from pigeon.runtime.layouts import graph_stats


def _elapsed_ms(fn, repeat: int = 10) -> float:
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeat


def copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy of 2 GiB (read plus write)."""
    x = torch.empty(2**29, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    ms = _elapsed_ms(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / (ms / 1e3)


def matmul_rate(rows: int, k: int, n: int, batch: int = 1, dtype=torch.float32) -> float:
    """FLOP/s of torch.matmul for [batch, rows, k] @ [batch, k, n] (TF32 as torch is set)."""
    a = torch.randn(batch, rows, k, device="cuda", dtype=dtype)
    b = torch.randn(batch, k, n, device="cuda", dtype=dtype)
    ms = _elapsed_ms(lambda: torch.matmul(a, b))
    return 2 * batch * rows * k * n / (ms / 1e3)


def _gemm_shape(kernel, rows: int) -> tuple[int, int, int, int] | None:
    anchor = kernel.anchor
    if anchor is None or kernel.strategy != Strategy.GEMM:
        return None
    x = kernel.value_type(anchor.args[0]).shape
    out = anchor.type.shape
    batch = math.prod(out[:-1]) if len(out) > 1 else 1
    return rows, x[-1], out[-1], batch


def kernel_table(timed: list, stats, repeat: int, bandwidth: float) -> list[str]:
    """One line per kernel (median over its launches) from (KernelSource, ms) pairs of
    ``repeat`` steps: time, achieved bandwidth and FLOP rate against the ceilings."""
    per_kernel = defaultdict(list)
    kernels = {}
    for kernel, ms in timed:
        per_kernel[kernel.name].append(ms)
        kernels[kernel.name] = kernel
    total = sum(statistics.median(v) * len(v) / repeat for v in per_kernel.values())
    lines = [f"  {total:.3f} ms per step in generated kernels",
             f"  {'kernel':<44} {'strategy':<14} {'ms':>8} {'GB/s':>8} {'% copy':>7} {'GFLOP/s':>9} {'% matmul':>9}"]
    for name, ms_list in per_kernel.items():
        plan = kernels[name].plan
        ms = statistics.median(ms_list)
        cost = kernel_cost(plan, stats)
        gbs = cost.bytes / (ms / 1e3) / 1e9
        gflops = cost.flops / (ms / 1e3) / 1e9
        shape = _gemm_shape(plan, stats.rows(plan.domain))
        vs_matmul = ""
        if shape is not None and shape[0] > 0 and torch.cuda.is_available():
            vs_matmul = f"{100 * gflops * 1e9 / matmul_rate(*shape):8.1f}%"
        lines.append(f"  {name[:44]:<44} {plan.strategy.value:<14} {ms:8.3f} {gbs:8.1f} "
                     f"{100 * gbs * 1e9 / bandwidth:6.1f}% {gflops:9.1f} {vs_matmul:>9}")
    return lines


def profile(model: str, dataset: str, feats: int, bandwidth: float, repeat: int = 5) -> list[str]:
    bench = bench_graph(dataset, 1.0, feats, "cuda")
    g = bench.graph
    layer = layer_for(model, g, feats).cuda()
    stats = graph_stats(g)
    lines = []
    for mode in ("infer", "train"):
        def step():
            if mode == "infer":
                with torch.no_grad():
                    layer(g, bench.features)
            else:
                h = bench.features.detach().requires_grad_()
                layer(g, h).sum().backward()
        step()
        wall_ms = _elapsed_ms(step, repeat)
        with kernel_timer() as timings:
            for _ in range(repeat):
                step()
            torch.cuda.synchronize()
        lines.append(f"\n{model} {mode} on {dataset} ({g.num_nodes} nodes, {g.num_edges} edges, "
                     f"{g.num_etypes} relations), {feats} features: a step takes {wall_ms:.3f} ms")
        lines += kernel_table([(t.kernel, t.ms) for t in timings], stats, repeat, bandwidth)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["biokg"])
    parser.add_argument("--models", nargs="+", default=["rgcn", "rgat", "hgt"])
    parser.add_argument("--feats", type=int, default=64)
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    bandwidth = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: device copy {bandwidth / 1e9:.0f} GB/s; torch.matmul fp32 "
          f"(no TF32) 8192^3 {matmul_rate(8192, 8192, 8192) / 1e12:.1f} TFLOP/s")
    for dataset in args.datasets:
        for model in args.models:
            try:
                print("\n".join(profile(model, dataset, args.feats, bandwidth)), flush=True)
            except Exception as err:  # noqa: BLE001 - report and go on to the next model
                print(f"\n{model} on {dataset}: {type(err).__name__}: {err}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
