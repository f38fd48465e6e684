"""The functions of the loop DSL, for use inside ``@pigeon.compile`` functions.

``from pigeon.lang import *`` brings them in; ``sum``, ``mean`` and ``max`` aggregate edge values
into their destination nodes (and fall back to Python's builtins on ordinary values).
"""
from __future__ import annotations

import builtins
from typing import Any, Iterable

from pigeon.ir.ops import Op
from pigeon.ir.types import Domain

from .tracer import IdsProxy, InputProxy, ParamRef, Sym, TraceError, current, joint_domain, tracing

__all__ = ["linear", "dot", "softmax", "exp", "log", "sqrt", "relu", "leaky_relu", "sigmoid",
           "tanh", "gelu", "abs", "elu", "softplus", "minimum", "maximum", "clamp", "sum", "mean", "max", "min",
           "concat", "reshape", "where", "dropout"]


def linear(x: Any, weight: Any) -> Sym:
    """``x @ weight``; ``weight[e.etype]`` (or ``[e.src.ntype]``, ``[n.ntype]``) picks one matrix
    per type. A weight of shape [..., H, in, out] applies one matrix per head to x [..., H, in]."""
    tracer = current()
    x = tracer.as_sym(x)
    if isinstance(weight, ParamRef):
        w, by = weight.param.sym(), weight.selector.index
    elif isinstance(weight, InputProxy):
        w, by = weight.sym(), "all"
    elif isinstance(weight, IdsProxy):
        weight._not_a_value()
    else:
        raise TraceError("linear's weight must be a tensor argument, whole (W) or indexed by a type (W[e.etype])")
    return tracer.op(Op.LINEAR, [x, w], {"by": by})


def dot(x: Any, y: Any) -> Sym:
    """Sum of ``x * y`` over the last feature axis, kept as size 1 (per head for [H, d] values)."""
    tracer = current()
    a, b = tracer.as_sym(x), tracer.as_sym(y)
    domain = joint_domain(a.domain, b.domain)
    return tracer.op(Op.DOT, [tracer.broadcast(a, domain), tracer.broadcast(b, domain)])


def softmax(x: Any, by: str | None = None) -> Sym:
    """Softmax of an edge value over the incoming edges of each destination node; with
    ``by="etype"``, or inside an aggregation over ``r.incoming_edges()``, over the incoming edges
    of the same edge type only. Of a relation value (inside an aggregation over
    ``n.relations()``), over the relations of each destination."""
    tracer = current()
    if by not in (None, "etype"):
        raise TraceError(f"softmax's by must be None or 'etype', got {by!r}")
    direction = tracer.aggregations[-1][1] if tracer.aggregations else None
    if direction == "outgoing":
        raise TraceError("softmax(x) normalises over each destination's incoming edges, not over "
                         "n.outgoing_edges(); compute it in an edge loop if that is what you mean")
    x = tracer.as_sym(x)
    if x.domain == Domain.COMPACT_DST:
        if by is not None:
            raise TraceError("softmax of a relation value normalises over each destination's relations; by= is for edge values")
        return tracer.op(Op.EDGE_SOFTMAX, [x], {"index": "compact_dst_node"}, hint="softmax_relations")
    if x.domain != Domain.EDGE:
        raise TraceError(f"softmax(x) normalises edge values (or relation values over n.relations()); "
                         f"got a {x.domain.value} value")
    if by == "etype" or direction == "relation":
        return tracer.op(Op.EDGE_SOFTMAX, [x], {"index": "compact_dst"}, hint="softmax_etype")
    return tracer.op(Op.EDGE_SOFTMAX, [x])


def _unary(op: Op, x: Any, **attrs: Any) -> Sym:
    return current().op(op, [x], attrs or None)


def exp(x: Any) -> Sym:
    return _unary(Op.EXP, x)


def log(x: Any) -> Sym:
    return _unary(Op.LOG, x)


def sqrt(x: Any) -> Sym:
    return _unary(Op.SQRT, x)


