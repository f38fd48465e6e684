"""Every typed GEMM plan of the example models, as generated C++, against torch.matmul (MKL or
OpenBLAS, whichever torch links) on the same rows, gathered and grouped by type beforehand:
one matmul per type, as a per-relation loop in PyTorch does. The generated kernel's time
includes its own gather and epilogue; torch's does not.

    python benchmarks/cpu_gemm.py --datasets aifb mutag --feats 64 128
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pigeon.datasets
from pigeon.examples import hgt, rgat, rgcn
from pigeon.ir.lower import lower
from pigeon.ir.passes import decompose_softmax
from pigeon.ir.plans import PlanProgram, Strategy
from pigeon.ir.program import Program
from pigeon.runtime import cpp, launcher, layouts
from pigeon.runtime.reference import execute

MODELS = {"rgcn": rgcn.rgcn, "rgat": rgat.rgat, "hgt": hgt.hgt}


def median_ms(step, repeat: int) -> float:
    step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def compare(g, plan, memory: dict, repeat: int) -> tuple[float, float]:
    """(generated kernel ms, torch.matmul ms) of one GEMM plan on the values in ``memory``."""
    compiled = cpp.CppProgram.from_plans(PlanProgram(plan.name, plan.reads, (plan,), plan.writes))
    (kernel,), (function,) = compiled.kernels, compiled.functions
    outputs = dict(memory)
    launch = launcher.Launch(kernel, g)
    launch.allocate_outputs(outputs)
    args = [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in launch.arguments(outputs)]
    ours = median_ms(lambda: function(*args, torch.get_num_threads()), repeat)

    anchor = plan.anchor
    x_name, w_name = anchor.args
    views = [n for n in plan.ops if n.name != anchor.name and n.op.value in ("gather", "reshape", "slice")]
    rows, weight = execute(Program("rows", plan.reads + tuple(views), (x_name, w_name)), g,
                           *[memory[r.name] for r in plan.reads])
    order = layouts.order(g, anchor.attrs["by"], plan.domain) if anchor.attrs["by"] != "all" else None
    offsets = layouts.type_offsets(g, anchor.attrs["by"], plan.domain).tolist()
    grouped = rows[order] if order is not None else rows
    segments = [(t, grouped[a:b]) for t, (a, b) in enumerate(zip(offsets, offsets[1:])) if b > a]
    transpose = bool(anchor.attrs.get("transpose"))
    per_type = weight.ndim >= 3 and weight.shape[0] == g.num_etypes or anchor.attrs["by"] != "all"

    def torch_gemm() -> None:
        for t, x in segments:
            w = weight[t] if per_type else weight
            w = w.transpose(-1, -2) if transpose else w
            torch.matmul(x.unsqueeze(-2), w).squeeze(-2) if x.ndim > 2 else torch.matmul(x, w)
    return ours, median_ms(torch_gemm, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["aifb", "mutag"])
    parser.add_argument("--feats", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads; generated typed GEMM vs torch.matmul per type "
          f"(ratio = torch ms / generated ms; forward and backward GEMMs)")
    print(f"{'model':<5} {'graph':<7} {'feats':>5} {'kernel':<34} {'rows':>8} {'K x N':>9} {'ours ms':>8} "
          f"{'torch ms':>9} {'ratio':>6}")
    ratios = []
    for dataset in args.datasets:
        g = pigeon.datasets.load(dataset, feat_dim=1).graph
        for feats in args.feats:
            for name, model in MODELS.items():
                torch.manual_seed(0)
                inputs = model.example_inputs(g, feats=feats, **({} if name == "rgcn" else {"heads": 4}))
                exe = model.executable(g, *inputs)
                params = dict(model._bind(g, inputs, {}))
                tensors = [params[n.name] for n in exe.forward.inputs]
                grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
                forward = execute(grad.forward, g, *tensors)
                upstream = [torch.randn_like(o) for o in forward[: grad.num_outputs]]
                for program, values in ((grad.forward, tensors), (grad.backward, [*forward[grad.num_outputs:], *upstream])):
                    plans = lower(program, target="cpp")
                    read = tuple(dict.fromkeys(r.name for k in plans.kernels for r in k.reads))
                    everything = decompose_softmax.run(program)
                    memory = dict(zip(read, execute(Program("all", everything.nodes, read), g, *values)))
                    for plan in plans.kernels:
                        if plan.strategy == Strategy.GEMM:
                            ours, theirs = compare(g, plan, memory, args.repeat)
                            x, y = plan.value_type(plan.anchor.args[0]), plan.anchor.type
                            ratios.append(theirs / ours)
                            print(f"{name:<5} {dataset:<7} {feats:>5} {plan.name[:34]:<34} "
                                  f"{layouts.num_rows(g, plan.domain):>8} {f'{x.shape[-1]}x{y.shape[-1]}':>9} "
                                  f"{ours:>8.2f} {theirs:>9.2f} {theirs / ours:>6.2f}", flush=True)
    geomean = statistics.geometric_mean(ratios) if ratios else float("nan")
    print(f"geometric mean torch / generated over {len(ratios)} GEMMs: {geomean:.2f}x")


if __name__ == "__main__":
    main()
