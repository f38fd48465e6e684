"""Common subexpression elimination: one value per distinct (op, arguments, attributes).

    %a = gather[index=src, to=edge](%h)
    %b = gather[index=src, to=edge](%h)     ->    %a = gather[index=src, to=edge](%h)
    %c = add(%a, %b)                               %c = add(%a, %a)
"""
from __future__ import annotations

from ..ops import Op
from ..program import Program
from ..rewrite import Rewriter


def run(program: Program, stats: object = None, before: Program | None = None) -> Program:
    """``program`` with every value computed once.

    With ``before`` (the program a rewrite started from), only the duplicates the rewrite made
    are merged: values ``before`` already held twice stay for the pipeline's own cse pass, so
    that switching that pass off keeps them.
    """
    untouched_nodes = set(before.nodes) if before is not None else set()
    rw = Rewriter(program)
    seen: dict[tuple, tuple[str, bool]] = {}  # key -> (the value kept, whether it is untouched)
    for node in program.nodes:
        if node.op == Op.INPUT:
            rw.keep(node)
            continue
        args = tuple(rw.new_name(a) for a in node.args)
        key = (node.op, args, node.attr_items)
        untouched = before is not None and node in untouched_nodes and args == node.args
        first = seen.get(key)
        if first is None:
            seen[key] = (rw.keep(node), untouched)
        elif untouched and first[1]:
            rw.keep(node)
        else:
            rw.replace(node.name, first[0])
    return rw.finish()
