"""The speed-up of changing one import: each drop-in layer of ``pigeon.nn.pyg`` and
``pigeon.nn.dgl`` against its peer's own class, side by side in one process.

Each Pigeon layer loads its peer's ``state_dict``; the output, the input's gradient and every
parameter's gradient are checked equal (within float32 rounding; what differs is checked again
in float64, and only a difference that shrinks there is summation order) before anything is
timed, and a mismatch exits with status 1. Times are medians of repeated calls after a
warm-up; speed-up = peer time / Pigeon time. Run in the DGL environment (DGL 2.1 and PyG):

    pigeon bench dropin                                  # bgs, am, biokg, 64 features
    pigeon bench dropin --datasets aifb --scale 0.25     # a quick run
    pigeon bench dropin --layers RGCNConv HGTConv        # some layers only
    pigeon bench dropin --timeout 900                    # each case in a fresh process, at most 900 s
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

import pigeon.datasets

from .case import difference, status_of, timed, tolerance, upstream_gradient


@dataclass(frozen=True)
class DropIn:
    """A peer class and Pigeon's, built with the same arguments, called the same way."""

    name: str
    peer: Callable[[Any], torch.nn.Module]  # (graph) -> the peer's layer
    ours: Callable[[Any], torch.nn.Module]  # (graph) -> Pigeon's layer
    call: Callable[[torch.nn.Module, Any, torch.Tensor], torch.Tensor]  # (layer, inputs, x) -> output


@dataclass
class Inputs:
    """A graph in the forms the layers take."""

    graph: Any  # pigeon.Graph
    edge_index: torch.Tensor
    edge_type: torch.Tensor
    node_type: torch.Tensor
    edge_attr: torch.Tensor  # seeded, EDGE_DIM features per edge (HEATConv's edge attributes)
    dgl_graph: Any


def _pyg(name: str) -> Any:
    import torch_geometric.nn as pyg_nn
    return getattr(pyg_nn, name)


def _dgl(name: str) -> Any:
    import dgl.nn as dgl_nn
    return getattr(dgl_nn, name)


def _ours(module: str, name: str) -> Any:
    import importlib
    return getattr(importlib.import_module(f"pigeon.nn.{module}"), name)


