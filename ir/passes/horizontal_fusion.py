"""Horizontal fusion of typed linears: linears that read the same input with the same type index
become one linear over their weights concatenated along the output axis, and each of them a
slice of its result (a view: no copy). HGT's K, Q and V read ``h`` once instead of three times.

    %k : node[8] = linear[by=ntype](%h, %Wk)                %Wk_Wq_Wv : ntype[16,24] = concat(%Wk, %Wq, %Wv)
    %h_d : dst[16] = gather[index=to_dst, to=dst](%h)  ->   %k_q_v : node[24] = linear[by=ntype](%h, %Wk_Wq_Wv)
    %q : dst[8] = linear[by=ntype](%h_d, %Wq)               %k : node[8] = slice[start=0, stop=8](%k_q_v)
    %v : node[8] = linear[by=ntype](%h, %Wv)                %q_rows : node[8] = slice[start=8, stop=16](%k_q_v)
                                                            %q : dst[8] = gather[index=to_dst, to=dst](%q_rows)
                                                            %v : node[8] = slice[start=16, stop=24](%k_q_v)

A linear of the destination rows (``h[n]`` in a ``g.dst_nodes()`` loop) joins the linears of all
nodes as a linear of every node whose destination rows are taken (the destinations are the first
nodes). Applied only where the cost model finds a training step (forward and backward) cheaper on
the graph's sizes: the fused GEMM reads its input once, but its gradient concatenates the slices'
gradients, and on sampled blocks it computes rows of source nodes too.

In every program (backward programs too) the pass also tidies what autodiff makes of slices: a
sum of zero-padded concatenations, ``concat(da, 0) + concat(0, db)``, becomes ``concat(da, db)``,
and the gradient of a fused weight, read only through slices, becomes one weight gradient per
slice (each stored by its own kernel).
"""
from __future__ import annotations

from ..cost import GraphStats, program_cost, score
from ..ops import Op
from ..program import Node, Program
from ..rewrite import Rewriter
from ..types import Domain
from . import cse, dce


def _source(program: Program, node: Node) -> tuple[str, bool] | None:
    """(the value a plain typed linear reads, whether through the destination rows), or None
    where ``node`` is no linear this pass fuses."""
    if node.op != Op.LINEAR or node.attrs.get("transpose"):
        return None
    x, w = (program.node(a) for a in node.args)
    if len(w.type.shape) != 2 or len(x.type.shape) != 1 or not w.type.domain.is_param or not w.type.shape[1]:
        return None
    if x.op == Op.GATHER and x.attrs["index"] == "to_dst" and node.attrs["by"] in ("ntype", "all"):
        return x.args[0], True
    return x.name, False


def groups(program: Program) -> list[list[str]]:
    """Linears that read one value with one type index and weights of one kind (two or more),
    in program order; each group's weights are all defined before its first linear."""
    position = {n.name: i for i, n in enumerate(program.nodes)}
    found: dict[tuple, list[str]] = {}
    for node in program.nodes:
        source = _source(program, node)
        if source is None:
            continue
        w = program.node(node.args[1]).type
        key = (source[0], node.attrs["by"], w.domain, w.dtype, w.shape[0])
        found.setdefault(key, []).append(node.name)
    out = []
    for members in found.values():
        first = position[members[0]]
        members = [m for m in members if position[program.node(m).args[1]] < first]
        if len(members) > 1:
            out.append(members)
    return out


def _fuse(program: Program, members: list[str]) -> Program:
    source = {m: _source(program, program.node(m)) for m in members}
    x, by = source[members[0]][0], program.node(members[0]).attrs["by"]
    rw = Rewriter(program)
    for node in program.nodes:
        if node.name in members[1:]:
            continue
        if node.name != members[0]:
            rw.keep(node)
            continue
        weights = rw.emit(Op.CONCAT, [rw.new_name(program.node(m).args[1]) for m in members],
                          hint="_".join(program.node(m).args[1] for m in members))
        fused = rw.emit(Op.LINEAR, [rw.new_name(x), weights], {"by": by}, hint="_".join(members))
        start = 0
        for m in members:
            width = program.node(m).type.shape[-1]
            through_dst = source[m][1]
            part = rw.emit(Op.SLICE, [fused], {"start": start, "stop": start + width},
                           hint=f"{m}_rows" if through_dst else m, replacing="" if through_dst else m)
            if through_dst:
                rw.emit(Op.GATHER, [part], {"index": "to_dst", "to": Domain.DST}, replacing=m)
            start += width
    return dce.run(cse.run(rw.finish(), before=program), before=program)


def _constant(program: Program, name: str) -> float | None:
    """The number a value holds everywhere, if it is a constant (through broadcasts)."""
    node = program.node(name)
    while node.op == Op.GATHER and node.attrs["index"] == "all":
        node = program.node(node.args[0])
    return float(node.attrs["value"]) if node.op == Op.CONST else None


