"""``pigeon bench``: every system on every graph, side by side in one run.

Each (model, graph, system) runs in a fresh process (its peak memory is its own). Pigeon's output
on the same weights, and in training its gradients of the input and of every parameter, are the
reference every peer that computes Pigeon's formula is checked against before it is timed; a
mismatch is marked in the table and makes the run exit with status 1.
Speed-up = peer time / Pigeon time, with geometric means per model and mode. Writes a table, a
CSV, a JSON of every result and a PNG plot to the output folder.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import torch

from .systems import SYSTEMS, TORCH_OPS

QUICK = dict(datasets=["aifb", "mutag", "debian-dpkg"], scale=0.25, feats=[64], repeat=3, warmup=1, compiled=False)
FULL = dict(datasets=["aifb", "mutag", "biokg", "fb15k", "debian"], scale=1.0, feats=[64, 128], repeat=10,
            warmup=2, compiled=True)


def progress(items: list, desc: str) -> Iterable:
    try:
        from tqdm import tqdm
        return tqdm(items, desc=desc, file=sys.stderr)
    except ImportError:
        def plain() -> Iterable:
            for i, item in enumerate(items):
                print(f"\r{desc}: {i + 1}/{len(items)}", end="", file=sys.stderr, flush=True)
                yield item
            print(file=sys.stderr)
        return plain()


def _reference(case: dict[str, Any], folder: Path) -> str:
    """Pigeon's output (and, with training, its gradients) for this model, graph and weights,
    saved for the peers' checks."""
    from .case import pigeon_reference

    grads = "-grads" if "train" in case["modes"] else ""
    path = folder / f"{case['model']}-{case['dataset']}-{case['scale']}-{case['feats']}{grads}.pt"
    if not path.exists():
        torch.save(pigeon_reference(case), path)
    return str(path)


