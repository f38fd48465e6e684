"""Multi-machine minibatch training with DGL's distributed engine (DistDGL) and Pigeon layers: the
graph is cut by ``dgl.distributed.partition_graph``, one DGL server per machine holds a partition
(structure and features, its KV store), and the trainers sample with ``DistNodeDataLoader`` from
the ``DistGraph``, fetch the features of their batches from the servers and train the model of
``examples/distributed.py`` under DDP. Pigeon adds nothing to the engine: its layers run on the
sampled blocks.

    python examples/dist_dgl.py --num-parts 2 --num-trainers 2 --epochs 1
        # all of it on this machine: partitions, servers and trainers on 127.0.0.1; stops by itself

    python examples/dist_dgl.py --partition-only --num-parts 2 --workdir /shared/parts
    python examples/dist_dgl.py --ip-config ip_config.txt --machine K --num-trainers 2 --workdir /shared/parts
        # real machines: partition once, then run the second line on machine K of ip_config.txt (one
        # "IP port" line per machine, partition K served on machine K), every machine at about the same time

On one machine DGL cannot tell its simulated machines apart: it finds a trainer's machine by its
IP address, and names the servers' shared memory by data name only. The local run therefore tells
each trainer its machine, prefixes each simulated machine's shared-memory names with its own
name, and keeps the graph structure out of shared memory (``local_machine_shim``); with
``--ip-config`` none of that is done. Needs DGL (the DGL environment: torch 2.2 + dgl 2.1).
"""
from __future__ import annotations

import os

# Two OpenMP runtimes share the cores: torch's own copy of libgomp, and the system one that DGL
# and Pigeon's C++ kernels use. Idle threads of one that spin starve the other's threads (training
# ran 10x slower on 2 cores); idle threads that sleep do not. Read when torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dgl
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

if __package__:
    from . import distributed as single_machine
else:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import distributed as single_machine  # noqa: E402

