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

from .systems import SYSTEMS, BenchGraph, layer_for


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
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
    data = pigeon.datasets.load(dataset, scale=scale, seed=seed, feat_dim=feats)
    return BenchGraph(data.name, data.graph.to(device), data.features.to(device))


def status_of(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    if isinstance(err, MemoryError) or "out of memory" in text.lower() or "can't allocate" in text.lower():
        return "OOM"
    return f"error: {text}"


def run(case: dict[str, Any]) -> list[dict[str, Any]]:
    """Inference and training times of one system on one graph, its output checked first."""
    device = torch.device(case["device"])
    system = next(s for s in SYSTEMS if s.model == case["model"] and s.name == case["system"])
    results = []
    base = {k: case[k] for k in ("model", "dataset", "scale", "feats", "system", "device")}
    try:
        bench = bench_graph(case["dataset"], case["scale"], case["feats"], case["device"])
        layer = layer_for(case["model"], bench.graph, case["feats"]).to(device)
        reference = torch.load(case["reference"]) if case.get("reference") else None
        forward, params = system.build(bench, layer)
    except Exception as err:  # noqa: BLE001 - a failed setup is a result, not a crash
        return [{**base, "mode": m, "status": status_of(err)} for m in case["modes"]]
    check = "different formula: " + system.formula if system.formula else "not checked"
    for mode in case["modes"]:
        result = {**base, "mode": mode, "status": "ok", "check": check}
        try:
            baseline = rss_mb()
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
                baseline = torch.cuda.memory_allocated(device) / 2**20
            if mode == "infer":
                def step() -> Any:
                    with torch.no_grad():
                        return forward()
            else:
                upstream = None

                def step() -> Any:
                    nonlocal upstream
                    for p in params:
                        p.grad = None
                    out = forward()
                    if upstream is None:
                        upstream = torch.randn_like(out)
                    (out * upstream).sum().backward()
                    return out
            first = step()
            if reference is not None and system.formula is None and mode == "infer":
                scale = max(reference.abs().max().item(), 1.0)
                error = (first.detach().float().cpu() - reference).abs().max().item()
                result["check"] = "same output" if error <= 1e-3 * scale else f"MISMATCH (max error {error:.3g})"
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
    for r in results:  # training reuses the inference check
        if r["mode"] == "train" and results[0]["mode"] == "infer":
            r["check"] = results[0].get("check", r["check"])
    return results


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
