"""CPU time of each example layer with the pass pipeline on and off, measured side by side.

    python benchmarks/passes.py [--datasets aifb mutag] [--feats 64] [--repeat 5] [--backends reference cpp]

For every back end, model and graph: the median time of a forward call (inference, no autograd)
and of a training step (forward + backward), optimised and unoptimised, in one process, one
after the other, and their ratio. The outputs of both are compared before timing.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pigeon
import pigeon.datasets
from pigeon.examples import hgt, rgat, rgcn

MODELS = {"rgcn": rgcn.rgcn, "rgat": rgat.rgat, "hgt": hgt.hgt}


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up: traces, optimises and builds layouts
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["aifb", "mutag"])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--feats", type=int, default=64)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["reference", "cpp"], choices=["reference", "cpp"])
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.feats} features, float32, "
          f"median of {args.repeat}")
    print(f"{'backend':<10} {'model':<6} {'graph':<8} {'mode':<6} {'unoptimised ms':>15} {'optimised ms':>13} "
          f"{'speed-up':>9}")
    for backend, dataset in ((b, d) for b in args.backends for d in args.datasets):
        g = pigeon.datasets.synthetic(dataset, scale=args.scale).graph
        for name in args.models:
            fn = MODELS[name]
            inputs = fn.example_inputs(g, feats=args.feats)
            params = [x.requires_grad_() if isinstance(x, torch.Tensor) else x for x in inputs]

            def infer():
                with torch.no_grad():
                    return fn(g, *params)

            def train():
                out = fn(g, *params)
                out.sum().backward()
                return out

            with pigeon.use_backend(backend):
                with pigeon.disable_passes(*pigeon.PASS_NAMES):
                    reference = infer()
                scale = reference.abs().max().item()
                torch.testing.assert_close(infer(), reference, rtol=1e-3, atol=1e-5 * scale)
                for mode, step in (("infer", infer), ("train", train)):
                    with pigeon.disable_passes(*pigeon.PASS_NAMES):
                        slow = median_time(step, args.repeat)
                    fast = median_time(step, args.repeat)
                    print(f"{backend:<10} {name:<6} {dataset:<8} {mode:<6} {slow * 1e3:>15.1f} {fast * 1e3:>13.1f} "
                          f"{slow / fast:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