def relu(x: Any) -> Sym:
    return _unary(Op.RELU, x)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Sym:
    return _unary(Op.LEAKY_RELU, x, slope=float(negative_slope))


def sigmoid(x: Any) -> Sym:
    return _unary(Op.SIGMOID, x)


def tanh(x: Any) -> Sym:
    return _unary(Op.TANH, x)


def gelu(x: Any) -> Sym:
    """The exact (erf) GELU."""
    return _unary(Op.GELU, x)


def abs(x: Any) -> Sym:  # noqa: A001 - the DSL's abs (Python's abs(x) works on traced values too)
    """Absolute value (its gradient at 0 is 0, as torch's)."""
    return _unary(Op.ABS, x)


def elu(x: Any, alpha: float = 1.0) -> Sym:
    return _unary(Op.ELU, x, alpha=float(alpha))


def softplus(x: Any, beta: float = 1.0, threshold: float = 20.0) -> Sym:
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta x > threshold`` (as torch's)."""
    return _unary(Op.SOFTPLUS, x, beta=float(beta), threshold=float(threshold))


def dropout(x: Any, p: float = 0.5, training: bool = True) -> Any:
    """torch.nn.functional.dropout of a traced value: with ``training`` (a Python bool, e.g. a
    layer's ``self.training``) each element is zeroed with probability ``p`` and the rest scaled
    by 1 / (1 - p). The mask is drawn from torch's generator at every call, as F.dropout draws it
    for a tensor of the value's rows and shape, and the backward applies the same mask."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise TraceError(f"dropout probability p must be a number in [0, 1], got {p!r}")
    if not isinstance(training, bool):
        raise TraceError(f"dropout's training must be a Python bool (a constant of the trace), got {type(training).__name__}")
    tracer = current()
    x = tracer.as_sym(x)
    if not training or p == 0.0:
        return x
    return x * tracer.dropout_mask(x, float(p))


def _pair(op: Op, x: Any, y: Any) -> Sym:
    tracer = current()
    if not isinstance(x, (Sym, ParamRef, InputProxy)) and not isinstance(y, (Sym, ParamRef, InputProxy)):
        raise TraceError(f"{op.value}(x, y) needs a traced value")
    x, y = (tracer.constant(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in (x, y))
    return tracer.binary(op, x, y)


def minimum(x: Any, y: Any) -> Sym:
    """The smaller of ``x`` and ``y`` per element (NaN wins; the gradient is shared on ties, as torch's)."""
    return _pair(Op.MINIMUM, x, y)


def maximum(x: Any, y: Any) -> Sym:
    """The larger of ``x`` and ``y`` per element (NaN wins; the gradient is shared on ties, as torch's)."""
    return _pair(Op.MAXIMUM, x, y)


def clamp(x: Any, min: Any = None, max: Any = None) -> Sym:  # noqa: A002 - torch's names
    """``x`` limited to [min, max] (either may be None); the gradient passes where
    min <= x <= max, as torch.clamp's."""
    if min is None and max is None:
        raise TraceError("clamp(x, min, max) needs min or max")
    out = current().as_sym(x)
    if min is not None:
        out = where(out < min, min, out)
    if max is not None:
        out = where(out > max, max, out)
    return out


def reshape(x: Any, *shape: Any) -> Sym:
    return current().as_sym(x).reshape(*shape)


def concat(*xs: Any) -> Sym:
    """Join values along their last feature axis."""
    if len(xs) == 1 and isinstance(xs[0], (list, tuple)):
        xs = tuple(xs[0])
    tracer = current()
    syms = [tracer.as_sym(x) for x in xs]
    domain = syms[0].domain
    for x in syms[1:]:
        domain = joint_domain(domain, x.domain)
    return tracer.op(Op.CONCAT, [tracer.broadcast(x, domain) for x in syms])


def where(cond: Any, a: Any, b: Any) -> Sym:
    """``a`` where ``cond`` holds, else ``b``, element by element (as ``torch.where``).

    ``cond`` is a comparison: of loop ids (``e.etype == 0``, ``n.ntype != 1``, ``e.src == e.dst``)
    or of traced values (``x > 0``, ``x <= y``); any traced value counts as true where nonzero.
    ``a`` and ``b`` are traced values or numbers; the gradient flows to the branch each element
    took."""
    tracer = current()
    values = []
    for v in (cond, a, b):
        if isinstance(v, bool) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            values.append(tracer.constant(float(v)))
        else:
            values.append(tracer.as_sym(v))
    domain = values[0].domain
    for v in values[1:]:
        domain = joint_domain(domain, v.domain)
    return tracer.op(Op.SELECT, [tracer.broadcast(v, domain) for v in values], hint="where")


def _aggregate(kind: str, items: Iterable[Any], fallback: Any, by: str | None = None) -> Any:
    if not tracing():
        return fallback(list(items))
    tracer = current()
    with tracer.aggregating() as seen:
        values = list(items)
    if not any(isinstance(v, (Sym, ParamRef, InputProxy)) for v in values):
        return fallback(values)
    if len(values) != 1 or seen[0] != 1:
        raise TraceError(f"{kind}(...) aggregates one edge value per edge: write "
                         f"{kind}(<edge value> for e in n.incoming_edges())")
    x = tracer.as_sym(values[0])
    if isinstance(seen[1], tuple):  # a readout over every node or edge: one global value (or one per type)
        return _readout(tracer, kind, tracer.broadcast(x, seen[1][1]), by)
    if by is not None:
        raise TraceError(f"{kind}(..., by=...) is for readouts over g.nodes(), g.edges() or g.dst_relations(); "
                         f"for one value per relation of each node loop over g.dst_relations()")
    if seen[1] == "relations":
        return _across_relations(tracer, kind, tracer.broadcast(x, Domain.COMPACT_DST))
    if x.domain != Domain.EDGE:
        raise TraceError(f"{kind}(...) aggregates edge values into nodes; got a {x.domain.value} value")
    if seen[1] == "relation":
        return _within_relation(tracer, kind, x)
    if seen[1] == "incoming":
        if kind == "min":  # the smallest is minus the largest of the negated values
            return -tracer.op(Op.REDUCE, [-x], {"index": "dst", "to": Domain.DST, "kind": "max"}, hint="min")
        return tracer.op(Op.REDUCE, [x], {"index": "dst", "to": Domain.DST, "kind": kind}, hint=f"{kind}")
    # over outgoing edges, into their source nodes
    if kind in ("max", "min"):
        raise TraceError(f"{kind} over n.outgoing_edges() is not supported; sum and mean are")
    if kind == "mean":
        x = x / tracer.degree("src")
    return tracer.op(Op.REDUCE, [x], {"index": "src", "to": Domain.NODE, "kind": "sum"}, hint=f"{kind}_out")


def _within_relation(tracer: Any, kind: str, x: Sym) -> Sym:
    """``kind`` of the edge value ``x`` over the edges of each (destination, edge type) pair."""
    to_pair = {"index": "compact_dst", "to": Domain.COMPACT_DST}
    if kind == "min":
        return -tracer.op(Op.REDUCE, [-x], {**to_pair, "kind": "max"}, hint="min_etype")
    if kind == "mean":  # every pair has an edge: no empty group to guard
        x = x / tracer.degree("dst_etype")
    kind = "sum" if kind == "mean" else kind
    return tracer.op(Op.REDUCE, [x], {**to_pair, "kind": kind}, hint=f"{kind}_etype")


def _across_relations(tracer: Any, kind: str, x: Sym) -> Sym:
    """``kind`` of the relation value ``x`` over the relations of each destination (0 for a
    destination without edges)."""
    to_dst = {"index": "compact_dst_node", "to": Domain.DST}
    if kind in ("max", "min"):
        # every pair has an edge, so the extreme over a node's incoming edges, each reading its
        # pair's value, is the extreme over its pairs (and a per-destination traversal takes it)
        flip = kind == "min"  # the smallest is minus the largest of the negated values
        on_edges = tracer.op(Op.GATHER, [-x if flip else x], {"index": "compact_dst", "to": Domain.EDGE},
                             hint="relation_e")
        top = tracer.op(Op.REDUCE, [on_edges], {"index": "dst", "to": Domain.DST, "kind": "max"}, hint=f"{kind}_relations")
        return -top if flip else top
    return _sum_or_mean(tracer, kind, x, to_dst, f"{kind}_relations")


def _sum_or_mean(tracer: Any, kind: str, x: Sym, into: dict[str, Any], hint: str) -> Sym:
    """The sum of ``x``'s rows reduced ``into`` their targets, or their mean (0 where there are none)."""
    total = tracer.op(Op.REDUCE, [x], {**into, "kind": "sum"}, hint=hint)
    if kind == "sum":
        return total
    ones = tracer.broadcast(tracer.constant(1.0), x.domain)
    count = tracer.op(Op.REDUCE, [ones], {**into, "kind": "sum"}, hint="count")
    return total / maximum(count, 1.0)


# readout by type: (by, the domain read) -> the index that picks each row's type
_READOUT_INDEX = {("etype", Domain.EDGE): "etype", ("etype", Domain.COMPACT_DST): "etype",
                  ("ntype", Domain.NODE): "ntype", ("ntype", Domain.DST): "ntype",
                  ("graph", Domain.NODE): "graph", ("graph", Domain.DST): "graph"}
_READOUT_DOMAIN = {"etype": Domain.ETYPE, "ntype": Domain.NTYPE, "graph": Domain.GRAPH}


def _readout(tracer: Any, kind: str, x: Sym, by: str | None = None) -> Sym:
    """The ``kind`` of ``x`` over all rows of its domain, or with ``by`` over the rows of each
    type (0 where there are none): one global value, or one per type."""
    if by is None:
        index, to = "all", Domain.GLOBAL
    elif (by, x.domain) in _READOUT_INDEX:
        index, to = _READOUT_INDEX[(by, x.domain)], _READOUT_DOMAIN[by]
    else:
        raise TraceError(f"a readout of {x.domain.value} values by {by!r}: by='etype' is for edges and "
                         f"relations, by='ntype' and by='graph' (each graph of a batch) for nodes")
    into = {"index": index, "to": to}
    if kind in ("max", "min"):
        flip = kind == "min"
        top = tracer.op(Op.REDUCE, [-x if flip else x], {**into, "kind": "max"}, hint=f"{kind}_{by or 'all'}")
        return -top if flip else top
    return _sum_or_mean(tracer, kind, x, into, f"{kind}_{by or 'all'}")


def sum(items: Iterable[Any], start: Any = 0, *, by: str | None = None) -> Any:  # noqa: A001 - the DSL's aggregation
    """Sum of edge values over the incoming edges of each destination (zero where none); of
    relation values over ``n.relations()``; a readout over every node, edge or relation (with
    ``by="etype"`` or ``"ntype"``: one value per type)."""
    return _aggregate("sum", items, lambda v: builtins.sum(v, start), by)


def mean(items: Iterable[Any], *, by: str | None = None) -> Any:
    """Mean of edge values over the incoming edges of each destination (zero where none); see sum."""
    def fallback(values: list[Any]) -> Any:
        return builtins.sum(values) / len(values)
    return _aggregate("mean", items, fallback, by)


def min(items: Iterable[Any], *args: Any, by: str | None = None, **kwargs: Any) -> Any:  # noqa: A001
    """Smallest edge value over the incoming edges of each destination (zero where none); see sum."""
    if args or kwargs:
        return builtins.min(items, *args, **kwargs)
    return _aggregate("min", items, builtins.min, by)


def max(items: Iterable[Any], *args: Any, by: str | None = None, **kwargs: Any) -> Any:  # noqa: A001
    """Largest edge value over the incoming edges of each destination (zero where none); see sum."""
    if args or kwargs:
        return builtins.max(items, *args, **kwargs)
    return _aggregate("max", items, builtins.max, by)
