"""The ``pigeon`` command line.

    pigeon show MODEL_OR_FILE [--after PASS | --all] [--backward] [--plans | --cpp | --cuda] [--cost] [--dataset NAME]
    pigeon cost [MODEL ...] [--datasets NAME ...]
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

# the heavy imports (torch, the compiler) happen inside the commands: `pigeon --help` stays quick
if TYPE_CHECKING:
    from pigeon.compiler import CompiledFunction
    from pigeon.ir.program import Program
    from pigeon.runtime.graph import Graph


class CLIError(Exception):
    """A command-line argument that names nothing usable."""


def demo_graph(num_ntypes: int = 3, num_etypes: int = 4) -> Graph:
    """A small fixed graph to trace programs on (programs do not depend on graph sizes)."""
    import torch

    from pigeon.runtime.graph import Graph
    gen = torch.Generator().manual_seed(0)
    n, e = 12, 40
    return Graph.from_edges(torch.randint(0, n, (e,), generator=gen), torch.randint(0, n, (e,), generator=gen),
                            torch.arange(e) % num_etypes, n, torch.arange(n) % num_ntypes)


def find_functions(target: str) -> list[CompiledFunction]:
    """The compiled functions named by an example model name, ``file.py`` or ``file.py:function``."""
    from pigeon.compiler import CompiledFunction
    from pigeon.examples import MODELS

    path, wanted = target.rsplit(":", 1) if ".py:" in target else (target, "")
    if path in MODELS:
        module = importlib.import_module(f"pigeon.examples.{path}")
    elif path.endswith(".py"):
        file = Path(path)
        if not file.exists():
            raise CLIError(f"no such file: {file}")
        spec = importlib.util.spec_from_file_location(file.stem, file)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[file.stem] = module
        sys.path.insert(0, str(file.resolve().parent))  # as `python file.py` would, for its imports
        spec.loader.exec_module(module)
    else:
        raise CLIError(f"{target!r} is neither an example model ({', '.join(MODELS)}) nor a .py file")
    functions = [v for k, v in vars(module).items() if isinstance(v, CompiledFunction) and (not wanted or k == wanted)]
    if not functions:
        raise CLIError(f"{target} defines no @pigeon.compile function" + (f" named {wanted}" if wanted else ""))
    return functions


def traced_program(fn: CompiledFunction, g: Graph, dtype: str, feats: int | None = None) -> Program:
    import torch
    if fn.example_inputs is None:
        raise CLIError(f"{fn.name} has no example inputs to trace with: declare it as "
                       f"@pigeon.compile(example_inputs=lambda g: (...)) returning its arguments for graph g")
    inputs = fn.example_inputs(g) if feats is None else fn.example_inputs(g, feats=feats)
    inputs = tuple(x.to(getattr(torch, dtype)) if isinstance(x, torch.Tensor) else x for x in inputs)
    return fn.program(g, *inputs)


def load_graph(name: str | None, scale: float) -> Graph:
    if name is None:
        return demo_graph()
    import pigeon.datasets
    return pigeon.datasets.load(name, scale=scale, feat_dim=1).graph


def show(args: argparse.Namespace) -> None:
    from pigeon.ir.cost import program_cost
    from pigeon.ir.lower import lower
    from pigeon.ir.passes import PASS_NAMES, differentiate, optimize, optimize_stages
    from pigeon.ir.printer import format_program
    from pigeon.runtime.layouts import graph_stats

    if args.after is not None and args.after not in ("traced", *PASS_NAMES):
        raise CLIError(f"--after {args.after}: no such stage; the stages are {', '.join(('traced', *PASS_NAMES))}")
    source = "cuda" if args.cuda else "cpp" if args.cpp else ""
    if source and args.all:
        raise CLIError(f"--{source} prints one translation unit, so one stage of the pipeline: "
                       f"choose it with --after PASS instead of --all")
    g = load_graph(args.dataset, args.scale)
    stats = graph_stats(g)
    kernels = []
    for fn in find_functions(args.target):
        program = traced_program(fn, g, args.dtype, args.feats)
        stages = optimize_stages(program, stats)
        if args.all:
            chosen = stages
        elif args.after:
            chosen = [s for s in stages if s[0] == args.after] or [stages[-1]]
        elif args.backward or args.plans or source:
            chosen = [stages[-1]]
        else:
            chosen = [stages[0]]
        for stage, p in chosen:
            if args.backward:
                p = optimize(differentiate(p).backward, stats)
            if source:  # annotations as // comments: the printed text compiles as it is
                print(f"// {fn.name} after {stage}" + (": the kernels of its optimised backward" if args.backward else ""))
                if args.cost:
                    print("".join(f"// {line}\n" for line in program_cost(p, stats).table().splitlines()), end="")
                kernels += lower(p, target=source).kernels
                continue
            if len(chosen) > 1 or stage != "traced":
                print(f"# after {stage}")
            if args.plans:
                print(lower(p).format(stats), end="")
            else:
                print(format_program(p, with_loc=args.loc), end="")
            if args.cost:
                print(program_cost(p, stats).table())
    if source:
        from pigeon.codegen import kernel_name, render_module
        unique = {kernel_name(k): k for k in kernels}  # a kernel two functions share is defined once
        print(render_module(list(unique.values()))[0], end="")


STAGES = ("linear_reorder", "horizontal_fusion", "aggregation_order", "compact")


def cost(args: argparse.Namespace) -> None:
    """FLOPs and bytes of each model on each graph, with the rewrites switched on one by one."""
    from pigeon.ir.cost import program_cost
    from pigeon.ir.passes import differentiate, optimize
    from pigeon.runtime.layouts import graph_stats

    print(f"Modelled cost per layer call, {args.feats} features in and out, float32 "
          f"(level-1 cost model; MFLOP / MB moved; x = reduction against unoptimised)")
    header = f"{'model':<6} {'graph':<8} {'mode':<6} {'passes':<16} {'MFLOP':>10} {'MB':>9} {'FLOP x':>7} {'bytes x':>7}"
    print(header)
    print("-" * len(header))
    for dataset in args.datasets:
        g = load_graph(dataset, args.scale)
        stats = graph_stats(g)
        for model in args.models:
            (fn,) = find_functions(model)
            traced = traced_program(fn, g, "float32", args.feats)
            rows = []
            for k in range(len(STAGES) + 1):
                disabled = set(STAGES[k:])
                forward = optimize(traced, stats, disabled)
                backward = optimize(differentiate(forward).backward, stats, disabled)
                label = "+" + STAGES[k - 1] if k else "unoptimised"
                infer = program_cost(forward, stats).total
                rows.append((label, "infer", infer))
                rows.append((label, "train", infer + program_cost(backward, stats).total))
            for mode in ("infer", "train"):
                base = next(c for _, m, c in rows if m == mode)
                for label, m, c in rows:
                    if m == mode:
                        print(f"{model:<6} {dataset:<8} {mode:<6} {label:<16} {c.flops / 1e6:>10.1f} "
                              f"{c.bytes / 1e6:>9.1f} {base.flops / max(c.flops, 1):>7.2f} {base.bytes / max(c.bytes, 1):>7.2f}")


def kernels(args: argparse.Namespace) -> None:
    """Kernels per layer call, their modelled FLOPs and bytes, and the H100 roofline floor."""
    from pigeon.ir.lower import lower
    from pigeon.ir.passes import differentiate, optimize
    from pigeon.ir.roofline import H100, floor_seconds, kernel_cost
    from pigeon.runtime.layouts import graph_stats

    print(f"Kernels per layer call ({args.feats} features, float32), cost model and {H100.name} roofline floor "
          f"({H100.bandwidth / 1e12:.2f} TB/s, {H100.flops['float32'] / 1e12:.0f} TFLOP/s fp32): modelled, not measured")
    for dataset in args.datasets:
        g = load_graph(dataset, args.scale)
        stats = graph_stats(g)
        for model in args.models:
            (fn,) = find_functions(model)
            forward = optimize(traced_program(fn, g, "float32", args.feats), stats)
            grad = differentiate(forward)
            phases = {"inference": forward, "training forward": grad.forward,
                      "training backward": optimize(grad.backward, stats)}
            print(f"\n{model} on {dataset} ({g.num_nodes} nodes, {g.num_edges} edges, {g.num_etypes} edge types)")
            for phase, program in phases.items():
                plans = lower(program)
                total, seconds = None, 0.0
                print(f"  {phase}: {len(plans.kernels)} kernels")
                resources = _resources(plans) if args.verbose else {}
                for k in plans.kernels:
                    c = kernel_cost(k, stats)
                    t = floor_seconds(c, "float32")
                    seconds += t
                    total = c if total is None else total + c
                    if args.verbose:
                        print(f"    {k.name:<48} {k.strategy.value:<13} {c.flops / 1e6:>9.2f} MFLOP "
                              f"{c.bytes / 1e6:>8.2f} MB {t * 1e6:>8.1f} us" + resources.get(k.name, ""))
                print(f"    total {total.flops / 1e6:.1f} MFLOP, {total.bytes / 1e6:.1f} MB, floor {seconds * 1e6:.1f} us")


def _resources(plans) -> dict[str, str]:
    """Per kernel, what ptxas reports for sm_90 (registers, stack frame, spills, shared memory)
    and the theoretical occupancy; empty without NVRTC."""
    from pigeon.codegen import render_module
    from pigeon.runtime.kernel_cache import kernel_resources, occupancy

    source, rendered = render_module(plans)
    try:
        report = kernel_resources(source, "sm_90", plans.name)
    except ImportError:
        return {}
    out = {}
    for k in rendered:
        r = report[k.name]
        out[k.plan.name] = (f"  sm_90: {r.registers:>3} regs, {r.stack_bytes:>4} B stack, {r.spill_bytes:>4} B spills, "
                            f"{r.shared_bytes:>5} B smem, occupancy {occupancy(r, k.launch.block):.0%}")
    return out


def tune(args: argparse.Namespace) -> None:
    """Tune a model on a graph, or show / clear the tuning cache."""
    import torch

    from pigeon.runtime.tuner import Tuner
    from pigeon.runtime.tuning import CACHE

    if args.clear:
        print(f"removed {CACHE.clear()} tuning entries from {CACHE.path}")
        return
    if args.show or args.target is None:
        entries = CACHE.entries()
        print(f"{len(entries)} tuning entries in {CACHE.path}")
        for key, e in sorted(entries.items(), key=lambda kv: kv[1].get("when", "")):
            print(f"  {e.get('function')} on {e.get('graph')} [{e.get('device')}, {e.get('mode')}]: "
                  f"{e.get('default_ms', 0):.2f} -> {e.get('best_ms', 0):.2f} ms ({e.get('speedup', 1):.2f}x), "
                  f"{e.get('describe')}; {e.get('trials')} trials, {e.get('when')}")
        return
    if args.dataset is None:
        raise CLIError("pigeon tune MODEL needs --dataset NAME (the graph to tune on)")
    import pigeon.datasets
    g = pigeon.datasets.load(args.dataset, scale=args.scale, feat_dim=1).graph.to(args.device)
    for fn in find_functions(args.target):
        if fn.example_inputs is None:
            raise CLIError(f"{fn.name} has no example inputs to tune with: declare @pigeon.compile(example_inputs=...)")
        inputs = fn.example_inputs(g, feats=args.feats, heads=args.heads) if args.target in ("rgcn", "rgat", "hgt") \
            else fn.example_inputs(g)
        inputs = tuple(x.to(args.device) if isinstance(x, torch.Tensor) else x for x in inputs)
        tuner = Tuner(fn, g, inputs, mode=args.mode, budget=args.budget)
        print(f"tuning {fn.name} on {args.dataset} ({g}), {args.mode}, budget {args.budget:.0f} s")
        result = tuner.run(progress=_progress)
        print(result.table())
        print(f"stored in {tuner.cache.path}")


def _progress(items: list) -> object:
    try:
        from tqdm import tqdm
        return tqdm(items, desc="trials", file=sys.stderr)
    except ImportError:
        return items


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = argparse.ArgumentParser(prog="pigeon", description="Compile relational GNN layers.", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", parents=[common],
                       help="print the program of an example model or of a file's compiled functions")
    p.add_argument("target", help="rgcn, rgat, hgt, path/to/file.py or path/to/file.py:function")
    p.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32", "float64"])
    p.add_argument("--loc", action="store_true", help="show the source line of every op")
    p.add_argument("--after", metavar="STAGE", help="the program after this stage of the pipeline: traced, or a pass "
                   "that pigeon show --all lists")
    p.add_argument("--all", action="store_true", help="the program after every stage of the pipeline")
    p.add_argument("--backward", action="store_true", help="the (optimised) backward program")
    p.add_argument("--plans", action="store_true", help="the level-2 kernel plans, with the memory they store")
    p.add_argument("--cuda", action="store_true", help="the generated CUDA source of the kernels")
    p.add_argument("--cpp", action="store_true", help="the generated C++/OpenMP source of the kernels")
    p.add_argument("--cost", action="store_true", help="the FLOPs and bytes of every op")
    p.add_argument("--dataset", help="graph whose sizes the passes optimise for (default: a small demo graph)")
    p.add_argument("--scale", type=float, default=1.0, help="scale of the --dataset graph")
    p.add_argument("--feats", type=int, help="feature size of the example inputs")
    p.set_defaults(run=show)
    c = sub.add_parser("cost", parents=[common], help="modelled FLOPs and bytes of the example models before and after the rewrites")
    c.add_argument("models", nargs="*", default=["rgcn", "rgat", "hgt"])
    c.add_argument("--datasets", nargs="+", default=["aifb", "mutag"])
    c.add_argument("--scale", type=float, default=1.0)
    c.add_argument("--feats", type=int, default=64)
    c.set_defaults(run=cost)
    k = sub.add_parser("kernels", parents=[common], help="kernels per layer call with their modelled cost and H100 roofline floor")
    k.add_argument("models", nargs="*", default=["rgcn", "rgat", "hgt"])
    k.add_argument("--datasets", nargs="+", default=["aifb", "mutag", "biokg"])
    k.add_argument("--scale", type=float, default=1.0)
    k.add_argument("--feats", type=int, default=64)
    k.add_argument("-v", "--verbose", action="store_true", help="one line per kernel")
    k.set_defaults(run=kernels)
    sub.add_parser("bench", help="time the layers beside DGL, PyG and PyTorch (pigeon bench --help; pigeon bench dropin --help)")
    t = sub.add_parser("tune", parents=[common], help="find the fastest configuration of a model on a graph and remember it")
    t.add_argument("target", nargs="?", help="rgcn, rgat, hgt, file.py or file.py:function")
    t.add_argument("--dataset", help="the graph to tune on (a name of pigeon.datasets)")
    t.add_argument("--scale", type=float, default=1.0)
    t.add_argument("--mode", default="train", choices=["infer", "train"])
    t.add_argument("--budget", type=float, default=60.0, help="seconds of timing")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--feats", type=int, default=64, help="features of an example model's inputs")
    t.add_argument("--heads", type=int, default=2, help="heads of an example model")
    t.add_argument("--show", action="store_true", help="list the tuning cache")
    t.add_argument("--clear", action="store_true", help="empty the tuning cache")
    t.set_defaults(run=tune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error is one line on stderr and exit status 2 (--debug: the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "dropin"]:  # the drop-in layers against their peers' own classes
        from pigeon.benchmarks.dropin import main as dropin
        return dropin(argv[2:])
    if argv[:1] == ["bench"]:  # the benchmark harness has its own options
        from pigeon.benchmarks.harness import main as bench
        return bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - every error of a command is reported the same way
        if args.debug:
            raise
        lines = str(err).strip().splitlines()
        message = lines[0] if lines else ""
        if not isinstance(err, CLIError):
            message = f"{type(err).__name__}: {message}" if message else type(err).__name__
        print(f"pigeon: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
