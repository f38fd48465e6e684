"""Common subexpression elimination: one value per distinct (op, arguments, attributes).

    %a = gather[index=src, to=edge](%h)
    %b = gather[index=src, to=edge](%h)     ->    %a = gather[index=src, to=edge](%h)
    %c = add(%a, %b)                               %c = add(%a, %a)
"""
from __future__ import annotations

from ..ops import Op
from ..program import Program
from ..rewrite import Rewriter


def run(program: Program, stats: object = None) -> Program:
    rw = Rewriter(program)
    seen: dict[tuple, str] = {}
    for node in program.nodes:
        if node.op == Op.INPUT:
            rw.keep(node)
            continue
        key = (node.op, tuple(rw.new_name(a) for a in node.args), node.attr_items)
        if key in seen:
            rw.replace(node.name, seen[key])
        else:
            seen[key] = rw.keep(node)
    return rw.finish()
