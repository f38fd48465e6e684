"""Minibatch training of Pigeon layers on several processes: ``torch.distributed`` (DDP) for the
gradients, DGL's ``NeighborSampler`` and ``DataLoader(use_ddp=True)`` for the batches. Nothing of
the training loop is Pigeon's own: a Pigeon layer is an ordinary torch module on DGL blocks.

    torchrun --standalone --nproc_per_node 2 examples/distributed.py [--model rgat] [--epochs 3]
    python examples/distributed.py --bench        # seeds per second, 1 and 2 processes, Pigeon and DGL layers

Each process builds the same seeded graph (``pigeon.datasets.synthetic``, a homogeneous DGL graph
with ``dgl.ETYPE``/``dgl.NTYPE`` and the node features in ``ndata``) and keeps it once; DGL's
DataLoader gives each rank its own share of the shuffled training nodes every epoch. DDP uses
``gloo`` on the CPU and ``nccl`` on a GPU. ``--impl dgl`` swaps in DGL's own ``RelGraphConv`` or
``HGTConv`` (same model, same call) for comparison; DGL has no RGAT layer. Needs DGL (the DGL
environment: torch 2.2 + dgl 2.1).

Pigeon under DDP: every process traces each layer's program once per signature and builds one
executable per graph-size bucket; the C++ libraries are shared through the disk cache
(``PIGEON_CACHE_DIR``), whose entries are written atomically, so the ranks never see each other's
partial files (the second rank to need a library loads the first one's).
"""
from __future__ import annotations

import os

# Two OpenMP runtimes share the cores: torch's own copy of libgomp, and the system one that DGL
# and Pigeon's C++ kernels use. Idle threads of one that spin starve the other's threads (training
# ran 10x slower on 2 cores); idle threads that sleep do not. Read when torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dgl
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from dgl.dataloading import DataLoader, MultiLayerFullNeighborSampler, NeighborSampler

import pigeon.datasets
import pigeon.nn
import pigeon.nn.dgl
from pigeon.compiler import recording_calls
from pigeon.runtime.layouts import graph_stats

MODELS = ("rgat", "hgt", "rgcn")
IMPLS = ("pigeon", "dgl")


def build_graph(dataset: str = "aifb", scale: float = 1.0, feat_dim: int = 64, num_classes: int = 8,
                seed: int = 0, dtype: torch.dtype = torch.float32) -> dgl.DGLGraph:
    """The seeded synthetic graph ``dataset`` as a homogeneous DGL graph: ``edata[dgl.ETYPE]``,
    ``ndata[dgl.NTYPE]``, ``"feat"``, ``"label"``, ``"train_mask"``; the type counts in
    ``g.num_rels``, ``g.num_ntypes_`` and the classes in ``g.num_classes``."""
    ds = pigeon.datasets.synthetic(dataset, scale=scale, seed=seed, feat_dim=feat_dim, num_classes=num_classes,
                                   dtype=dtype)
    pg = ds.graph
    g = dgl.graph((pg.src, pg.dst), num_nodes=pg.num_nodes)
    g.edata[dgl.ETYPE] = pg.etype
    g.ndata[dgl.NTYPE] = pg.ntype
    g.ndata["feat"], g.ndata["label"], g.ndata["train_mask"] = ds.features, ds.labels, ds.train_mask
    g.num_rels, g.num_ntypes_, g.num_classes = pg.num_etypes, pg.num_ntypes, ds.num_classes
    return g


