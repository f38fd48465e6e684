"""Compact materialisation: an edge value that depends only on (source node, edge type) is
computed once per unique (src, etype) pair and read through each edge's pair index; likewise
for (destination node, edge type) pairs.

    %h_src : edge[in]  = gather[index=src, to=edge](%h)         %h_c : compact[in]  = gather[index=compact_src, to=compact](%h)
    %z     : edge[out] = linear[by=etype](%h_src, %W)     ->    %z_c : compact[out] = linear[by=etype](%h_c, %W)
                                                                %z   : edge[out]    = gather[index=compact, to=edge](%z_c)

Each candidate is applied only where the cost model finds the program cheaper on the graph's
sizes: it pays when edges share (src, etype) pairs and the value takes real work to compute.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..cost import GraphStats, cheaper
from ..ops import Op
from ..program import Node, Program
from ..rewrite import Rewriter
from ..types import Domain
from . import cse, dce


@dataclass(frozen=True)
class Side:
    """One kind of pair: which end of the edge, its domain and its indices."""

    end: str  # "src" or "dst"
    domain: Domain
    pair_index: str  # pair -> edge
    node_index: str  # node -> pair


SIDES = (Side("src", Domain.COMPACT, "compact", "compact_src"),
         Side("dst", Domain.COMPACT_DST, "compact_dst", "compact_dst_node"))

_GATHER_DEPS = {"src": {"src"}, "dst": {"dst"}, "etype": {"etype"}, "src_ntype": {"src"},
                "dst_ntype": {"dst"}, "all": set(), "compact": {"src", "etype"},
                "compact_dst": {"dst", "etype"}}
_SELECTOR_DEPS = {"etype": {"etype"}, "src_ntype": {"src"}, "dst_ntype": {"dst"}, "all": set()}


def edge_dependencies(program: Program) -> dict[str, frozenset[str]]:
    """For each edge value, what it depends on among an edge's src, dst and etype ("edge": more)."""
    deps: dict[str, frozenset[str]] = {}
    for node in program.nodes:
        if node.type.domain != Domain.EDGE:
            continue
        if node.op == Op.GATHER:
            d = _GATHER_DEPS[node.attrs["index"]]
        elif node.op == Op.LINEAR:
            d = deps[node.args[0]] | _SELECTOR_DEPS[node.attrs["by"]]
        elif node.op in (Op.INPUT, Op.EDGE_SOFTMAX, Op.DEGREE, Op.MATCH):
            d = {"edge"}
        else:
            d = set().union(*(deps[a] for a in node.args if a in deps))
        deps[node.name] = frozenset(d)
    return deps


def _fits(deps: frozenset[str], side: Side) -> bool:
    return side.end in deps and deps <= {side.end, "etype"}


def _candidates(program: Program, side: Side) -> list[str]:
    """Values of this side with a user outside it (or that are outputs), not yet pair reads."""
    deps = edge_dependencies(program)
    found = []
    for name, d in deps.items():
        node = program.node(name)
        if not _fits(d, side) or (node.op == Op.GATHER and node.attrs["index"] == side.pair_index):
            continue
        users = program.users[name]
        if name in program.outputs or any(u not in deps or not _fits(deps[u], side) for u in users):
            found.append(name)
    return found


def _convert(program: Program, target: str, side: Side) -> Program:
    rw = Rewriter(program)
    converted: dict[str, str] = {}

    def pair_value(name: str) -> str:
        """Value ``name`` (of this side) computed in the pair domain."""
        if name in converted:
            return converted[name]
        node: Node = program.node(name)
        if node.op == Op.GATHER:
            index, source = node.attrs["index"], rw.new_name(node.args[0])
            if index == side.pair_index:
                return source
            new_index = side.node_index if index == side.end else index
            out = rw.emit(Op.GATHER, [source], {"index": new_index, "to": side.domain}, hint=f"{name}_{side.domain.value}")
        elif node.op == Op.LINEAR:
            out = rw.emit(Op.LINEAR, [pair_value(node.args[0]), rw.new_name(node.args[1])], node.attrs,
                          hint=f"{name}_{side.domain.value}")
        else:
            out = rw.emit(node.op, [pair_value(a) for a in node.args], node.attrs, hint=f"{name}_{side.domain.value}")
        converted[name] = out
        return out

    for node in program.nodes:
        if node.name == target:
            rw.emit(Op.GATHER, [pair_value(target)], {"index": side.pair_index, "to": Domain.EDGE},
                    replacing=target)
        else:
            rw.keep(node)
    return dce.run(cse.run(rw.finish(), before=program), before=program)


def run(program: Program, stats: GraphStats | None = None, keep: frozenset[str] = frozenset()) -> Program:
    """Compact every candidate the cost model favours, except the values named in ``keep``."""
    if stats is None:
        return program
    improved = True
    while improved:
        improved = False
        for side in SIDES:
            for name in _candidates(program, side):
                if name in keep:
                    continue
                candidate = _convert(program, name, side)
                if cheaper(candidate, program, stats):
                    program, improved = candidate, True
                    break
            if improved:
                break
    return program
