"""The cost model against a clock: every candidate configuration the tuner builds, modelled and
timed, for RGCN, RGAT and HGT on several graphs, inference and training, on the default CPU
back end (generated C++).

    python benchmarks/cost_model.py [--datasets aifb mutag biokg] [--scale biokg=0.05] [--limit 0]
                                    [--modes infer train] [--repeat 5] [--out cost_model.json] [--fit]

Per case (model, graph, mode) it prints Spearman's rank correlation between the modelled and the
measured time over the candidates, and how much slower the model's own choice (the candidate it
ranks cheapest) runs than the measured best, then the correlation pooled over every case.
``--limit N`` times the default, the model's choice and N - 2 candidates spread evenly over the
tuner's list instead of every candidate. Candidates are timed interleaved (one call of each in
turn, ``--repeat`` rounds; the fastest round is kept, or ``--statistic median``), so a load that
comes and goes on the machine touches them all alike. Every candidate's output (and in
training its gradients) is checked against the reference before it is timed.

``--fit`` refits the weights of ``pigeon.ir.cost.CpuWeights`` to the measured times (least
squares of the relative error of each time and of each candidate's difference from its case's
default, weights kept non-negative), prints them, and prints the figures again with them;
``--load FILE [FILE ...]`` refits and reports saved runs (several feature sizes, say) without
timing anything.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from typing import Any

import torch

import pigeon.datasets
from pigeon.examples import hgt, rgat, rgcn
from pigeon.ir.cost import CPU_WEIGHTS, CpuWeights, kernel_features
from pigeon.runtime.tuner import Tuner, _plans
from pigeon.runtime.tuning import Config, TuningCache

MODELS = {"rgcn": rgcn.rgcn, "rgat": rgat.rgat, "hgt": hgt.hgt}
DEFAULT_SCALES = {"biokg": 0.05}  # 4,700 nodes and 254K edges: biokg's degrees, timed in minutes
UNITS = [f.name for f in dataclasses.fields(CpuWeights)]


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else float("nan")


def features(tuner: Tuner, config: Any) -> dict[str, float]:
    """The cost model's units summed over every kernel the candidate runs."""
    total = dict.fromkeys(UNITS, 0.0)
    for program in tuner._programs(config):
        for kernel in _plans(program, config, "cpp").kernels:
            for unit, value in kernel_features(kernel, tuner.stats).items():
                total[unit] += value
    return total


def modelled(row: dict[str, Any], weights: CpuWeights) -> float:
    return sum(getattr(weights, unit) * row["features"][unit] for unit in UNITS)


def chosen(trials: list, limit: int) -> list:
    """The default, the model's choice and ``limit - 2`` others spread over the list (0: all)."""
    if not limit or len(trials) <= limit:
        return trials
    best = min(trials, key=lambda t: t.rank)
    rest = [t for t in trials[1:] if t is not best]
    step = len(rest) / max(limit - 2, 1)
    return [trials[0], best] + [rest[int(i * step)] for i in range(limit - 2)]


def time_case(tuner: Tuner, trials: list, repeat: int) -> list[tuple[Any, list[float], str]]:
    """Seconds of each round per candidate, timed interleaved; none where it failed or differs."""
    reference = tuner._reference()
    steps, inner = [], []
    for trial in trials:
        try:
            torch.manual_seed(0)
            step = tuner._step(trial.config)
            problem = tuner._agrees(step(), reference)
        except Exception as err:  # noqa: BLE001 - a failing candidate is reported
            problem = f"failed: {type(err).__name__}: {err}"
        if problem:
            steps.append(None)
            inner.append(0)
            trial.status = problem
            continue
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        trial.status = "ok"
        steps.append(step)
        inner.append(max(1, int(0.02 / max(first, 1e-6))))  # calls enough to take about 20 ms
    samples: list[list[float]] = [[] for _ in trials]
    for _ in range(repeat):
        for i, step in enumerate(steps):
            if step is None:
                continue
            start = time.perf_counter()
            for _ in range(inner[i]):
                step()
            samples[i].append((time.perf_counter() - start) / inner[i])
    return [(trial, s, trial.status) for trial, s in zip(trials, samples)]


def report(rows: list[dict[str, Any]], weights: CpuWeights) -> None:
    cases: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        cases.setdefault(row["case"], []).append(row)
    print(f"{'case':<26} {'candidates':>10} {'spearman':>9} {'choice vs best':>15} {'default vs best':>16}  "
          f"best measured")
    rhos = []
    for case, group in cases.items():
        group = [r for r in group if r["seconds"] is not None]
        if len(group) < 2:
            continue
        model = [modelled(r, weights) for r in group]
        measured = [r["seconds"] for r in group]
        rho = spearman(model, measured)
        rhos.append(rho)
        best = min(measured)
        pick = measured[min(range(len(group)), key=lambda i: model[i])]
        default = next((r["seconds"] for r in group if r["label"] == "defaults"), float("nan"))
        label = group[measured.index(best)]["label"]
        print(f"{case:<26} {len(group):>10} {rho:>9.3f} {pick / best - 1:>14.1%} {default / best - 1:>15.1%}  "
              f"{best * 1e3:.2f} ms ({label[:50]})")
    every = [r for r in rows if r["seconds"] is not None]
    pooled = spearman([modelled(r, weights) for r in every], [r["seconds"] for r in every])
    print(f"median of the per-case rank correlations {statistics.median(rhos):.3f}, lowest {min(rhos):.3f}; "
          f"pooled over all {len(every)} timings {pooled:.3f}")