class Model(nn.Module):
    """Two relational layers (``model``: rgat, hgt or rgcn) of ``impl`` (pigeon or dgl), then a
    linear classifier; called on two DGL blocks and the input features of the first one."""

    def __init__(self, model: str, impl: str, in_feats: int, hidden: int, num_classes: int, num_rels: int,
                 num_ntypes: int, heads: int = 4):
        super().__init__()
        if model not in MODELS or impl not in IMPLS:
            raise ValueError(f"model must be one of {MODELS} and impl one of {IMPLS}, got {model!r}, {impl!r}")
        if model == "rgat" and impl == "dgl":
            raise ValueError("DGL has no RGAT layer: compare with --model rgcn (RelGraphConv) or hgt (HGTConv)")
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.model = model
        dims = [(in_feats, hidden), (hidden, hidden)]
        if model == "rgat":
            self.convs = nn.ModuleList(pigeon.nn.RGATConv(i, o // heads, num_rels, num_heads=heads) for i, o in dims)
        elif model == "hgt":
            layer = pigeon.nn.dgl.HGTConv if impl == "pigeon" else dgl.nn.HGTConv
            self.convs = nn.ModuleList(layer(i, o // heads, heads, num_ntypes, num_rels, dropout=0.0) for i, o in dims)
        else:
            layer = pigeon.nn.dgl.RelGraphConv if impl == "pigeon" else dgl.nn.RelGraphConv
            self.convs = nn.ModuleList(layer(i, o, num_rels, self_loop=True) for i, o in dims)
        self.classify = nn.Linear(hidden, num_classes)

    def forward(self, blocks: list[dgl.DGLGraph], x: torch.Tensor) -> torch.Tensor:
        for conv, block in zip(self.convs, blocks):
            if self.model == "rgat":
                x = conv(block, x)
            elif self.model == "hgt":
                x = conv(block, x, block.srcdata[dgl.NTYPE], block.edata[dgl.ETYPE])
            else:
                x = conv(block, x, block.edata[dgl.ETYPE], block.edata["norm"])
            x = F.relu(x)
        return self.classify(x)


def batch_inputs(g: dgl.DGLGraph, input_nodes: torch.Tensor, blocks: list[dgl.DGLGraph]) -> torch.Tensor:
    """The input features of a batch (the rows its first block reads); gives every block its
    sources' node types and RGCN's ``norm``."""
    for block in blocks:
        block.srcdata[dgl.NTYPE] = g.ndata[dgl.NTYPE][block.srcdata[dgl.NID]]
        block.edata["norm"] = dgl.norm_by_dst(block).unsqueeze(1).to(g.ndata["feat"].dtype)
    return g.ndata["feat"][input_nodes]


def batch_loss(model: nn.Module, g: dgl.DGLGraph, input_nodes: torch.Tensor, seeds: torch.Tensor,
               blocks: list[dgl.DGLGraph]) -> torch.Tensor:
    """The mean cross-entropy over the batch's seeds."""
    return F.cross_entropy(model(blocks, batch_inputs(g, input_nodes, blocks)), g.ndata["label"][seeds])


def make_model(args: argparse.Namespace, g: dgl.DGLGraph, impl: str) -> Model:
    torch.manual_seed(args.seed)  # the same weights on every rank (DDP also broadcasts rank 0's)
    return Model(args.model, impl, g.ndata["feat"].shape[1], args.hidden, g.num_classes, g.num_rels,
                 g.num_ntypes_, args.heads).to(g.ndata["feat"].dtype)


def sampler_for(fanouts: list[int]):
    """DGL's neighbour sampler (a fanout of -1 takes every neighbour)."""
    return MultiLayerFullNeighborSampler(len(fanouts)) if all(f < 0 for f in fanouts) else NeighborSampler(fanouts)


def train(args: argparse.Namespace, g: dgl.DGLGraph, impl: str) -> dict:
    """Train one (model, impl) on this rank's share of the batches; the rank-0 figures of the run."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model(args, g, impl)
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    train_nids = torch.nonzero(g.ndata["train_mask"], as_tuple=True)[0]
    loader = DataLoader(g, train_nids, sampler_for(args.fanouts), batch_size=args.batch_size, shuffle=True,
                        drop_last=False, use_ddp=True, ddp_seed=args.seed)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    losses, epoch_rates, feature_bytes, step_times, batches = [], [], [], [], 0
    seen, first_epoch_counts = CompiledSeen(), {}
    for epoch in range(args.epochs):
        ddp.train()
        total, seeds_done = torch.zeros(2, dtype=torch.float64), 0
        dist.barrier()
        start = time.perf_counter()
        for input_nodes, seeds, blocks in loader:
            step_start = time.perf_counter()
            with recording_calls() as calls:
                loss = batch_loss(ddp, g, input_nodes, seeds, blocks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step_times.append(time.perf_counter() - step_start)
            feature_bytes.append(len(input_nodes) * g.ndata["feat"][:1].nbytes)
            total += torch.tensor([loss.item() * len(seeds), len(seeds)], dtype=torch.float64)
            seeds_done += len(seeds)
            batches += 1
            seen.record(calls)
        first_epoch_counts = first_epoch_counts or seen.counts()
        dist.barrier()
        elapsed = time.perf_counter() - start
        dist.all_reduce(total)  # the loss over every rank's seeds, and how many seeds
        losses.append(float(total[0] / total[1]))
        epoch_rates.append(float(total[1]) / elapsed)
        if rank == 0:
            print(f"{args.model} {impl} | epoch {epoch} | loss {losses[-1]:.4f} | {epoch_rates[-1]:.0f} seeds/s "
                  f"on {world} process(es)", flush=True)
    steady = epoch_rates[1:] or epoch_rates  # the first epoch traces and compiles
    if rank == 0 and seen.traced:
        print(f"{args.model} {impl} | traced programs: {first_epoch_counts['traced_programs']} after the first epoch, "
              f"{len(seen.traced)} at the end | executables (one per program and graph-size bucket): "
              f"{first_epoch_counts['executables']}, then {len(seen.buckets)}", flush=True)
    return {"model": args.model, "impl": impl, "processes": world, "threads": torch.get_num_threads(),
            "losses": losses, "seeds_per_s": float(np.median(steady)), "best_seeds_per_s": float(max(steady)),
            "epoch_seeds_per_s": epoch_rates, "grad_bytes": grad_bytes,
            "feature_bytes_per_batch": float(np.mean(feature_bytes)), "step_s": float(np.median(step_times)),
            "allreduce_s": allreduce_time(grad_bytes, g.ndata["feat"].dtype), "batches": batches,
            "after_first_epoch": first_epoch_counts, **seen.counts()}


def allreduce_time(grad_bytes: int, dtype: torch.dtype, repeat: int = 20) -> float:
    """Median seconds of one all-reduce of ``grad_bytes`` of gradients in the process group."""
    flat = torch.zeros(grad_bytes // torch.tensor([], dtype=dtype).element_size(), dtype=dtype)
    times = []
    for _ in range(repeat):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class CompiledSeen:
    """What the Pigeon layers ran, batch after batch (from ``pigeon.compiler.recording_calls``):
    the traced programs, one per layer signature (a retrace per batch would add one each batch),
    and the (program, graph-size bucket) pairs, one optimised executable each."""

    def __init__(self) -> None:
        self.traced: dict[int, object] = {}
        self.buckets: set[tuple] = set()

    def record(self, calls: list) -> None:
        for fn, graph, args, kwargs in calls:
            program = fn.program(graph, *args, **kwargs)  # the cached trace: tracing again would be a new object
            self.traced[id(program)] = program
            self.buckets.add((id(program), graph_stats(graph).bucket()))

    def counts(self) -> dict:
        return {"traced_programs": len(self.traced), "executables": len(self.buckets)}


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option has its help text)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="rgat", help="the relational layer (default: rgat)")
    parser.add_argument("--impl", choices=IMPLS, nargs="+", default=["pigeon"],
                        help="whose layers: pigeon, dgl (DGL's RelGraphConv / HGTConv), or both in turn "
                             "(default: pigeon)")
    parser.add_argument("--dataset", default="aifb", help="synthetic data set shape (pigeon.datasets; default: aifb)")
    parser.add_argument("--scale", type=float, default=1.0, help="graph size relative to the data set (default: 1.0)")
    parser.add_argument("--feat-dim", type=int, default=64, help="input feature width (default: 64)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of both layers (default: 64)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads of RGAT and HGT (default: 4)")
    parser.add_argument("--num-classes", type=int, default=8, help="classes of the node labels (default: 8)")
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 10],
                        help="neighbours sampled per layer, first layer first; -1 takes all (default: 10 10)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="seeds per batch on each rank; with --bench, in all (split between the processes) "
                             "(default: 256)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the first one traces and compiles (default: 3)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate (default: 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the graph, the weights and the shuffling (default: 0)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (default: 0, the CPU cores split between the local processes)")
    parser.add_argument("--json", default=None, help="write rank 0's figures (with --bench: every run's) to this file")
    parser.add_argument("--bench", action="store_true",
                        help="instead of training once: run torchrun for each --bench-procs, every --bench-models "
                             "with each implementation, and print one table of seeds per second")
    parser.add_argument("--bench-procs", type=int, nargs="+", default=[1, 2],
                        help="process counts for --bench (default: 1 2)")
    parser.add_argument("--bench-models", choices=MODELS, nargs="+", default=["rgcn", "hgt", "rgat"],
                        help="models for --bench (default: rgcn hgt rgat)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds each torchrun of --bench may take (default: 1200)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def worker(args: argparse.Namespace) -> None:
    """One rank, as torchrun starts it."""
    warnings.filterwarnings("ignore", message="Dataloader CPU affinity opt is not enabled")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    np.random.seed(args.seed)
    dgl.seed(args.seed)
    g = build_graph(args.dataset, args.scale, args.feat_dim, args.num_classes, args.seed)
    results = [train(args, g, impl) for impl in args.impl]
    if dist.get_rank() == 0 and args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    close_process_group()  # after a failure, torchrun stops the other ranks


def close_process_group() -> None:
    """``dist.destroy_process_group()`` once gloo's worker threads have let go of every tensor.
    A worker may still be dropping a finished collective's tensor, which takes the GIL, while
    destroying the group holds the GIL and joins the workers: a deadlock (seen with torch 2.2).
    The barrier flushes their queues and the sleep hands them the GIL; every rank must call it."""
    dist.barrier()
    time.sleep(0.1)
    dist.destroy_process_group()


def bench(args: argparse.Namespace) -> None:
    """Every (processes, model, impl) in one run, each process count under its own torchrun."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.bench_models:  # each model's process counts back to back: alike conditions
            for procs in args.bench_procs:
                impls = ["pigeon"] if model == "rgat" else ["pigeon", "dgl"]
                out = Path(tmp) / f"{procs}-{model}.json"
                # the same global batch on every process count: the same steps, comparable loss curves
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                           __file__, "--model", model, "--impl", *impls, "--json", str(out)] + _passed_on(args) + [
                           "--batch-size", str(max(1, args.batch_size // procs))]
                subprocess.run(command, check=True, timeout=args.timeout)
                rows += json.loads(out.read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    rows.sort(key=lambda r: (r["processes"], args.bench_models.index(r["model"])))
    print_table(rows, os.cpu_count())


def _passed_on(args: argparse.Namespace) -> list[str]:
    flags = ["--dataset", args.dataset, "--scale", str(args.scale), "--feat-dim", str(args.feat_dim),
             "--hidden", str(args.hidden), "--heads", str(args.heads), "--num-classes", str(args.num_classes),
             "--epochs", str(args.epochs), "--lr", str(args.lr),
             "--seed", str(args.seed), "--fanouts", *map(str, args.fanouts)]
    return flags + (["--threads", str(args.threads)] if args.threads else [])


# assumed for the paper estimate of multi-GPU scaling (not measured here: this machine has no GPU)
NVLINK_BYTES_S = 150e9   # ring all-reduce bus bandwidth between GPUs of one node
PCIE_BYTES_S = 20e9      # host-to-device copies of the batch's features
LATENCY_S = 30e-6        # fixed cost of one NCCL all-reduce of a small buffer


def comm_estimate(row: dict, gpus: int) -> float:
    """Seconds per step of GPU communication that the layers' compute must hide: the ring
    all-reduce of the gradients (2 (N-1)/N of their bytes) and the copy of the features."""
    ring = 2 * (gpus - 1) / gpus * row["grad_bytes"] / NVLINK_BYTES_S + (LATENCY_S if gpus > 1 else 0.0)
    return ring + row["feature_bytes_per_batch"] / PCIE_BYTES_S


def layer_name(row: dict) -> str:
    return "Pigeon" if row["impl"] == "pigeon" else {"rgcn": "DGL RelGraphConv", "hgt": "DGL HGTConv"}[row["model"]]


def print_table(rows: list[dict], cores: int | None) -> None:
    """The measured seeds per second and the paper estimate of multi-GPU scaling, as Markdown."""
    one = {(r["model"], r["impl"]): r["seeds_per_s"] for r in rows if r["processes"] == 1}
    print(f"\ntraining seeds per second (median and best of the epochs after the first), {cores} CPU cores, "
          "threads per process = cores / processes, the same global batch on every process count")
    print("| model | layers | processes x threads | seeds/s median (best) | median vs 1 process | loss per epoch | "
          "grad KB/step | feature KB/batch | step ms | gloo all-reduce ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = one.get((r["model"], r["impl"]))
        speedup = f"{r['seeds_per_s'] / base:.2f}x" if base else "-"
        print(f"| {r['model']} | {layer_name(r)} | {r['processes']} x {r['threads']} | {r['seeds_per_s']:.0f} "
              f"({r.get('best_seeds_per_s', r['seeds_per_s']):.0f}) | {speedup} | "
              f"{' '.join(f'{x:.3f}' for x in r['losses'])} | {r['grad_bytes'] / 1e3:.1f} | "
              f"{r['feature_bytes_per_batch'] / 1e3:.1f} | {r['step_s'] * 1e3:.1f} | "
              f"{r['allreduce_s'] * 1e3 if r['processes'] > 1 else 0:.1f} |")
    print("\npaper estimate for N GPUs (weak scaling: one batch per GPU; communication not overlapped with compute; "
          f"assumed {NVLINK_BYTES_S / 1e9:.0f} GB/s all-reduce bus bandwidth, {PCIE_BYTES_S / 1e9:.0f} GB/s "
          f"host-to-device, {LATENCY_S * 1e6:.0f} us per all-reduce): communication per step, and the compute per "
          "batch that keeps 90% of linear scaling on 8 GPUs")
    print("| model | layers | grad KB/step | feature KB/batch | comm us, 2 GPUs | comm us, 8 GPUs | "
          "compute for 90% on 8 GPUs | measured step here (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["processes"] == 1:
            c2, c8 = comm_estimate(r, 2), comm_estimate(r, 8)
            print(f"| {r['model']} | {layer_name(r)} | {r['grad_bytes'] / 1e3:.1f} | "
                  f"{r['feature_bytes_per_batch'] / 1e3:.1f} | {c2 * 1e6:.0f} | {c8 * 1e6:.0f} | "
                  f">= {9 * c8 * 1e6:.0f} us | {r['step_s'] * 1e3:.1f} ms |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bench:
        bench(args)
    elif "RANK" not in os.environ:
        sys.exit("start it with torchrun: torchrun --standalone --nproc_per_node 2 examples/distributed.py "
                 "(or python examples/distributed.py --bench)")
    else:
        worker(args)


if __name__ == "__main__":
    main()