def run_case(case: dict[str, Any], timeout: int) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run([sys.executable, "-m", "pigeon.benchmarks.case", json.dumps(case)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return [{**case, "mode": m, "status": f"timeout after {timeout} s"} for m in case["modes"]]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[")]
    if done.returncode != 0 or not lines:
        reason = "OOM (killed)" if done.returncode in (-9, 137) else f"crashed (exit {done.returncode}): " + \
            (done.stderr.strip().splitlines() or [""])[-1][:200]
        return [{**case, "mode": m, "status": reason} for m in case["modes"]]
    return json.loads(lines[-1])


def speedups(results: list[dict[str, Any]]) -> None:
    """Adds speed-up = peer time / Pigeon time to every timed result."""
    pigeon = {(r["model"], r["dataset"], r["feats"], r["mode"]): r.get("median_ms")
              for r in results if r["system"] == "Pigeon" and r["status"] == "ok"}
    for r in results:
        ours = pigeon.get((r["model"], r["dataset"], r["feats"], r["mode"]))
        if r["status"] == "ok" and ours:
            r["speedup"] = r["median_ms"] / ours


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    header = (f"{'model':<5} {'mode':<5} {'graph':<11} {'feats':>5}  {'system':<34} {'median ms':>10} {'IQR ms':>8} "
              f"{'peak MB':>8} {'speed-up':>9}  check")
    lines += [header, "-" * len(header)]
    for r in results:
        if r["status"] == "ok":
            time_cols = f"{r['median_ms']:>10.2f} {r['spread_ms']:>8.2f} {r['peak_mb']:>8.1f}"
            speed = f"{r['speedup']:>8.2f}x" if "speedup" in r else f"{'-':>9}"
            check = "" if r["system"] == "Pigeon" else r.get("check", "")
        else:
            time_cols, speed, check = f"{r['status'][:29]:>28}", f"{'-':>9}", ""
        lines.append(f"{r['model']:<5} {r['mode']:<5} {r['dataset']:<11} {r['feats']:>5}  {r['system']:<34} "
                     f"{time_cols} {speed}  {check}")
    return "\n".join(lines)


def geomeans(results: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    failed: dict[tuple[str, str, str], int] = defaultdict(int)
    different: set[tuple[str, str, str]] = set()
    for r in results:
        if r["system"] == "Pigeon":
            continue
        key = (r["model"], r["mode"], r["system"])
        if str(r.get("check", "")).startswith("different formula"):
            different.add(key)
        if "speedup" in r:
            groups[key].append(r["speedup"])
        else:
            failed[key] += 1
    lines = ["Geometric mean speed-up of Pigeon over each system (peer time / Pigeon time):"]
    for key in sorted(set(groups) | set(failed)):
        values = groups.get(key, [])
        mean = math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")
        note = f", {failed[key]} failed (OOM, error or timeout)" if failed.get(key) else ""
        note += " (a different formula: not the same work)" if key in different else ""
        lines.append(f"  {key[0]:<5} {key[1]:<5} {key[2]:<34} {mean:>7.2f}x over {len(values)} case(s){note}")
    return "\n".join(lines)


def _same_formula_peer(r: dict[str, Any]) -> bool:
    return (not r["system"].startswith("Pigeon") and r["status"] == "ok"
            and not str(r.get("check", "")).startswith(("different formula", "MISMATCH")))


def best_peers(results: list[dict[str, Any]]) -> str:
    """Per case, Pigeon against the fastest peer that computes its formula (time and peak memory),
    then the geometric mean of those ratios per model and mode."""
    cases: dict[tuple, dict[str, Any]] = defaultdict(dict)
    for r in results:
        key = (r["model"], r["mode"], r["dataset"], r["feats"])
        if r["system"] == "Pigeon":
            cases[key]["pigeon"] = r
        elif r["system"] == TORCH_OPS:
            cases[key]["torch_ops"] = r
        elif _same_formula_peer(r):
            best = cases[key].get("best")
            cases[key]["best"] = r if best is None or r["median_ms"] < best["median_ms"] else best
            cases[key]["least_mb"] = min(cases[key].get("least_mb", float("inf")), r["peak_mb"])
    lines = ["Pigeon against the fastest same-formula peer of each case (x = peer time / Pigeon time):",
             f"  {'model':<5} {'mode':<5} {'graph':<11} {'feats':>5} {'Pigeon ms':>10} {'torch ops x':>11} "
             f"{'Pigeon MB':>9} {'best peer':<34} {'peer ms':>9} {'x':>6} {'least peer MB':>13}"]
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    ops_ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    for key in sorted(cases):
        c = cases[key]
        ours = c.get("pigeon")
        if not ours or ours["status"] != "ok":
            lines.append(f"  {key[0]:<5} {key[1]:<5} {key[2]:<11} {key[3]:>5} Pigeon: {ours['status'] if ours else 'not run'}")
            continue
        ops = c.get("torch_ops")
        ops_x = ops["median_ms"] / ours["median_ms"] if ops and ops["status"] == "ok" else None
        if ops_x:
            ops_ratios[key[:2]].append(ops_x)
        best = c.get("best")
        x = best["median_ms"] / ours["median_ms"] if best else None
        if x:
            ratios[key[:2]].append(x)
        ops_text = f"{ops_x:.2f}x" if ops_x else "-"
        peer, peer_ms, x_text = (best["system"], f"{best['median_ms']:.2f}", f"{x:.2f}") if best else ("none ran", "-", "-")
        lines.append(f"  {key[0]:<5} {key[1]:<5} {key[2]:<11} {key[3]:>5} {ours['median_ms']:>10.2f} {ops_text:>11} "
                     f"{ours['peak_mb']:>9.1f} {peer:<34} {peer_ms:>9} {x_text:>6} {c.get('least_mb', float('nan')):>13.1f}")
    lines.append("Geometric means (over the cases where both ran): best same-formula peer x, torch ops x")
    for key in sorted(set(ratios) | set(ops_ratios)):
        def mean(values: list[float]) -> str:
            return f"{math.exp(sum(map(math.log, values)) / len(values)):.2f}x ({len(values)})" if values else "-"
        lines.append(f"  {key[0]:<5} {key[1]:<5} best peer {mean(ratios[key]):<14} torch ops {mean(ops_ratios[key])}")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = sorted({(r["model"], r["mode"]) for r in results})
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3 * len(panels)), squeeze=False)
    for ax, (model, mode) in zip(axes[:, 0], panels):
        rows = [r for r in results if r["model"] == model and r["mode"] == mode and r["system"] != "Pigeon"]
        graphs = sorted({f"{r['dataset']}/{r['feats']}" for r in rows})
        systems = sorted({r["system"] for r in rows})
        width = 0.8 / max(len(systems), 1)
        for i, system in enumerate(systems):
            values = [next((r.get("speedup", 0.0) for r in rows if r["system"] == system
                            and f"{r['dataset']}/{r['feats']}" == gname), 0.0) for gname in graphs]
            ax.bar([j + i * width for j in range(len(graphs))], values, width, label=system)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(graphs))], graphs)
        ax.set_title(f"{model} {mode}: speed-up of Pigeon (peer time / Pigeon time; 0 = failed)")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def _case_id(case: dict[str, Any]) -> tuple:
    return tuple(case.get(k) for k in ("model", "dataset", "scale", "feats", "system", "device"))


