"""The pass pipeline over level-1 programs: a flat, named list that reads top to bottom.

Every pass is a function ``run(program, stats) -> program`` in a module of its own; the
rewrites that can make a program slower (reordering, fusion, compaction) ask the cost model
with the graph's sizes (``stats``) and leave the program alone without them.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable

from ..cost import GraphStats
from ..program import Program
from ..verify import verify
from . import aggregation_order, compact, cse, dce, horizontal_fusion, linear_reorder
from .autodiff import AutodiffError, Gradient, differentiate

Pass = Callable[[Program, "GraphStats | None"], Program]

PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("cse", cse.run),
    ("dce", dce.run),  # before the rewrites, so that their cost decisions see no dead values
    ("linear_reorder", linear_reorder.run),
    ("horizontal_fusion", horizontal_fusion.run),  # after reordering: a reordered dot's linear may join a group
    ("aggregation_order", aggregation_order.run),  # before compact: it compares both forms compacted
    ("compact", compact.run),
)
PASS_NAMES = tuple(name for name, _ in PIPELINE)


def check_pass_names(names: Iterable[str]) -> frozenset[str]:
    names = frozenset(names)
    unknown = sorted(names - set(PASS_NAMES))
    if unknown:
        raise ValueError(f"unknown passes {unknown}; the passes are {list(PASS_NAMES)}")
    return names


def optimize_stages(program: Program, stats: GraphStats | None, disabled: Iterable[str] = (),
                    keep_on_edges: frozenset[str] = frozenset()) -> list[tuple[str, Program]]:
    """The program after every stage of the pipeline, starting with ("traced", program).

    ``disabled`` switches passes off; ``keep_on_edges`` names values compaction must leave alone.
    """
    disabled = check_pass_names(disabled)
    stages = [("traced", verify(program))]
    for name, run in PIPELINE:
        if name == "compact" and keep_on_edges:
            run = functools.partial(run, keep=keep_on_edges)
        if name not in disabled:
            program = verify(run(program, stats))
            stages.append((name, program))
    return stages


def optimize(program: Program, stats: GraphStats | None, disabled: Iterable[str] = (),
             keep_on_edges: frozenset[str] = frozenset()) -> Program:
    """``program`` after the whole pipeline (minus the ``disabled`` passes)."""
    return optimize_stages(program, stats, disabled, keep_on_edges)[-1][1]


def optimize_gradient(program: Program, wrt: Iterable[str], stats: GraphStats | None,
                      disabled: Iterable[str] = (), keep_on_edges: frozenset[str] = frozenset()) -> Gradient:
    """The gradient programs of an optimised forward program, the backward optimised too."""
    grad = differentiate(program, tuple(wrt))
    backward = optimize(grad.backward, stats, disabled, keep_on_edges)
    return Gradient(grad.forward, backward, grad.num_outputs, grad.residuals, grad.wrt)


__all__ = ["AutodiffError", "Gradient", "PASS_NAMES", "PIPELINE", "check_pass_names", "differentiate",
           "optimize", "optimize_gradient", "optimize_stages"]
