"""Linear operator reordering: a dot product of a typed linear with a per-type vector becomes a
typed linear with the per-type product of weight and vector, computed once per type.

    %z  : edge[H,D] = reshape(linear[by=etype](%x, %W))        %Wr : etype[in,H,D] = reshape(%W)
    %a_e: edge[H,D] = gather[index=etype](%a)             ->    %Wa : etype[in,H]   = reshape(dot(%Wr, %a))
    %s  : edge[H,1] = dot(%z, %a_e)                             %s  : edge[H,1]     = reshape(linear[by=etype](%x, %Wa))

Applied only where the cost model finds the program cheaper (the linear's FLOPs per row drop
from in*H*D to in*H, which pays when nothing else needs %z).
"""
from __future__ import annotations

from math import prod

from ..cost import GraphStats
from ..ops import Op
from ..program import Program
from ..rewrite import Rewriter, rewrite_where_cheaper
from . import cse, dce


def _match(program: Program, linear_side: str, param_side: str):
    """(x, W, by, feature shape) if ``linear_side`` is a typed linear and ``param_side`` the
    matching per-type vector, else None."""
    vec = program.node(param_side)
    if vec.op != Op.GATHER or not program.node(vec.args[0]).type.domain.is_param:
        return None
    node = program.node(linear_side)
    shape = node.type.shape
    if node.op == Op.RESHAPE:
        node = program.node(node.args[0])
    if node.op != Op.LINEAR or node.attrs.get("transpose") or node.attrs["by"] != vec.attrs["index"]:
        return None
    x, w = (program.node(a) for a in node.args)
    param = program.node(vec.args[0])
    if len(w.type.shape) != 2 or len(x.type.shape) != 1 or w.type.domain != param.type.domain:
        return None
    if param.type.shape != shape or prod(shape) != w.type.shape[1]:
        return None
    return x.name, w.name, node.attrs["by"], shape, param.name


def _reorder(program: Program, dot_name: str) -> Program | None:
    dot = program.node(dot_name)
    found = _match(program, dot.args[0], dot.args[1]) or _match(program, dot.args[1], dot.args[0])
    if found is None:
        return None
    x, w, by, shape, param = found
    rw = Rewriter(program)
    for node in program.nodes:
        if node.name != dot_name:
            rw.keep(node)
            continue
        in_features = rw.type_of(rw.new_name(w)).shape[0]
        heads = shape[:-1]
        w_heads = rw.emit(Op.RESHAPE, [rw.new_name(w)], {"shape": (in_features,) + shape}, hint=f"{w}_heads")
        w_dot = rw.emit(Op.DOT, [w_heads, rw.new_name(param)], hint=f"{w}_{param}")
        w_vec = rw.emit(Op.RESHAPE, [w_dot], {"shape": (in_features, prod(heads))}, hint=f"{w}_{param}")
        y = rw.emit(Op.LINEAR, [rw.new_name(x), w_vec], {"by": by}, hint=f"{dot_name}_linear")
        rw.emit(Op.RESHAPE, [y], {"shape": heads + (1,)}, replacing=dot_name)
    return dce.run(cse.run(rw.finish(), before=program), before=program)


def run(program: Program, stats: GraphStats | None = None) -> Program:
    return rewrite_where_cheaper(program, stats, Op.DOT, _reorder)
