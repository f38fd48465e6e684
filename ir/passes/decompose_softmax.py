"""Edge softmax, decomposed into reductions over the incoming edges of each destination, for
the kernel plans (the reference executor keeps the composite op).

    %a : edge[H,1] = edge_softmax(%s)      ->    %s_max : dst[H,1] = reduce[index=dst, kind=max, to=dst](%s)
                                                  %s_exp : edge[H,1] = exp(sub(%s, gather[index=dst](%s_max)))
                                                  %s_sum : dst[H,1] = reduce[index=dst, kind=sum, to=dst](%s_exp)
                                                  %a     : edge[H,1] = div(%s_exp, gather[index=dst](%s_sum))
"""
from __future__ import annotations

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
        per_dst = {"index": "dst", "to": Domain.DST}
        peak = rw.emit(Op.REDUCE, [score], {**per_dst, "kind": "max"}, hint=f"{node.name}_max")
        shifted = rw.emit(Op.SUB, [score, rw.emit(Op.GATHER, [peak], {"index": "dst", "to": Domain.EDGE},
                                                  hint=f"{node.name}_max_e")], hint=f"{node.name}_shifted")
        weight = rw.emit(Op.EXP, [shifted], hint=f"{node.name}_exp")
        total = rw.emit(Op.REDUCE, [weight], {**per_dst, "kind": "sum"}, hint=f"{node.name}_sum")
        total_e = rw.emit(Op.GATHER, [total], {"index": "dst", "to": Domain.EDGE}, hint=f"{node.name}_sum_e")
        rw.emit(Op.DIV, [weight, total_e], replacing=node.name)
    return rw.finish()
