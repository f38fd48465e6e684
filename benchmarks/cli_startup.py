"""How long the command line takes to start: `pigeon --help`, and what a command imports beyond
torch (whole processes, median of several runs).

    python benchmarks/cli_startup.py [--runs 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "pigeon --help": [sys.executable, "-m", "pigeon.cli", "--help"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import what a command needs (torch, compiler, layers)": [
        sys.executable, "-c", "import torch, pigeon.compiler, pigeon.lang, pigeon.nn, pigeon.ir.passes, pigeon.ir.lower"],
}


def wall(command: list[str], runs: int) -> float:
    """Median wall seconds of ``runs`` runs, after one not counted."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    results = {name: wall(command, args.runs) for name, command in CASES.items()}
    for name, seconds in results.items():
        print(f"{name:<56} {seconds * 1000:8.0f} ms")
    beyond = results["import what a command needs (torch, compiler, layers)"] - results["import torch"]
    print(f"{'a command starts beyond import torch':<56} {beyond * 1000:8.0f} ms")


if __name__ == "__main__":
    main()