def fit(rows: list[dict[str, Any]], within: float = 3.0) -> CpuWeights:
    """Non-negative weights minimising the squared relative error of the modelled times, and
    (weighted ``within``) the error of each candidate's modelled difference from its case's
    default, relative to the default's time: the absolute times alone leave the small
    differences between a case's candidates, which the ranking is made of, to chance."""
    import numpy as np
    from scipy.optimize import nnls

    every = [r for r in rows if r["seconds"] is not None]
    defaults = {r["case"]: r for r in every if r["label"] == "defaults"}
    a = [[r["features"][u] / r["seconds"] for u in UNITS] for r in every]
    b = [1.0] * len(every)
    for r in every:
        d = defaults.get(r["case"])
        if d is None or r is d:
            continue
        a.append([within * (r["features"][u] - d["features"][u]) / d["seconds"] for u in UNITS])
        b.append(within * (r["seconds"] - d["seconds"]) / d["seconds"])
    matrix = np.array(a)
    scale = np.maximum(np.abs(matrix).max(axis=0), 1e-30)
    w, _ = nnls(matrix / scale, np.array(b))
    return CpuWeights(**{u: float(v) for u, v in zip(UNITS, w / scale)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["aifb", "mutag", "biokg"])
    parser.add_argument("--scale", nargs="*", default=[], metavar="NAME=S",
                        help="graph scales (default: full size, biokg=0.05)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--feats", type=int, default=64)
    parser.add_argument("--limit", type=int, default=0, help="candidates per case (0: every one)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--statistic", default="min", choices=["min", "median"],
                        help="of each candidate's rounds (min: the round other work disturbed least)")
    parser.add_argument("--out", default="cost_model.json", help="where the timings are saved")
    parser.add_argument("--fit", action="store_true", help="refit the weights to these timings")
    parser.add_argument("--load", nargs="+", metavar="FILE",
                        help="report (and refit) saved runs instead of timing")
    args = parser.parse_args()
    if args.load:
        saved = []
        for name in args.load:
            with open(name) as f:
                saved += [{**row, "case": f"{row['case']} {row['feats']}"} for row in json.load(f)["rows"]]
        rows = refeature(saved)
    else:
        rows = run(args)
    for row in rows:  # the fastest round: what the load of other work on the machine disturbed least
        samples = row.get("samples", [row["seconds"]] if row.get("seconds") else [])
        row["seconds"] = (min if args.statistic == "min" else statistics.median)(samples) if samples else None
    print(f"\nwith the weights of pigeon.ir.cost: {CPU_WEIGHTS}")
    report(rows, CPU_WEIGHTS)
    if args.fit or args.load:
        weights = fit(rows)
        print(f"\nrefitted: {weights}")
        report(rows, weights)


def refeature(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The saved timings with the cost model's units computed again by the code as it is now."""
    tuners: dict[str, Tuner] = {}
    cache = TuningCache(os.path.join(tempfile.mkdtemp(prefix="pigeon-tuning-"), "tuning.json"))
    kept = []
    for row in rows:
        if row["case"] not in tuners:
            name, dataset, mode = row["case"].split()[:3]
            g = pigeon.datasets.synthetic(dataset, scale=row["scale"]).graph
            fn = MODELS[name]
            tuners[row["case"]] = Tuner(fn, g, fn.example_inputs(g, feats=row["feats"], heads=2), mode=mode,
                                        cache=cache)
        try:
            row["features"] = features(tuners[row["case"]], Config.from_json(row["config"]))
        except ValueError as err:  # a schedule for a kernel the compiler no longer makes
            print(f"left out {row['case']}: {row['label']} ({err})")
            continue
        kept.append(row)
    return kept


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    scales = {**DEFAULT_SCALES, **{k: float(v) for k, v in (s.split("=") for s in args.scale)}}
    cache = TuningCache(os.path.join(tempfile.mkdtemp(prefix="pigeon-tuning-"), "tuning.json"))
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.feats} features, float32, "
          f"the {'fastest' if args.statistic == 'min' else 'median'} of {args.repeat} interleaved rounds, C++ back end")
    rows: list[dict[str, Any]] = []
    for dataset in args.datasets:
        scale = scales.get(dataset, 1.0)
        g = pigeon.datasets.synthetic(dataset, scale=scale).graph
        print(f"{dataset} at scale {scale}: {g}", flush=True)
        for name in args.models:
            fn = MODELS[name]
            inputs = fn.example_inputs(g, feats=args.feats, heads=2)
            for mode in args.modes:
                start = time.perf_counter()
                tuner = Tuner(fn, g, inputs, mode=mode, cache=cache)
                if tuner.backend != "cpp":
                    raise SystemExit(f"the C++ back end is not available here ({tuner.backend})")
                trials = tuner.candidates()
                picked = chosen(trials, args.limit)
                case = f"{name} {dataset} {mode}"
                for trial, samples, status in time_case(tuner, picked, args.repeat):
                    rows.append({"case": case, "label": trial.label, "samples": samples, "status": status,
                                 "config": trial.config.to_json(), "scale": scale, "feats": args.feats,
                                 "features": features(tuner, trial.config)})
                print(f"  {case}: {len(picked)} of {len(trials)} candidates ({len(tuner.merged)} merged as the "
                      f"same code) in {time.perf_counter() - start:.0f} s", flush=True)
                with open(args.out, "w") as f:
                    json.dump({"rows": rows}, f)
    return rows


if __name__ == "__main__":
    main()
