"""Dead code elimination: drop every value no output depends on (inputs always stay).

    %a = exp(%x)            # unused
    %b = neg(%x)            ->    %b = neg(%x)
    return %b                     return %b
"""
from __future__ import annotations

from typing import Iterable

from ..ops import Op
from ..program import Program


def needed(program: Program, roots: Iterable[str]) -> set[str]:
    """The values ``roots`` depend on, themselves included."""
    live = set(roots)
    for node in reversed(program.nodes):
        if node.name in live:
            live.update(node.args)
    return live


def run(program: Program, stats: object = None, before: Program | None = None) -> Program:
    """``program`` without the values no output needs.

    With ``before`` (the program a rewrite started from), only what the rewrite left unused is
    dropped: values already dead in ``before`` stay for the pipeline's own dce pass, so that
    switching that pass off keeps them.
    """
    roots = set(program.outputs)
    if before is not None:
        live_before = needed(before, before.outputs)
        dead_before = {n for n in before.nodes if n.name not in live_before}
        roots.update(n.name for n in program.nodes if n in dead_before)
    live = needed(program, roots)
    nodes = tuple(n for n in program.nodes if n.name in live or n.op == Op.INPUT)
    return Program(program.name, nodes, program.outputs)
