"""Default against tuned configuration of each example layer on several graphs, in one run.

    python benchmarks/tuning.py [--datasets aifb mutag fb15k] [--mode train] [--budget 60]

For every model and graph the tuner times the default configuration and every candidate in
the same process (median of 5 after a warm-up); this prints both and their ratio. Tuning
entries are written to a temporary cache, so the user's cache is left alone.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

import pigeon.datasets
from pigeon.examples import hgt, rgat, rgcn
from pigeon.runtime.tuner import Tuner
from pigeon.runtime.tuning import TuningCache

MODELS = {"rgcn": rgcn.rgcn, "rgat": rgat.rgat, "hgt": hgt.hgt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["aifb", "mutag", "fb15k"])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--feats", type=int, default=64)
    parser.add_argument("--mode", default="train", choices=["infer", "train"])
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args()
    cache = TuningCache(os.path.join(tempfile.mkdtemp(prefix="pigeon-tuning-"), "tuning.json"))
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.feats} features, "
          f"{args.mode}, budget {args.budget:.0f} s per case")
    print(f"{'model':<6} {'graph':<8} {'default ms':>11} {'tuned ms':>9} {'speed-up':>9}  tuned configuration")
    for dataset in args.datasets:
        g = pigeon.datasets.synthetic(dataset, scale=args.scale).graph
        for name, fn in MODELS.items():
            inputs = fn.example_inputs(g, feats=args.feats, heads=2)
            result = Tuner(fn, g, inputs, mode=args.mode, budget=args.budget, cache=cache).run()
            print(f"{name:<6} {dataset:<8} {result.default.seconds * 1e3:>11.1f} {result.best.seconds * 1e3:>9.1f} "
                  f"{result.speedup:>8.2f}x  {result.best.config.describe()}", flush=True)


if __name__ == "__main__":
    main()
