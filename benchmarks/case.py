"""One benchmark case (a model, a graph, a system) in a fresh process, so that its peak memory
is its own: ``python -m pigeon.benchmarks.case '<json>'`` prints one JSON line of results."""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time
import traceback
from typing import Any, Callable

import torch

import pigeon.datasets

from . import order_graphs
from .systems import SYSTEMS, BenchGraph, layer_for

UPSTREAM_SEED = 1
CHECK_CHUNK = 1 << 20  # elements compared at a time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak_rss() -> None:
    """Start a new peak-RSS window where Linux allows it (``/proc/self/clear_refs``), so that the
    peak of the steps does not include what setting the case up took and gave back."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # the peak then counts from the start of the process


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step: Callable[[], Any], device: torch.device, warmup: int, repeat: int) -> list[float]:
    """Seconds per call after ``warmup`` calls; CUDA events on a GPU."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return times


def bench_graph(dataset: str, scale: float, feats: int, device: str, seed: int = 0) -> BenchGraph:
    if dataset in order_graphs.NAMES:  # generated for the aggregation-order comparison
        graph, features = order_graphs.order_graph(dataset, scale, feats, seed)
        return BenchGraph(dataset, graph.to(device), features.to(device))
    data = pigeon.datasets.load(dataset, scale=scale, seed=seed, feat_dim=feats)
    return BenchGraph(data.name, data.graph.to(device), data.features.to(device))


def status_of(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    if isinstance(err, MemoryError) or "out of memory" in text.lower() or "can't allocate" in text.lower():
        return "OOM"
    return f"error: {text}"


def upstream_gradient(out: torch.Tensor) -> torch.Tensor:
    """The gradient training sends into the layer's output: seeded, so Pigeon and every peer get the same."""
    generator = torch.Generator().manual_seed(UPSTREAM_SEED)
    return torch.randn(out.shape, generator=generator, dtype=out.dtype).to(out.device)


def tolerance(dtype: torch.dtype) -> float:
    """The largest error allowed, relative to the largest magnitude of the compared tensor.

    A peer adds the same terms in another order (scatters, segment matmuls, GPU atomics), and a
    gradient entry sums over up to thousands of edges, each order rounding differently: up to some
    thousands of units in the last place of the largest value, so 10^4 ulps (float32: 1.2e-3,
    float64: 2.2e-12). A wrong formula or a wrong parameter mapping errs by the values' own size."""
    return 1e4 * torch.finfo(dtype).eps


def difference(ours: torch.Tensor, theirs: torch.Tensor) -> str | None:
    """None if ``theirs`` equals Pigeon's ``ours`` within the tolerance of its dtype, else how it differs."""
    if tuple(theirs.shape) != tuple(ours.shape):
        return f"shape {list(theirs.shape)}, expected {list(ours.shape)}"
    allowed = tolerance(ours.dtype)
    ours, theirs = ours.detach().reshape(-1), theirs.detach().reshape(-1)
    scales, errors = [torch.zeros((), dtype=torch.float64)], [torch.zeros((), dtype=torch.float64)]
    for start in range(0, ours.numel(), CHECK_CHUNK):  # small float64 copies: the check adds no peak
        a = ours[start:start + CHECK_CHUNK].double().cpu()
        b = theirs[start:start + CHECK_CHUNK].double().cpu()
        scales.append(a.abs().max())
        errors.append((b - a).abs().max())
    scale, error = torch.stack(scales).max().item(), torch.stack(errors).max().item()  # NaN propagates
    if not error <= allowed * scale:  # not <=: a NaN error is a mismatch
        return f"max error {error:.3g} of max {scale:.3g}"
    return None


def check(reference: dict[str, Any], output: torch.Tensor, grads: dict[str, torch.Tensor] | None) -> str:
    """Compares a peer's output (and, in training, its gradients) with Pigeon's ``reference``."""
    problems = []
    if (found := difference(reference["output"], output)) is not None:
        problems.append(f"output: {found}")
    if grads is not None:
        for name, ours in reference["grads"].items():
            found = difference(ours, grads[name]) if name in grads else "none"
            if found is not None:
                problems.append(f"gradient of {name}: {found}")
    if problems:
        return "MISMATCH (" + "; ".join(problems) + ")"
    return "same output" if grads is None else "same output and gradients"


def pigeon_reference(case: dict[str, Any]) -> dict[str, Any]:
    """Pigeon's output for this model, graph and weights, and in training the gradients of the
    input and of every parameter: what each peer is checked against."""
    device = torch.device(case["device"])
    bench = bench_graph(case["dataset"], case["scale"], case["feats"], case["device"])
    layer = layer_for(case["model"], bench.graph, case["feats"]).to(device)
    with torch.no_grad():
        reference: dict[str, Any] = {"output": layer(bench.graph, bench.features).cpu()}
    if "train" in case["modes"]:
        bench.features.requires_grad_(True)
        out = layer(bench.graph, bench.features)
        (out * upstream_gradient(out)).sum().backward()
        grads = {"input": bench.features.grad}
        grads.update((name, p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in layer.named_parameters())
        reference["grads"] = {name: g.detach().cpu() for name, g in grads.items()}
    return reference


def run(case: dict[str, Any]) -> list[dict[str, Any]]:
    """Inference and training times of one system on one graph; its output, and in training its
    gradients, checked against Pigeon's first."""
    device = torch.device(case["device"])
    system = next(s for s in SYSTEMS if s.model == case["model"] and s.name == case["system"])
    results = []
    base = {k: case[k] for k in ("model", "dataset", "scale", "feats", "system", "device")}
    try:
        bench = bench_graph(case["dataset"], case["scale"], case["feats"], case["device"])
        # A layer inside a network passes a gradient to its input: every system computes it.
        bench.features.requires_grad_("train" in case["modes"])
        layer = layer_for(case["model"], bench.graph, case["feats"]).to(device)
        reference = torch.load(case["reference"]) if case.get("reference") else None
        peer = system.build(bench, layer)
    except Exception as err:  # noqa: BLE001 - a failed setup is a result, not a crash
        return [{**base, "mode": m, "status": status_of(err)} for m in case["modes"]]
    checked = reference is not None and system.formula is None
    for mode in case["modes"]:
        check_text = "different formula: " + system.formula if system.formula else "not checked"
        result = {**base, "mode": mode, "status": "ok", "check": check_text}
        try:
            reset_peak_rss()
            baseline = rss_mb()
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
                baseline = torch.cuda.memory_allocated(device) / 2**20
            if mode == "infer":
                def step() -> Any:
                    with torch.no_grad():
                        return peer.forward()
            else:
                upstream = None

                def step() -> Any:
                    nonlocal upstream
                    for t in peer.differentiated:
                        t.grad = None
                    out = peer.forward()
                    if upstream is None:
                        upstream = upstream_gradient(out)
                    (out * upstream).sum().backward()
                    return out
            first = step()
            if checked:
                result["check"] = check(reference, first, peer.gradients(layer) if mode == "train" else None)
            times = timed(step, device, case["warmup"], case["repeat"])
            times.sort()
            result["median_ms"] = statistics.median(times) * 1e3
            result["spread_ms"] = (times[(3 * len(times)) // 4] - times[len(times) // 4]) * 1e3
            if device.type == "cuda":
                result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 - baseline
            else:
                result["peak_mb"] = peak_rss_mb() - baseline
        except Exception as err:  # noqa: BLE001
            result["status"] = status_of(err)
            result["trace"] = traceback.format_exc(limit=3)[-800:]
        results.append(result)
    return results


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