def _earlier_results(path: Path) -> list[dict[str, Any]]:
    """The results of an earlier run in the same folder, without derived fields."""
    if not path.exists():
        return []
    try:
        results = json.loads(path.read_text())
    except ValueError as err:
        raise SystemExit(f"pigeon bench: cannot resume from {path}: {err}") from err
    for r in results:
        r.pop("speedup", None)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pigeon bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a small preset: aifb and mutag at scale 0.25 and the installed Debian packages, "
                             "64 features, no torch.compile")
    parser.add_argument("--models", nargs="+", default=["rgcn", "rgat", "hgt"])
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--scale", type=float)
    parser.add_argument("--feats", type=int, nargs="+")
    parser.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--systems", nargs="+", help="only these systems (Pigeon, and Pigeon on torch ops, always run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--out", default="bench-out", help="folder for the CSV, JSON and plot")
    parser.add_argument("--resume", action="store_true",
                        help="keep the results already in OUT/bench.json and measure only the cases missing there")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    datasets = args.datasets or preset["datasets"]
    scale = args.scale if args.scale is not None else preset["scale"]
    feats_list = args.feats or preset["feats"]
    repeat = args.repeat or preset["repeat"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    chosen, missing = [], []
    for s in SYSTEMS:
        if s.model not in args.models or (args.systems and not s.name.startswith("Pigeon")
                                          and s.name not in args.systems):
            continue
        if s.compiled and not preset["compiled"] and not args.systems:
            continue
        if not s.available():
            missing.append(f"{s.name} ({', '.join(s.requires)} not installed)")
            continue
        chosen.append(s)
    print(f"pigeon bench on {args.device}: torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"graphs {datasets} at scale {scale}, features {feats_list}, median of {repeat}")
    if missing:
        print("not installed here, so not measured: " + "; ".join(sorted(set(missing))))
    cases = [dict(model=s.model, dataset=d, scale=scale, feats=f, system=s.name, device=args.device,
                  modes=args.modes, repeat=repeat, warmup=preset["warmup"])
             for d in datasets for f in feats_list for s in chosen]
    results = _earlier_results(out / "bench.json") if args.resume else []
    done = {_case_id(r) for r in results}
    cases = [c for c in cases if _case_id(c) not in done]
    with tempfile.TemporaryDirectory(prefix="pigeon-bench-") as folder:
        for case in progress(cases, "cases"):
            try:
                case["reference"] = _reference(case, Path(folder))
            except Exception as err:  # noqa: BLE001 - no reference: peers run unchecked
                case["reference"] = None
                print(f"\nno Pigeon reference for {case['model']} on {case['dataset']}: {err}", file=sys.stderr)
            results += run_case(case, args.timeout)
            # Written after every case, so that an interrupted run can go on with --resume.
            (out / "bench.json").write_text(json.dumps(results, indent=1))
    speedups(results)
    order = {(s.model, s.name): i for i, s in enumerate(SYSTEMS)}
    results.sort(key=lambda r: (r["model"], r["mode"], r["dataset"], r["feats"], order.get((r["model"], r["system"]), 99)))
    report = table(results) + "\n\n" + geomeans(results) + "\n\n" + best_peers(results)
    print(report)
    (out / "bench.txt").write_text(report + "\n")
    (out / "bench.json").write_text(json.dumps(results, indent=1))
    fields = ["model", "mode", "dataset", "scale", "feats", "system", "device", "status", "median_ms", "spread_ms",
              "peak_mb", "speedup", "check"]
    with open(out / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    plotted = plot(results, out / "bench.png")
    print(f"\nwrote {out / 'bench.csv'}, {out / 'bench.json'}, {out / 'bench.txt'}"
          + (f", {out / 'bench.png'}" if plotted else " (no plot: matplotlib is not installed)"))
    mismatched = [r for r in results if str(r.get("check", "")).startswith("MISMATCH")]
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
