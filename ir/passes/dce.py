"""Dead code elimination: drop every value no output depends on (inputs always stay).

    %a = exp(%x)            # unused
    %b = neg(%x)            ->    %b = neg(%x)
    return %b                     return %b
"""
from __future__ import annotations

from ..ops import Op
from ..program import Program


def run(program: Program, stats: object = None) -> Program:
    live = set(program.outputs)
    for node in reversed(program.nodes):
        if node.name in live:
            live.update(node.args)
    nodes = tuple(n for n in program.nodes if n.name in live or n.op == Op.INPUT)
    return Program(program.name, nodes, program.outputs)
