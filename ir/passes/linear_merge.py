"""Linear merging: two typed linears with nothing between them become one, with the product of
their weights computed once per type.

    %y : edge[mid] = linear[by=etype](%x, %W1)              %W12 : etype[in,out] = linear[by=etype](%W1, %W2)
    %z : edge[out] = linear[by=etype](%y, %W2)      ->      %z   : edge[out]     = linear[by=etype](%x, %W12)

The selectors must agree (or one weight is global). Applied only where the cost model finds
it cheaper: per row, in*mid + mid*out FLOPs become in*out.
"""
from __future__ import annotations

from ..cost import GraphStats
from ..ops import Op
from ..program import Node, Program
from ..rewrite import Rewriter, rewrite_where_cheaper
from ..types import Domain
from . import cse, dce

IDENTITY = {Domain.ETYPE: "etype", Domain.NTYPE: "ntype", Domain.GRAPH: "graph", Domain.GLOBAL: "all"}


def _plain(node: Node, program: Program) -> bool:
    return (node.op == Op.LINEAR and not node.attrs.get("transpose")
            and len(program.node(node.args[1]).type.shape) == 2
            and len(program.node(node.args[0]).type.shape) == 1)


def _merge(program: Program, outer_name: str) -> Program | None:
    outer = program.node(outer_name)
    inner = program.node(outer.args[0])
    if not (_plain(outer, program) and _plain(inner, program)):
        return None
    by1, by2 = inner.attrs["by"], outer.attrs["by"]
    if by1 != by2 and "all" not in (by1, by2):
        return None
    x, w1, w2 = inner.args[0], inner.args[1], outer.args[1]
    rw = Rewriter(program)
    for node in program.nodes:
        if node.name != outer_name:
            rw.keep(node)
            continue
        first, second = rw.new_name(w1), rw.new_name(w2)
        domain = rw.type_of(second).domain if by1 == "all" else rw.type_of(first).domain
        if by1 == "all" and by2 != "all":  # the global first weight meets every type of the second
            first = rw.emit(Op.GATHER, [first], {"index": "all", "to": domain}, hint=w1)
        merged = rw.emit(Op.LINEAR, [first, second], {"by": IDENTITY[domain] if by1 == by2 or by1 == "all" else "all"},
                         hint=f"{w1}_{w2}")
        by = by2 if by1 == "all" else by1
        rw.emit(Op.LINEAR, [rw.new_name(x), merged], {"by": by}, replacing=outer_name)
    return dce.run(cse.run(rw.finish(), before=program), before=program)


def run(program: Program, stats: GraphStats | None = None) -> Program:
    return rewrite_where_cheaper(program, stats, Op.LINEAR, _merge)