GRAPH_NAME = "pigeon"


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option has its help text; the hidden ones are the launcher's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-parts", type=int, default=2, help="graph partitions, one per (simulated) machine (default: 2)")
    parser.add_argument("--num-trainers", type=int, default=2,
                        help="trainers: in all on this machine, per machine with --ip-config (default: 2)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs (default: 1)")
    parser.add_argument("--model", choices=("rgat", "hgt", "rgcn"), default="rgat", help="Pigeon's layer (default: rgat)")
    parser.add_argument("--dataset", default="aifb", help="synthetic data set shape (default: aifb)")
    parser.add_argument("--scale", type=float, default=0.25, help="graph size relative to the data set (default: 0.25)")
    parser.add_argument("--feat-dim", type=int, default=32, help="input feature width (default: 32)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden width (default: 32)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    parser.add_argument("--num-classes", type=int, default=8, help="classes of the node labels (default: 8)")
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 10], help="neighbours sampled per layer (default: 10 10)")
    parser.add_argument("--batch-size", type=int, default=128, help="seeds per batch per trainer (default: 128)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate (default: 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the graph and the weights (default: 0)")
    parser.add_argument("--part-method", choices=("metis", "random"), default="metis",
                        help="how partition_graph cuts the graph (default: metis)")
    parser.add_argument("--workdir", default=None,
                        help="folder of the partitions (default: a temporary one, removed at the end)")
    parser.add_argument("--ip-config", default=None,
                        help="DGL's ip_config file of real machines (one 'IP port' line each); without it, all "
                             "runs on 127.0.0.1")
    parser.add_argument("--machine", type=int, default=0, help="with --ip-config: this machine's line in it (default: 0)")
    parser.add_argument("--master-port", type=int, default=29533,
                        help="with --ip-config: torch.distributed's port on the first machine (default: 29533)")
    parser.add_argument("--partition-only", action="store_true", help="write the partitions to --workdir and stop")
    parser.add_argument("--check-features", action="store_true",
                        help="each trainer compares every node's features and labels, as the servers give them, "
                             "with the graph before partitioning")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before every process is stopped (default: 600)")
    parser.add_argument("--role", choices=("launch", "server", "trainer"), default="launch", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--shm-prefix", default="", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def partition(args: argparse.Namespace, workdir: Path) -> Path:
    """Partition the seeded graph into ``workdir``; the path of DGL's partition config."""
    g = single_machine.build_graph(args.dataset, args.scale, args.feat_dim, args.num_classes, args.seed)
    meta = {"num_rels": g.num_rels, "num_ntypes": g.num_ntypes_, "num_classes": g.num_classes,
            "feat_dim": args.feat_dim, "num_nodes": g.num_nodes(), "num_edges": g.num_edges()}
    # stored under plain names: partition_graph gives dgl.NTYPE / dgl.ETYPE a meaning of its own
    g.ndata["ntype"], g.edata["etype"] = g.ndata.pop(dgl.NTYPE), g.edata.pop(dgl.ETYPE)
    extra = {"balance_ntypes": g.ndata["train_mask"].long()} if args.part_method == "metis" else {}
    node_ids, edge_ids = dgl.distributed.partition_graph(
        g, GRAPH_NAME, args.num_parts, str(workdir), part_method=args.part_method,
        balance_edges=args.part_method == "metis", return_mapping=True, **extra)
    torch.save({"nodes": node_ids, "edges": edge_ids}, workdir / "original_ids.pt")
    (workdir / "meta.json").write_text(json.dumps(meta))
    return workdir / f"{GRAPH_NAME}.json"


def local_machine_shim(machine: int, shm_prefix: str) -> None:
    """For several simulated machines on one host: this process is on ``machine``, and the shared
    memory of that machine's server gets names of its own (DGL names it by data name only)."""
    import dgl.distributed.kvstore as kvstore
    import dgl.distributed.rpc_client as rpc_client

    empty_shared_mem = kvstore.empty_shared_mem
    kvstore.empty_shared_mem = lambda name, *rest: empty_shared_mem(f"{shm_prefix}m{machine}-{name}", *rest)
    rpc_client.get_local_machine_id = lambda server_namebook: machine


def serve(args: argparse.Namespace, part_config: Path) -> None:
    """One DGL server, for the partition of machine ``args.rank``; returns when the trainers are done."""
    local = args.ip_config is None
    if local:
        local_machine_shim(args.rank, args.shm_prefix)
    server = dgl.distributed.DistGraphServer(args.rank, str(ip_config_path(args, part_config.parent)), 1, args.world,
                                             str(part_config), disable_shared_mem=local, graph_format=["csc", "coo"])
    server.start()


def ip_config_path(args: argparse.Namespace, workdir: Path) -> Path:
    return Path(args.ip_config) if args.ip_config else workdir / "ip_config.txt"


def machine_ips(args: argparse.Namespace, workdir: Path) -> list[str]:
    """The IP address of each machine, in ip_config order."""
    return [line.split()[0] for line in ip_config_path(args, workdir).read_text().splitlines() if line.strip()]


def batch_inputs(g: dgl.distributed.DistGraph, input_nodes: torch.Tensor, blocks: list) -> torch.Tensor:
    """The batch's input features, pulled from the servers; every block gets its edge types,
    its sources' node types and RGCN's ``norm`` (pulled too)."""
    for block in blocks:
        block.edata[dgl.ETYPE] = g.edata["etype"][block.edata[dgl.EID]]
        block.srcdata[dgl.NTYPE] = g.ndata["ntype"][block.srcdata[dgl.NID]]
        block.edata["norm"] = dgl.norm_by_dst(block).unsqueeze(1)
    return g.ndata["feat"][input_nodes]


def train(args: argparse.Namespace, part_config: Path) -> None:
    """One trainer: global rank ``args.rank`` of ``args.world``."""
    local, ips = args.ip_config is None, machine_ips(args, part_config.parent)
    machine = args.rank % len(ips) if local else args.machine
    if local:
        local_machine_shim(machine, args.shm_prefix)
    # the trainers on one host share its cores (on one machine: every trainer)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // (args.world if local else args.num_trainers)))
    dgl.distributed.initialize(str(ip_config_path(args, part_config.parent)))
    master = ips[0]
    dist.init_process_group("gloo", init_method=f"tcp://{master}:{args.master_port}", rank=args.rank,
                            world_size=args.world)
    meta = json.loads((part_config.parent / "meta.json").read_text())
    book, _, _, _ = dgl.distributed.load_partition_book(str(part_config), machine)
    g = dgl.distributed.DistGraph(GRAPH_NAME, gpb=book)
    if args.check_features:
        check_features(args, g, part_config.parent)
    train_nids = dgl.distributed.node_split(g.ndata["train_mask"], g.get_partition_book(), force_even=True)
    loader = dgl.dataloading.DistNodeDataLoader(g, train_nids, dgl.dataloading.NeighborSampler(args.fanouts),
                                                batch_size=args.batch_size, shuffle=True, drop_last=False)
    torch.manual_seed(args.seed)
    model = single_machine.Model(args.model, "pigeon", meta["feat_dim"], args.hidden, meta["num_classes"],
                                 meta["num_rels"], meta["num_ntypes"], args.heads)
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    epochs = []
    for epoch in range(args.epochs):
        total, seeds_done, start = 0.0, 0, time.perf_counter()
        with ddp.join():  # the trainers' shares may differ by a batch
            for input_nodes, seeds, blocks in loader:
                x = batch_inputs(g, input_nodes, blocks)
                loss = F.cross_entropy(ddp(blocks, x), g.ndata["label"][seeds])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(seeds)
                seeds_done += len(seeds)
        epochs.append({"epoch": epoch, "loss": total / max(seeds_done, 1), "seeds": seeds_done,
                       "seeds_per_s": seeds_done / (time.perf_counter() - start)})
    # the launcher prints them: lines written by several processes at once can interleave
    (part_config.parent / f"trainer{args.rank}.json").write_text(json.dumps(
        {"machine": machine, "machines": len(ips), "features_checked": args.check_features, "epochs": epochs}))
    single_machine.close_process_group()  # DGL's atexit hook then stops the servers (trainer 0 asks them)


def check_features(args: argparse.Namespace, g: dgl.distributed.DistGraph, workdir: Path) -> None:
    """Every node's features, label and type and every edge's type, pulled from the servers, are
    those of the graph before partitioning (partition_graph renumbers nodes and edges:
    ``original_ids`` maps them back)."""
    original = single_machine.build_graph(args.dataset, args.scale, args.feat_dim, args.num_classes, args.seed)
    ids = torch.load(workdir / "original_ids.pt")
    nodes, edges = torch.arange(g.num_nodes()), torch.arange(g.num_edges())
    pairs = [(g.ndata[name][nodes], original.ndata[name][ids["nodes"]], name) for name in ("feat", "label", "train_mask")]
    pairs += [(g.ndata["ntype"][nodes], original.ndata[dgl.NTYPE][ids["nodes"]], "ntype"),
              (g.edata["etype"][edges], original.edata[dgl.ETYPE][ids["edges"]], "etype")]
    for served, before, name in pairs:
        if not torch.equal(served, before):
            raise RuntimeError(f"trainer {args.rank}: the servers' {name!r} differs from the graph's")


def report(rank: int, result: dict) -> None:
    """A trainer's epochs, one line each."""
    if result["features_checked"]:
        print(f"trainer {rank} | features match", flush=True)
    for e in result["epochs"]:
        print(f"trainer {rank} | epoch {e['epoch']} | loss {e['loss']:.4f} | {e['seeds']} seeds, "
              f"{e['seeds_per_s']:.0f} seeds/s | machine {result['machine']} of {result['machines']}", flush=True)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait(trainers: list[subprocess.Popen], servers: list[subprocess.Popen], deadline: float) -> int:
    """0 once every trainer has finished and then every server (trainer 0 stops them); the first
    failure's exit status as soon as one fails; TimeoutExpired at ``deadline``."""
    while True:
        codes = [p.poll() for p in trainers + servers]
        failed = [c for c in codes if c not in (None, 0)]
        if failed or all(c == 0 for c in codes):
            return failed[0] if failed else 0
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired("examples/dist_dgl.py", deadline)
        time.sleep(0.2)


def launch(args: argparse.Namespace, workdir: Path) -> int:
    """Start this machine's server(s) and trainers, wait for them within ``--timeout`` and stop
    whatever is left; the exit status (0: every trainer finished)."""
    local = args.ip_config is None
    if local:
        part_config = partition(args, workdir)
        *server_ports, master_port = free_ports(args.num_parts + 1)
        ip_config_path(args, workdir).write_text("".join(f"127.0.0.1 {p}\n" for p in server_ports))
        servers, trainers, world = list(range(args.num_parts)), list(range(args.num_trainers)), args.num_trainers
    else:
        part_config = workdir / f"{GRAPH_NAME}.json"
        parts, machines = json.loads(part_config.read_text())["num_parts"], len(machine_ips(args, workdir))
        if parts != machines:
            raise SystemExit(f"--ip-config lists {machines} machines but {part_config} has {parts} partitions: "
                             "DGL serves one partition per machine")
        master_port, world = args.master_port, len(machine_ips(args, workdir)) * args.num_trainers
        servers = [args.machine]
        trainers = [args.machine * args.num_trainers + i for i in range(args.num_trainers)]
    shm_prefix = f"pigeon{os.getpid()}"
    common = [sys.executable, __file__, *args.argv, "--workdir", str(workdir), "--world", str(world),
              "--master-port", str(master_port), "--shm-prefix", shm_prefix]
    env = dict(os.environ, DGL_NUM_SERVER="1", DGL_DIST_MODE="distributed", DGL_NUM_SAMPLER="0",
               DGL_DIST_MAX_TRY_TIMES=str(max(10, int(args.timeout // 3))))
    deadline = time.monotonic() + args.timeout
    processes: list[subprocess.Popen] = []
    try:
        for s in servers:
            processes.append(subprocess.Popen(common + ["--role", "server", "--rank", str(s)],
                                              env=dict(env, DGL_ROLE="server")))
        for r in trainers:
            processes.append(subprocess.Popen(common + ["--role", "trainer", "--rank", str(r)],
                                              env=dict(env, DGL_ROLE="client")))
        status = wait(processes[len(servers):], processes[:len(servers)], deadline)
        if status:
            print(f"a process failed (exit status {status}): stopping the others", flush=True)
            return status
        print("servers stopped", flush=True)
        for rank in trainers:
            report(rank, json.loads((workdir / f"trainer{rank}.json").read_text()))
        return 0
    except subprocess.TimeoutExpired:
        print(f"stopped after --timeout {args.timeout:.0f} s", flush=True)
        return 124
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        for leftover in Path("/dev/shm").glob(f"{shm_prefix}*"):
            leftover.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv  # passed on to the servers and trainers
    if args.role != "launch":
        part_config = Path(args.workdir) / f"{GRAPH_NAME}.json"
        (serve if args.role == "server" else train)(args, part_config)
        return
    with tempfile.TemporaryDirectory(prefix="pigeon-dist-dgl-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.partition_only:
            print(f"partitions in {partition(args, workdir).parent}")
            return
        sys.exit(launch(args, workdir))


if __name__ == "__main__":
    main()