def drop_ins(feats: int, num_bases: int) -> list[DropIn]:
    """The drop-in pairs: basis decomposition as issue-sized RGCN runs use it."""
    def bases(g: Any) -> int:
        return min(num_bases, g.num_etypes)

    def pyg_call(layer: torch.nn.Module, d: Inputs, x: torch.Tensor) -> torch.Tensor:
        return layer(x, d.edge_index, d.edge_type)

    def dgl_rgcn_call(layer: torch.nn.Module, d: Inputs, x: torch.Tensor) -> torch.Tensor:
        return layer(d.dgl_graph, x, d.edge_type)

    def heat_call(layer: torch.nn.Module, d: Inputs, x: torch.Tensor) -> torch.Tensor:
        return layer(x, d.edge_index, d.node_type, d.edge_type, d.edge_attr)

    def dgl_hgt_call(layer: torch.nn.Module, d: Inputs, x: torch.Tensor) -> torch.Tensor:
        return layer(d.dgl_graph, x, d.node_type, d.edge_type)

    def hetero_mods(lib: str, make: Callable[[], torch.nn.Module], g: Any) -> torch.nn.Module:
        return _ours("dgl", "HeteroGraphConv")({k: make() for k in hetero_metadata(g)[1]}) if lib == "pigeon" else \
            _dgl("HeteroGraphConv")({k: make() for k in hetero_metadata(g)[1]})

    heads = 4
    found = [
        DropIn("PyG RGCNConv (num_bases)", lambda g: _pyg("RGCNConv")(feats, feats, g.num_etypes, num_bases=bases(g)),
               lambda g: _ours("pyg", "RGCNConv")(feats, feats, g.num_etypes, num_bases=bases(g)), pyg_call),
        DropIn("PyG FastRGCNConv (num_bases)",
               lambda g: _pyg("FastRGCNConv")(feats, feats, g.num_etypes, num_bases=bases(g)),
               lambda g: _ours("pyg", "FastRGCNConv")(feats, feats, g.num_etypes, num_bases=bases(g)), pyg_call),
        DropIn("PyG FiLMConv", lambda g: _pyg("FiLMConv")(feats, feats, g.num_etypes),
               lambda g: _ours("pyg", "FiLMConv")(feats, feats, g.num_etypes), pyg_call),
        DropIn("PyG HANConv", lambda g: _pyg("HANConv")(feats, feats, hetero_metadata(g), heads=heads),
               lambda g: _ours("pyg", "HANConv")(feats, feats, hetero_metadata(g), heads=heads), hetero_call),
        DropIn("PyG HEATConv", lambda g: _pyg("HEATConv")(feats, feats // heads, g.num_ntypes, g.num_etypes, 16,
                                                           EDGE_DIM, 16, heads=heads),
               lambda g: _ours("pyg", "HEATConv")(feats, feats // heads, g.num_ntypes, g.num_etypes, 16,
                                                  EDGE_DIM, 16, heads=heads), heat_call),
        DropIn("DGL RelGraphConv (basis)",
               lambda g: _dgl("RelGraphConv")(feats, feats, g.num_etypes, "basis", bases(g)),
               lambda g: _ours("dgl", "RelGraphConv")(feats, feats, g.num_etypes, "basis", bases(g)), dgl_rgcn_call),
        DropIn("DGL RelGraphConv (bdd, 4 blocks)",
               lambda g: _dgl("RelGraphConv")(feats, feats, g.num_etypes, "bdd", 4),
               lambda g: _ours("dgl", "RelGraphConv")(feats, feats, g.num_etypes, "bdd", 4), dgl_rgcn_call),
        DropIn("DGL HGTConv", lambda g: _dgl("HGTConv")(feats, feats // heads, heads, g.num_ntypes, g.num_etypes, dropout=0.0),
               lambda g: _ours("dgl", "HGTConv")(feats, feats // heads, heads, g.num_ntypes, g.num_etypes, dropout=0.0),
               dgl_hgt_call),
        DropIn("DGL HeteroGraphConv (SAGEConv)",
               lambda g: hetero_mods("dgl", lambda: _dgl("SAGEConv")(feats, feats, "mean"), g),
               lambda g: hetero_mods("pigeon", lambda: _ours("dgl", "SAGEConv")(feats, feats, "mean"), g),
               dgl_hetero_call),
        DropIn("DGL HeteroGraphConv (GATConv)",
               lambda g: hetero_mods("dgl", lambda: _dgl("GATConv")(feats, feats // heads, heads), g),
               lambda g: hetero_mods("pigeon", lambda: _ours("dgl", "GATConv")(feats, feats // heads, heads), g),
               dgl_hetero_call),
    ]
    try:
        _ours("pyg", "RGATConv")
        found.append(DropIn("PyG RGATConv", lambda g: _pyg("RGATConv")(feats, feats // heads, g.num_etypes, heads=heads),
                            lambda g: _ours("pyg", "RGATConv")(feats, feats // heads, g.num_etypes, heads=heads),
                            pyg_call))
    except AttributeError:
        pass
    return found


def hetero_metadata(graph: Any) -> tuple[list[str], list[tuple[str, str, str]]]:
    """PyG metadata of a pigeon.Graph: node types t<i>, an edge type per (source type, edge type,
    destination type) that occurs."""
    triples = torch.stack([graph.ntype[graph.src], graph.etype, graph.ntype[graph.dst]], 1).unique(dim=0).tolist()
    return [f"t{i}" for i in range(graph.num_ntypes)], [(f"t{s}", f"r{r}", f"t{d}") for s, r, d in triples]


_EDGE_INDEX_DICTS: dict[int, tuple[Any, dict]] = {}


def _edge_index_dict(graph: Any) -> dict:
    """The graph's edges per edge type of ``hetero_metadata``, in per-type node ids (made once per graph)."""
    if id(graph) not in _EDGE_INDEX_DICTS or _EDGE_INDEX_DICTS[id(graph)][0] is not graph:
        local = torch.zeros_like(graph.ntype)
        for t in range(graph.num_ntypes):
            local[graph.ntype == t] = torch.arange(int((graph.ntype == t).sum()))
        edges = {}
        for key in hetero_metadata(graph)[1]:
            s, r, d = (int(k[1:]) for k in key)
            mask = (graph.ntype[graph.src] == s) & (graph.etype == r) & (graph.ntype[graph.dst] == d)
            edges[key] = torch.stack([local[graph.src[mask]], local[graph.dst[mask]]])
        _EDGE_INDEX_DICTS[id(graph)] = (graph, edges)
    return _EDGE_INDEX_DICTS[id(graph)][1]


def _per_type(x: torch.Tensor, d: Inputs) -> dict[str, torch.Tensor]:
    """The packed features as a dict per node type t<i> (one gather and a split: a boolean mask
    per type would fill a zero tensor of all of x per type in backward, for both sides)."""
    order = torch.argsort(d.node_type, stable=True)
    counts = torch.bincount(d.node_type, minlength=d.graph.num_ntypes).tolist()
    return {f"t{i}": part for i, part in enumerate(torch.split(x[order], counts))}


def hetero_call(layer: torch.nn.Module, d: Inputs, x: torch.Tensor) -> torch.Tensor:
    """A layer of x_dict / edge_index_dict on the packed features; the outputs concatenated in
    node type order (node types that no edge type reaches have none)."""
    out = layer(_per_type(x, d), _edge_index_dict(d.graph))
    return torch.cat([v for v in out.values() if v is not None])


_HETEROGRAPHS: dict[int, tuple[Any, Any]] = {}


def dgl_hetero_call(layer: torch.nn.Module, d: Inputs, x: torch.Tensor) -> torch.Tensor:
    """A DGL HeteroGraphConv on the graph as a DGL heterograph (the edge types of
    ``hetero_metadata``), the packed features split per node type; the outputs flattened and
    concatenated in node type order."""
    import dgl
    graph = d.graph
    if id(graph) not in _HETEROGRAPHS or _HETEROGRAPHS[id(graph)][0] is not graph:
        counts = {f"t{i}": int((graph.ntype == i).sum()) for i in range(graph.num_ntypes)}
        edges = {k: (e[0], e[1]) for k, e in _edge_index_dict(graph).items()}
        _HETEROGRAPHS[id(graph)] = (graph, dgl.heterograph(edges, num_nodes_dict=counts))
    out = layer(_HETEROGRAPHS[id(graph)][1], _per_type(x, d))
    return torch.cat([v.reshape(v.shape[0], -1) for v in out.values()])


EDGE_DIM = 4


def inputs_of(graph: Any) -> Inputs:
    import dgl
    src, dst = graph.src, graph.dst
    edge_attr = torch.randn(graph.num_edges, EDGE_DIM, generator=torch.Generator().manual_seed(0))
    return Inputs(graph, torch.stack([src, dst]), graph.etype, graph.ntype, edge_attr,
                  dgl.graph((src, dst), num_nodes=graph.num_nodes))


def _median_ms(step: Callable[[], Any], warmup: int, repeat: int) -> float:
    return 1e3 * statistics.median(timed(step, torch.device("cpu"), warmup, repeat))


def _gradients(layer: torch.nn.Module, d: Inputs, x: torch.Tensor, call: Callable) -> tuple[torch.Tensor, dict]:
    x = x.detach().clone().requires_grad_()
    layer.zero_grad()
    out = call(layer, d, x)
    out.backward(upstream_gradient(out))
    grads = {"input": x.grad}
    grads.update({n: p.grad for n, p in layer.named_parameters() if p.grad is not None})
    return out.detach(), grads


def _gradient_difference(ours: torch.Tensor, theirs: torch.Tensor, largest: float) -> str | None:
    """``difference``, except that two gradients that are both zero within the rounding of the
    layer's largest gradient match (a parameter whose every use is a softmax over one edge, say)."""
    negligible = tolerance(ours.dtype) * largest
    if ours.numel() and float(ours.abs().max()) <= negligible and float(theirs.abs().max()) <= negligible:
        return None
    return difference(ours, theirs)


def _problems(ours: tuple[torch.Tensor, dict], theirs: tuple[torch.Tensor, dict]) -> dict[str, str]:
    """Where the peer's output and gradients differ from Pigeon's: name -> how."""
    (ref_out, ref_grads), (out, grads) = ours, theirs
    largest = max((float(v.abs().max()) for v in ref_grads.values() if v.numel()), default=0.0)
    found = {"output": difference(ref_out, out)}
    found.update({k: _gradient_difference(v, grads[k], largest) if k in grads else "missing"
                  for k, v in ref_grads.items()})
    return {k: p for k, p in found.items() if p}


ROUNDING_AT_MOST = 1e-2  # a float32 difference beyond 1% of the largest value is no rounding


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest difference relative to Pigeon's largest magnitude (inf where that is 0 and
    they differ)."""
    ours, theirs = ours.detach().double(), theirs.detach().double()
    error = float((theirs - ours).abs().max()) if ours.numel() else 0.0
    scale = float(ours.abs().max()) if ours.numel() else 0.0
    return error / scale if scale else (math.inf if error else 0.0)


def _rounding_only(case: DropIn, d: Inputs, x: torch.Tensor, peer: torch.nn.Module,
                   flagged: dict[str, str], first: tuple[tuple, tuple]) -> str | None:
    """Whether float32 differences are summation order: each must be within 1% of the largest
    value, and the same layers and inputs in float64 must agree within float64's tolerance or a
    million times closer than in float32 (a rounding error shrinks with the precision, about
    5e8-fold; a wrong formula or mapping does not), with nothing new differing there. Returns
    the note for the check column, or None if the difference stays."""
    pick = lambda pair, name: pair[0] if name == "output" else pair[1].get(name)  # noqa: E731
    for name in flagged:
        a32, b32 = pick(first[0], name), pick(first[1], name)
        if b32 is None or a32.shape != b32.shape or not _relative_error(a32, b32) <= ROUNDING_AT_MOST:
            return None
    peer64 = copy.deepcopy(peer).double()
    ours64 = case.ours(d.graph).double()
    ours64.load_state_dict(peer64.state_dict())
    d64 = replace(d, edge_attr=d.edge_attr.double())
    try:
        second = (_gradients(ours64, d64, x.double(), case.call), _gradients(peer64, d64, x.double(), case.call))
    except Exception:  # a layer that does not run in float64: the float32 difference stands
        return None
    still = _problems(*second)
    if set(still) - set(flagged):
        return None
    for name in still:
        a64, b64 = pick(second[0], name), pick(second[1], name)
        if b64 is None or a64.shape != b64.shape or not (
                _relative_error(a64, b64) <= 1e-6 * _relative_error(pick(first[0], name), pick(first[1], name))):
            return None
    worst = max(flagged, key=lambda n: _relative_error(pick(first[0], n), pick(first[1], n)))
    return (f"same output and gradients in float64 (float32 differs by summation order, most in {worst}: "
            f"{flagged[worst]})")


def _quiet(what: str, row: dict[str, Any] | None = None) -> None:
    """Where ``compare`` reports its progress when nobody listens."""


def compare(case: DropIn, d: Inputs, x: torch.Tensor, warmup: int, repeat: int,
            report: Callable[..., None] = _quiet) -> list[dict[str, Any]]:
    """Both layers, checked equal, then timed in inference and in training; ``report(stage)``
    is told what runs next and ``report(stage, row)`` each finished row, so that a run stopped
    for time can say which side was slow and keep what finished."""
    torch.manual_seed(0)
    try:
        report("building the peer")
        peer = case.peer(d.graph)
    except Exception as err:  # a peer that cannot be built here is recorded, not dropped
        return [{"layer": case.name, "mode": m, "status": status_of(err)} for m in ("infer", "train")]
    ours = case.ours(d.graph)
    ours.load_state_dict(peer.state_dict())
    rows = []
    try:
        report("Pigeon's output and gradients")
        ref_out, ref_grads = _gradients(ours, d, x, case.call)
    except Exception as err:
        return [{"layer": case.name, "mode": m, "status": f"Pigeon {status_of(err)}"} for m in ("infer", "train")]
    try:
        report("the peer's output and gradients")
        theirs = _gradients(peer, d, x, case.call)
        problems = _problems((ref_out, ref_grads), theirs)
        check = "same output and gradients"
        if problems and x.dtype == torch.float32:
            report("the float64 recheck")
            check = _rounding_only(case, d, x, peer, problems, ((ref_out, ref_grads), theirs)) or ""
        if not check:
            check = "MISMATCH (" + "; ".join(f"{k}: {p}" for k, p in problems.items()) + ")"
    except Exception as err:
        return [{"layer": case.name, "mode": m, "status": status_of(err)} for m in ("infer", "train")]
    for mode in ("infer", "train"):
        row = {"layer": case.name, "mode": mode, "status": "ok", "check": check}
        for who, layer in (("pigeon", ours), ("peer", peer)):
            if mode == "infer":
                def step(layer=layer):
                    with torch.no_grad():
                        case.call(layer, d, x)
            else:
                def step(layer=layer):
                    _gradients(layer, d, x, case.call)
            try:
                report(f"timing {'Pigeon' if who == 'pigeon' else 'the peer'} ({'inference' if mode == 'infer' else 'training'})")
                row[f"{who}_ms"] = _median_ms(step, warmup, repeat)
            except Exception as err:
                row["status"] = f"{who}: {status_of(err)}"
        if "pigeon_ms" in row and "peer_ms" in row:
            row["speedup"] = row["peer_ms"] / row["pigeon_ms"]
        rows.append(row)
        report("done", row)
    return rows


def run_cases(dataset: str, args: argparse.Namespace, report: Callable[..., None] = _quiet) -> list[dict[str, Any]]:
    """Every selected layer on one graph, in this process; rows carry the graph's name."""
    report("loading the graph")
    data = pigeon.datasets.load(dataset, scale=args.scale, seed=0, feat_dim=args.feats)
    d = inputs_of(data.graph)
    rows = []
    for case in drop_ins(args.feats, args.num_bases):
        if case.name in args.layer or (not args.layer and _selected(case.name, args.layers)):
            rows += [{**row, "graph": dataset}
                     for row in compare(case, d, data.features, args.warmup, args.repeat, report)]
    return rows


_STAGE, _ROW = "stage: ", "row: "


def _tell_parent(stage: str, row: dict[str, Any] | None = None) -> None:
    """A child's progress, one line each on stdout for ``run_in_fresh_process``."""
    print(_ROW + json.dumps(row) if row is not None else _STAGE + stage, flush=True)


def _partial(output: Any, failed: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    """The rows a stopped child finished, and ``failed``'s others with ``status`` and the stage
    it was in."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = (output or "").splitlines()
    done = [json.loads(line[len(_ROW):]) for line in lines if line.startswith(_ROW)]
    stages = [line[len(_STAGE):] for line in lines if line.startswith(_STAGE)]
    where = f" ({stages[-1]})" if stages else ""
    finished = {row["mode"] for row in done}
    return [{**row, "graph": failed[0]["graph"]} for row in done] + [
        {**row, "status": status + where} for row in failed if row["mode"] not in finished]


def _selected(name: str, words: list[str] | None) -> bool:
    return not words or any(word.lower() in name.lower() for word in words)


def run_in_fresh_process(dataset: str, layer: str, argv: list[str], timeout: int) -> list[dict[str, Any]]:
    """One (graph, layer) case in its own process: a timeout or an out-of-memory kill is a result
    and the rest of the run goes on."""
    command = [sys.executable, "-m", "pigeon.benchmarks.dropin", *argv, "--datasets", dataset, "--layer", layer,
               "--in-process"]
    failed = [{"layer": layer, "mode": m, "graph": dataset} for m in ("infer", "train")]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired as stopped:
        return _partial(stopped.stdout, failed, f"timeout after {timeout} s")
    if done.returncode != 0:
        reason = "OOM (killed)" if done.returncode in (-9, 137) else f"crashed (exit {done.returncode}): " + \
            (done.stderr.strip().splitlines() or [""])[-1][:200]
        return _partial(done.stdout, failed, reason)
    return _partial(done.stdout, failed, "no result")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="pigeon bench dropin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["bgs", "am", "biokg"])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--feats", type=int, default=64)
    parser.add_argument("--num-bases", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", nargs="+", help="only the layers whose name contains one of these words")
    parser.add_argument("--timeout", type=int, default=0,
                        help="run each (graph, layer) in a fresh process stopped after this many seconds (0: all in this process)")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("--layer", action="append", default=[], help=argparse.SUPPRESS)  # one case, exact name
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # a child of --timeout
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.in_process:  # the child tells the parent each stage and row
        for dataset in args.datasets:
            run_cases(dataset, args, _tell_parent)
        return 0
    names = [case.name for case in drop_ins(args.feats, args.num_bases) if _selected(case.name, args.layers)]
    shared = [a for a in ("--scale", str(args.scale), "--feats", str(args.feats), "--num-bases", str(args.num_bases),
                          "--repeat", str(args.repeat), "--warmup", str(args.warmup), "--threads", str(args.threads))]
    results = []
    print(f"{'graph':<8} {'layer':<32} {'mode':<5} {'Pigeon ms':>10} {'peer ms':>10} {'speed-up':>9}  check")
    for dataset in args.datasets:
        if args.timeout:
            rows = (row for name in names for row in run_in_fresh_process(dataset, name, shared, args.timeout))
        else:
            rows = iter(run_cases(dataset, args))
        for row in rows:
            results.append(row)
            timing = (f"{row['pigeon_ms']:>10.1f} {row['peer_ms']:>10.1f} {row['speedup']:>8.2f}x"
                      if "speedup" in row else f"{'':>10} {'':>10} {'':>9}")
            print(f"{dataset:<8} {row['layer']:<32} {row['mode']:<5} {timing}  {row.get('check', row['status'])}",
                  flush=True)
    for mode in ("infer", "train"):
        ups = [r["speedup"] for r in results if r["mode"] == mode and "speedup" in r]
        if ups:
            print(f"geometric mean speed-up, {mode}: {math.exp(sum(map(math.log, ups)) / len(ups)):.2f}x over {len(ups)} cases"
                  f" (below 1x: {sum(u < 1 for u in ups)})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if any("MISMATCH" in r.get("check", "") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
