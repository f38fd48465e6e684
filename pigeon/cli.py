"""The ``pigeon`` command line: ``pigeon show MODEL_OR_FILE``."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

import torch

from pigeon.compiler import CompiledFunction
from pigeon.ir.printer import format_program
from pigeon.runtime.graph import Graph
from pigeon.tracer import TraceError


class CLIError(Exception):
    """A command-line argument that names nothing usable."""


def demo_graph(num_ntypes: int = 3, num_etypes: int = 4) -> Graph:
    """A small fixed graph to trace programs on (programs do not depend on graph sizes)."""
    gen = torch.Generator().manual_seed(0)
    n, e = 12, 40
    return Graph.from_edges(torch.randint(0, n, (e,), generator=gen), torch.randint(0, n, (e,), generator=gen),
                            torch.arange(e) % num_etypes, n, torch.arange(n) % num_ntypes)


def find_functions(target: str) -> list[CompiledFunction]:
    """The compiled functions named by an example model name, ``file.py`` or ``file.py:function``."""
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


def show(args: argparse.Namespace) -> None:
    g = demo_graph()
    for fn in find_functions(args.target):
        if fn.example_inputs is None:
            raise CLIError(f"{fn.name} has no example inputs to trace with: declare it as "
                           f"@pigeon.compile(example_inputs=lambda g: (...)) returning its arguments for graph g")
        inputs = fn.example_inputs(g)
        inputs = tuple(x.to(getattr(torch, args.dtype)) if isinstance(x, torch.Tensor) else x for x in inputs)
        print(format_program(fn.program(g, *inputs), with_loc=args.loc), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pigeon", description="Compile relational GNN layers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", help="print the level-1 program of an example model or of a file's compiled functions")
    p.add_argument("target", help="rgcn, rgat, hgt, path/to/file.py or path/to/file.py:function")
    p.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32", "float64"])
    p.add_argument("--loc", action="store_true", help="show the source line of every op")
    p.set_defaults(run=show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CLIError, TraceError) as err:
        print(f"pigeon: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
