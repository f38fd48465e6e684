"""Edge softmax, decomposed into reductions over its groups, for the kernel plans (the reference
executor keeps the composite op). Over the incoming edges of each destination (``index=dst``):

    %a : edge[H,1] = edge_softmax(%s)      ->    %s_max : dst[H,1] = reduce[index=dst, kind=max, to=dst](%s)
                                                  %s_exp : edge[H,1] = exp(sub(%s, gather[index=dst](%s_max)))
                                                  %s_sum : dst[H,1] = reduce[index=dst, kind=sum, to=dst](%s_exp)
                                                  %a     : edge[H,1] = div(%s_exp, gather[index=dst](%s_sum))

Within each (destination, edge type) pair (``index=compact_dst``) the same, into pair rows. Over
the pairs of each destination (``index=compact_dst_node``) the maximum is taken over the
destination's incoming edges, each reading its pair's score: every pair has an edge, so it is
the same maximum, reduced by a per-destination traversal instead of a scatter.
"""
from __future__ import annotations

from ..indices import SOFTMAX_GROUPS
from ..ops import Op
from ..program import Program
from ..rewrite import Rewriter
from ..types import Domain


def run(program: Program, stats: object = None) -> Program:
    rw = Rewriter(program)
    for node in program.nodes:
        if node.op != Op.EDGE_SOFTMAX:
            rw.keep(node)
            continue
        score = rw.new_name(node.args[0])
        index = node.attrs.get("index", "dst")
        rows, groups = SOFTMAX_GROUPS[index]
        if index == "compact_dst_node":
            on_edges = rw.emit(Op.GATHER, [score], {"index": "compact_dst", "to": Domain.EDGE},
                               hint=f"{node.name}_score_e")
            peak = rw.emit(Op.REDUCE, [on_edges], {"index": "dst", "to": Domain.DST, "kind": "max"},
                           hint=f"{node.name}_max")
        else:
            peak = rw.emit(Op.REDUCE, [score], {"index": index, "to": groups, "kind": "max"}, hint=f"{node.name}_max")
        shifted = rw.emit(Op.SUB, [score, rw.emit(Op.GATHER, [peak], {"index": index, "to": rows},
                                                  hint=f"{node.name}_max_e")], hint=f"{node.name}_shifted")
        weight = rw.emit(Op.EXP, [shifted], hint=f"{node.name}_exp")
        total = rw.emit(Op.REDUCE, [weight], {"index": index, "to": groups, "kind": "sum"}, hint=f"{node.name}_sum")
        total_e = rw.emit(Op.GATHER, [total], {"index": index, "to": rows}, hint=f"{node.name}_sum_e")
        rw.emit(Op.DIV, [weight, total_e], replacing=node.name)
    return rw.finish()