def _is_zero(program: Program, name: str) -> bool:
    """Whether a value is zeros shaped as another (autodiff's ``select(1, 0, x)``)."""
    node = program.node(name)
    if node.op == Op.SLICE:
        return _is_zero(program, node.args[0])
    if node.op != Op.SELECT:
        return False
    cond, a = _constant(program, node.args[0]), _constant(program, node.args[1])
    return cond is not None and cond != 0.0 and a == 0.0


def _pieces(program: Program, name: str) -> list[tuple[int, int, str, bool]] | None:
    """(start, stop, value, is zero) of each part of a concatenation, or None for other values."""
    node = program.node(name)
    if node.op != Op.CONCAT:
        return None
    out, start = [], 0
    for a in node.args:
        width = program.node(a).type.shape[-1]
        out.append((start, start + width, a, _is_zero(program, a)))
        start += width
    return out


def _combine(program: Program, add_name: str) -> Program | None:
    """``concat(a, 0) + concat(0, b)`` -> ``concat(a, b)``: a sum of concatenations whose nonzero
    parts do not overlap is one concatenation (the gradient of several slices of one value)."""
    add = program.node(add_name)
    if add.op != Op.ADD:
        return None
    x, y = (_pieces(program, a) for a in add.args)
    if x is None or y is None or program.node(add.args[0]).type != program.node(add.args[1]).type:
        return None
    nonzero = sorted([p for p in x + y if not p[3]])
    if any(a[1] > b[0] for a, b in zip(nonzero, nonzero[1:])):
        return None
    zeros = [p for p in x + y if p[3]]
    parts: list[tuple[int, int, str | None]] = []
    at = 0
    for start, stop, value, _ in nonzero + [(add.type.shape[-1], add.type.shape[-1], "", False)]:
        if start > at:  # a gap, zero in both: a slice of a zero part that covers it
            cover = next((z for z in zeros if z[0] <= at and start <= z[1]), None)
            if cover is None:
                return None
            parts.append((at - cover[0], start - cover[0], cover[2]))
        if value:
            parts.append((0, 0, value))
        at = stop
    rw = Rewriter(program)
    for node in program.nodes:
        if node.name != add_name:
            rw.keep(node)
            continue
        args = []
        for lo, hi, value in parts:
            whole = rw.new_name(value)
            if hi > lo and (lo, hi) != (0, rw.type_of(whole).shape[-1]):
                whole = rw.emit(Op.SLICE, [whole], {"start": lo, "stop": hi}, hint="zero")
            args.append(whole)
        rw.emit(Op.CONCAT, args, replacing=add_name)
    return dce.run(rw.finish(), before=program)


def _split_weight_gradient(program: Program, name: str) -> Program | None:
    """``slice(linear_wgrad(x, dy))`` -> ``linear_wgrad(x, slice(dy))`` where the weight gradient
    is read only through slices: the fused weight's gradient as the gradients of its parts, each
    stored by its own kernel."""
    node = program.node(name)
    users = program.users[name]
    if node.op != Op.LINEAR_WGRAD or name in program.outputs or not users:
        return None
    if not all(program.node(u).op == Op.SLICE for u in users):
        return None
    rw = Rewriter(program)
    for n in program.nodes:
        if n.name == name:
            continue
        if n.name not in users:
            rw.keep(n)
            continue
        part = rw.emit(Op.SLICE, [rw.new_name(node.args[1])], n.attrs, hint=f"{node.args[1]}_part")
        rw.emit(Op.LINEAR_WGRAD, [rw.new_name(node.args[0]), part], node.attrs, replacing=n.name)
    return dce.run(rw.finish(), before=program)


def combine_slice_gradients(program: Program) -> Program:
    """Every sum of concatenations with disjoint nonzero parts as one concatenation, and every
    weight gradient read only through slices as the weight gradients of the slices."""
    for name in [n.name for n in program.nodes if n.op == Op.ADD]:
        if name in program:
            program = _combine(program, name) or program
    for name in [n.name for n in program.nodes if n.op == Op.LINEAR_WGRAD]:
        program = _split_weight_gradient(program, name) or program
    return program


def training_score(program: Program, stats: GraphStats) -> float:
    """The modelled cost of a training step of ``program``: its forward and, with respect to every
    input, its backward program (its slices' gradients combined), both compacted."""
    from . import compact
    from .autodiff import AutodiffError, differentiate

    forward = compact.run(program, stats)
    total = score(program_cost(forward, stats).total)
    try:
        grad = differentiate(forward, tuple(n.name for n in forward.inputs))
    except AutodiffError:
        return total
    backward = compact.run(combine_slice_gradients(grad.backward), stats)
    return total + score(program_cost(backward, stats).total)


def run(program: Program, stats: GraphStats | None = None) -> Program:
    """Fuse every group of linears whose fusion the cost model finds cheaper for a training step,
    and combine the gradients of slices (no stats: no fusion)."""
    program = combine_slice_gradients(program)
    if stats is None:
        return program
    for members in groups(program):
        if not all(m in program for m in members):
            continue
        candidate = _fuse(program, members)
        if training_score(candidate, stats) < training_score(program, stats):
            program = candidate
    return program
