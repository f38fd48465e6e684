"""Shape inference: the type rule of every level-1 op.

``infer(op, arg_types, attrs)`` gives the output type or raises ShapeError naming the problem;
``run(program)`` re-derives every type of a program from its inputs.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from . import indices
from .ops import BINARY, REDUCE_KINDS, TERNARY, UNARY, Op
from .types import Domain, ValueType


class ShapeError(ValueError):
    """An op was given values whose domains, shapes or dtypes do not fit together."""


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """Numpy broadcasting of two feature shapes."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            raise ShapeError(f"shapes {list(a)} and {list(b)} do not broadcast")
        out.append(max(x, y) if 0 not in (x, y) else 0)
    return tuple(reversed(out))


def _same_domain_and_dtype(types: tuple[ValueType, ...], what: str) -> None:
    first = types[0]
    for t in types[1:]:
        if t.domain != first.domain:
            raise ShapeError(f"{what}: operands live in different domains ({first.domain.value} and {t.domain.value})")
        if t.dtype != first.dtype:
            raise ShapeError(f"{what}: operands have different dtypes ({first.dtype} and {t.dtype})")


def _unary(op: Op, x: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    return x


def _binary(op: Op, x: ValueType, y: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    _same_domain_and_dtype((x, y), op.value)
    return x.with_shape(broadcast_shapes(x.shape, y.shape))


def _input(attrs: Mapping[str, Any]) -> ValueType:
    raise ShapeError("an input's type is given, not inferred")


def _degree(attrs: Mapping[str, Any]) -> ValueType:
    if attrs["by"] not in ("dst", "dst_etype", "src", "src_etype"):
        raise ShapeError(f"degree by {attrs['by']!r}: expected 'dst', 'dst_etype', 'src' or 'src_etype'")
    return ValueType(Domain.EDGE, (1,), attrs["dtype"])


def _const(attrs: Mapping[str, Any]) -> ValueType:
    return ValueType(Domain.GLOBAL, (), attrs["dtype"])


MATCH_COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")


def _match(attrs: Mapping[str, Any]) -> ValueType:
    to = attrs["to"]
    for side in (attrs["lhs"], attrs.get("rhs")):
        if side is None:
            continue
        if not any(target == to for _, target in indices.GATHER_INDICES.get(side, ())):
            raise ShapeError(f"match: index {side!r} gives no id to {to.value} rows")
    if attrs["cmp"] not in MATCH_COMPARISONS:
        raise ShapeError(f"match: comparison {attrs['cmp']!r}; expected one of {list(MATCH_COMPARISONS)}")
    return ValueType(to, (1,), attrs["dtype"])


def _select(cond: ValueType, a: ValueType, b: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    _same_domain_and_dtype((cond, a, b), "select")
    return a.with_shape(broadcast_shapes(broadcast_shapes(cond.shape, a.shape), b.shape))


def _gather(x: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    try:
        indices.check_gather(attrs["index"], x.domain, attrs["to"])
    except ValueError as err:
        raise ShapeError(f"gather: {err}") from None
    return x.with_domain(attrs["to"])


def _reduce(x: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    if attrs["kind"] not in REDUCE_KINDS:
        raise ShapeError(f"reduce kind {attrs['kind']!r}: expected one of {REDUCE_KINDS}")
    try:
        indices.check_reduce(attrs["index"], x.domain, attrs["to"])
    except ValueError as err:
        raise ShapeError(f"reduce: {err}") from None
    return x.with_domain(attrs["to"])


def _edge_softmax(x: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    index = attrs.get("index", "dst")
    if index not in indices.SOFTMAX_GROUPS:
        raise ShapeError(f"edge_softmax index {index!r}: expected one of {sorted(indices.SOFTMAX_GROUPS)}")
    rows = indices.SOFTMAX_GROUPS[index][0]
    if x.domain != rows:
        raise ShapeError(f"edge_softmax along {index} normalises {rows.value} values, got a {x.domain.value} value")
    return x


def _check_selector(by: str, row_domain: Domain, weight: ValueType, what: str) -> None:
    try:
        param = indices.param_domain_of(by)
    except ValueError as err:
        raise ShapeError(f"{what}: {err}") from None
    if weight.domain != param:
        raise ShapeError(f"{what}: selecting by {by} needs a {param.value} weight, got a {weight.domain.value} value")
    if by == "all":
        return
    if row_domain == Domain.GLOBAL:
        raise ShapeError(f"{what}: a global value has no rows to select a weight by {by} for")
    try:
        indices.check_gather(by, param, row_domain)
    except ValueError as err:
        raise ShapeError(f"{what}: {err}") from None


def _linear(x: ValueType, w: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    _check_selector(attrs["by"], x.domain, w, "linear")
    if x.dtype != w.dtype:
        raise ShapeError(f"linear: input is {x.dtype} but weight is {w.dtype}")
    if len(w.shape) < 2 or len(x.shape) < 1:
        raise ShapeError(f"linear: needs an input [..., in] and a weight [..., in, out]; got {list(x.shape)} and {list(w.shape)}")
    w_in, w_out = (w.shape[-1], w.shape[-2]) if attrs.get("transpose") else (w.shape[-2], w.shape[-1])
    if x.shape[-1] != w_in:
        raise ShapeError(f"linear: input has {x.shape[-1]} features but the weight expects {w_in}")
    batch = w.shape[:-2]
    if batch and x.shape[:-1] != batch:
        raise ShapeError(f"linear: weight batch axes {list(batch)} do not match input axes {list(x.shape[:-1])}")
    return x.with_shape(x.shape[:-1] + (w_out,))


def _linear_wgrad(x: ValueType, dy: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    by = attrs["by"]
    _same_domain_and_dtype((x, dy), "linear_wgrad")
    if not x.shape or not dy.shape or x.shape[:-1] != dy.shape[:-1]:
        raise ShapeError(f"linear_wgrad: input {list(x.shape)} and gradient {list(dy.shape)} differ before the last axis")
    try:
        param = indices.param_domain_of(by)
    except ValueError as err:
        raise ShapeError(f"linear_wgrad: {err}") from None
    batch = x.shape[:-1] if attrs["batched"] else ()
    return ValueType(param, batch + (x.shape[-1], dy.shape[-1]), x.dtype)


def _dot(x: ValueType, y: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    _same_domain_and_dtype((x, y), "dot")
    shape = broadcast_shapes(x.shape, y.shape)
    if not shape:
        raise ShapeError("dot needs at least one feature axis")
    return x.with_shape(shape[:-1] + (1,))


def _reshape(x: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    shape = tuple(attrs["shape"])
    target = x.with_shape(shape)
    if target.numel != x.numel:
        raise ShapeError(f"reshape: cannot reshape {list(x.shape)} ({x.numel} elements) to {list(shape)}")
    return target


def _concat(*args: Any) -> ValueType:
    *types, attrs = args
    if not types:
        raise ShapeError("concat needs at least one value")
    _same_domain_and_dtype(tuple(types), "concat")
    lead = types[0].shape[:-1]
    for t in types:
        if not t.shape or t.shape[:-1] != lead:
            raise ShapeError(f"concat: shapes {[list(t.shape) for t in types]} differ before the last axis")
    return types[0].with_shape(lead + (sum(t.shape[-1] for t in types),))


def _slice(x: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    start, stop = attrs["start"], attrs["stop"]
    if not x.shape or not 0 <= start < stop <= x.shape[-1]:
        raise ShapeError(f"slice: [{start}:{stop}] is not a non-empty range of the last axis of {list(x.shape)}")
    return x.with_shape(x.shape[:-1] + (stop - start,))


def _sum_to(x: ValueType, attrs: Mapping[str, Any]) -> ValueType:
    shape = tuple(attrs["shape"])
    if broadcast_shapes(shape, x.shape) != x.shape:
        raise ShapeError(f"sum_to: {list(shape)} does not broadcast to {list(x.shape)}")
    return x.with_shape(shape)


RULES: dict[Op, Callable[..., ValueType]] = {
    Op.INPUT: _input,
    Op.DEGREE: _degree,
    Op.CONST: _const,
    Op.SIZE: _const,
    Op.MATCH: _match,
    Op.SELECT: _select,
    Op.GATHER: _gather,
    Op.REDUCE: _reduce,
    Op.EDGE_SOFTMAX: _edge_softmax,
    Op.LINEAR: _linear,
    Op.LINEAR_WGRAD: _linear_wgrad,
    Op.DOT: _dot,
    Op.RESHAPE: _reshape,
    Op.CONCAT: _concat,
    Op.SLICE: _slice,
    Op.SUM_TO: _sum_to,
}


def infer(op: Op, arg_types: tuple[ValueType, ...], attrs: Mapping[str, Any]) -> ValueType:
    """The output type of ``op`` applied to values of ``arg_types``."""
    if op in UNARY:
        if len(arg_types) != 1:
            raise ShapeError(f"{op.value} takes one value, got {len(arg_types)}")
        return _unary(op, arg_types[0], attrs)
    if op in BINARY:
        if len(arg_types) != 2:
            raise ShapeError(f"{op.value} takes two values, got {len(arg_types)}")
        return _binary(op, *arg_types, attrs)
    if op in TERNARY and len(arg_types) != 3:
        raise ShapeError(f"{op.value} takes three values, got {len(arg_types)}")
    return RULES[op](*arg_types, attrs)


def run(program):  # type: (ir.program.Program) -> ir.program.Program
    """Re-derive every non-input type of ``program`` from its inputs (a new program)."""
    from .program import Program

    types: dict[str, ValueType] = {}
    nodes = []
    for node in program.nodes:
        if node.op != Op.INPUT:
            node = node.replace(type=infer(node.op, tuple(types[a] for a in node.args), node.attrs))
        types[node.name] = node.type
        nodes.append(node)
    return Program(program.name, tuple(nodes), program.outputs)
