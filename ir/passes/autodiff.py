"""Reverse-mode autodiff of level-1 programs: a forward program becomes a pair
(forward with residual outputs, backward program).

The backward program takes the residuals (under their forward names) and one gradient per
forward output (``d_<output>``), and returns the gradient of every input it reaches. Forward
values a rule needs are residuals when an expensive op made them (typed linear, reduction,
edge softmax) or when they are inputs; everything else (gathers, elementwise ops, dots,
reshapes) is recomputed in the backward program, where fusion makes it nearly free.

    %y : dst[4] = reduce[index=dst, kind=sum, to=dst](%m)      d_m = gather[index=dst, to=edge](%d_y)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..indices import SOFTMAX_GROUPS
from ..ops import COMPARISONS, Op
from ..program import Node, Program, freeze_attrs
from ..rewrite import Rewriter
from ..shape_inference import broadcast_shapes
from ..types import Domain, ValueType

RESIDUAL_OPS = frozenset({Op.LINEAR, Op.LINEAR_WGRAD, Op.REDUCE, Op.EDGE_SOFTMAX})
NOT_DIFFERENTIABLE = COMPARISONS | {Op.STEP, Op.DEGREE, Op.CONST, Op.SIZE, Op.MATCH}
SECOND_ORDER = frozenset({Op.LINEAR_WGRAD, Op.GELU_GRAD, Op.SUM_TO})


class AutodiffError(ValueError):
    """A program uses an op that has no derivative rule here."""


@dataclass(frozen=True)
class Gradient:
    """A program's forward (with residuals appended to its outputs) and backward programs."""

    forward: Program
    backward: Program
    num_outputs: int  # outputs of the original program; the rest of forward's are residuals
    residuals: tuple[str, ...]
    wrt: tuple[str, ...]  # the inputs backward returns gradients of, in its output order


class _Backward:
    """The backward program under construction, and access to forward values from it."""

    def __init__(self, fwd: Program):
        self.fwd = fwd
        self.rw = Rewriter(Program(f"{fwd.name}_backward", (), ()))
        self.rw.taken.update(n.name for n in fwd.nodes)
        self.residuals: list[str] = []
        self._value: dict[str, str] = {}
        self.current = ""  # the forward value whose rule is running: names its gradient values

    def value(self, name: str) -> str:
        """The forward value ``name`` in the backward program: a residual input or recomputed."""
        if name not in self._value:
            node = self.fwd.node(name)
            if node.op == Op.INPUT or node.op in RESIDUAL_OPS:
                self.residuals.append(name)
                self.rw.add_node(Node(name, Op.INPUT, (), node.type, freeze_attrs({"position": 0})))
            else:
                args = tuple(self.value(a) for a in node.args)
                self.rw.add_node(node.replace(args=args))
            self._value[name] = name
        return self._value[name]

    def emit(self, op: Op, args: Sequence[str], hint: str = "", **attrs: object) -> str:
        return self.rw.emit(op, args, attrs, hint=f"d_{self.current}" if hint == "d" else hint)

    def type(self, name: str) -> ValueType:
        return self.rw.type_of(name)

    def constant(self, value: float, like: ValueType) -> str:
        """The number ``value`` as a value of ``like``'s domain (broadcast over its shape)."""
        c = self.emit(Op.CONST, [], "const", value=float(value), dtype=like.dtype)
        if like.domain != Domain.GLOBAL:
            c = self.emit(Op.GATHER, [c], "const", index="all", to=like.domain)
        return c

    def sum_to(self, grad: str, target: ValueType) -> str:
        """``grad`` with the axes it was broadcast along summed away, to ``target``'s shape."""
        if self.type(grad).shape == target.shape:
            return grad
        return self.emit(Op.SUM_TO, [grad], "d", shape=target.shape)


Rule = Callable[[_Backward, Node, str], list]  # -> [(arg index, gradient name)]


def _unary(fn: Callable[[_Backward, Node, str], str]) -> Rule:
    return lambda b, n, g: [(0, fn(b, n, g))]


def _elementwise_rules() -> dict[Op, Rule]:
    def x(b: _Backward, n: Node) -> str:
        return b.value(n.args[0])

    def out(b: _Backward, n: Node) -> str:
        return b.value(n.name)

    mul = lambda b, p, q: b.emit(Op.MUL, [p, q], "d")  # noqa: E731
    return {
        Op.NEG: _unary(lambda b, n, g: b.emit(Op.NEG, [g], "d")),
        Op.EXP: _unary(lambda b, n, g: mul(b, g, out(b, n))),
        Op.LOG: _unary(lambda b, n, g: b.emit(Op.DIV, [g, x(b, n)], "d")),
        Op.RECIP: _unary(lambda b, n, g: b.emit(Op.NEG, [mul(b, g, mul(b, out(b, n), out(b, n)))], "d")),
        Op.SQRT: _unary(lambda b, n, g: b.emit(Op.SCALE, [b.emit(Op.DIV, [g, out(b, n)], "d")], "d", c=0.5)),
        Op.RELU: _unary(lambda b, n, g: mul(b, g, b.emit(Op.STEP, [x(b, n)], "step"))),
        Op.LEAKY_RELU: _unary(lambda b, n, g: mul(b, g, b.emit(
            Op.SHIFT, [b.emit(Op.SCALE, [b.emit(Op.STEP, [x(b, n)], "step")], "slope", c=1.0 - n.attrs["slope"])],
            "slope", c=n.attrs["slope"]))),
        Op.SIGMOID: _unary(lambda b, n, g: mul(b, g, mul(b, out(b, n), b.emit(
            Op.SHIFT, [b.emit(Op.NEG, [out(b, n)])], c=1.0)))),
        Op.TANH: _unary(lambda b, n, g: mul(b, g, b.emit(
            Op.SHIFT, [b.emit(Op.NEG, [mul(b, out(b, n), out(b, n))])], c=1.0))),
        Op.GELU: _unary(lambda b, n, g: mul(b, g, b.emit(Op.GELU_GRAD, [x(b, n)]))),
        Op.SCALE: _unary(lambda b, n, g: b.emit(Op.SCALE, [g], "d", c=n.attrs["c"])),
        Op.SHIFT: _unary(lambda b, n, g: g),
        Op.POW: _unary(lambda b, n, g: b.emit(Op.SCALE, [mul(b, g, b.emit(
            Op.POW, [x(b, n)], c=n.attrs["c"] - 1.0))], "d", c=n.attrs["c"])),
    }


def _binary(b: _Backward, n: Node, g: str) -> list:
    xa, ya = n.args
    xt, yt = b.fwd.node(xa).type, b.fwd.node(ya).type
    if n.op == Op.ADD:
        return [(0, b.sum_to(g, xt)), (1, b.sum_to(g, yt))]
    if n.op == Op.SUB:
        return [(0, b.sum_to(g, xt)), (1, b.sum_to(b.emit(Op.NEG, [g], "d"), yt))]
    if n.op == Op.MUL:
        return [(0, b.sum_to(b.emit(Op.MUL, [g, b.value(ya)], "d"), xt)),
                (1, b.sum_to(b.emit(Op.MUL, [g, b.value(xa)], "d"), yt))]
    # DIV: d x = g / y;  d y = -g * out / y
    dx = b.emit(Op.DIV, [g, b.value(ya)], "d")
    dy = b.emit(Op.NEG, [b.emit(Op.DIV, [b.emit(Op.MUL, [g, b.value(n.name)], "d"), b.value(ya)], "d")], "d")
    return [(0, b.sum_to(dx, xt)), (1, b.sum_to(dy, yt))]


def _abs(b: _Backward, n: Node, g: str) -> str:
    x = b.value(n.args[0])
    sign = b.emit(Op.SUB, [b.emit(Op.STEP, [x], "sign"), b.emit(Op.STEP, [b.emit(Op.NEG, [x])], "sign")], "sign")
    return b.emit(Op.MUL, [g, sign], "d")


def _elu(b: _Backward, n: Node, g: str) -> str:
    x = b.value(n.args[0])
    positive = b.emit(Op.GT, [x, b.constant(0.0, n.type)], "positive")
    slope = b.emit(Op.SCALE, [b.emit(Op.EXP, [x])], "slope", c=n.attrs["alpha"])
    return b.emit(Op.SELECT, [positive, g, b.emit(Op.MUL, [g, slope], "d")], "d")


def _softplus(b: _Backward, n: Node, g: str) -> str:
    bx = b.emit(Op.SCALE, [b.value(n.args[0])], "beta_x", c=n.attrs["beta"])
    linear = b.emit(Op.GT, [bx, b.constant(n.attrs["threshold"], n.type)], "linear")
    return b.emit(Op.SELECT, [linear, g, b.emit(Op.MUL, [g, b.emit(Op.SIGMOID, [bx])], "d")], "d")


def _extremum(b: _Backward, n: Node, g: str) -> list:
    """maximum/minimum: the gradient goes to the operand taken, halved between equal ones (as torch's)."""
    xa, ya = n.args
    x, y = b.value(xa), b.value(ya)
    wins = Op.GT if n.op == Op.MAXIMUM else Op.LT
    loses = Op.LT if n.op == Op.MAXIMUM else Op.GT
    zero = b.constant(0.0, n.type)
    tie = b.emit(Op.SELECT, [b.emit(Op.EQ, [x, y], "tie"), b.emit(Op.SCALE, [g], "d", c=0.5), zero], "d")
    dx = b.emit(Op.SELECT, [b.emit(wins, [x, y], "wins"), g, tie], "d")
    dy = b.emit(Op.SELECT, [b.emit(loses, [x, y], "loses"), g, tie], "d")
    return [(0, b.sum_to(dx, b.fwd.node(xa).type)), (1, b.sum_to(dy, b.fwd.node(ya).type))]


def _select(b: _Backward, n: Node, g: str) -> list:
    """The gradient goes to the branch each element took (as torch.where's does)."""
    cond, then, other = n.args
    zero = b.constant(0.0, n.type)
    c = b.value(cond)
    d_then = b.emit(Op.SELECT, [c, g, zero], "d")
    d_other = b.emit(Op.SELECT, [c, zero, g], "d")
    return [(1, b.sum_to(d_then, b.fwd.node(then).type)), (2, b.sum_to(d_other, b.fwd.node(other).type))]


def _dot(b: _Backward, n: Node, g: str) -> list:
    xa, ya = n.args

    def grad(of: str, other: str) -> str:
        product = b.emit(Op.MUL, [g, b.value(other)], "d")
        target = b.fwd.node(of).type
        if broadcast_shapes(b.type(product).shape, target.shape) != b.type(product).shape:
            # the other operand's last axis is 1 where this one's is not: every element of this
            # one gets the same product, so spread it over this operand's shape first
            product = b.emit(Op.SELECT, [b.constant(1.0, target), product, b.value(of)], "d")
        return b.sum_to(product, target)
    return [(0, grad(xa, ya)), (1, grad(ya, xa))]


def _gather(b: _Backward, n: Node, g: str) -> list:
    source = b.fwd.node(n.args[0]).type.domain
    return [(0, b.emit(Op.REDUCE, [g], "d", index=n.attrs["index"], to=source, kind="sum"))]


def _reduce(b: _Backward, n: Node, g: str) -> list:
    index, kind = n.attrs["index"], n.attrs["kind"]
    x_domain = b.fwd.node(n.args[0]).type.domain
    spread = b.emit(Op.GATHER, [g], "d", index=index, to=x_domain)
    if kind == "sum":
        return [(0, spread)]
    if kind == "mean":
        if index != "dst" or x_domain != Domain.EDGE:
            raise AutodiffError(f"no derivative of a mean reduction along {index!r}; only of sum and max, "
                                f"or of a mean over the incoming edges of destination nodes")
        degree = b.emit(Op.DEGREE, [], by="dst", dtype=n.type.dtype)
        return [(0, b.emit(Op.DIV, [spread, degree], "d"))]
    # max: the gradient goes to the rows that reached the maximum, shared equally among ties
    peak = b.emit(Op.GATHER, [b.value(n.name)], index=index, to=x_domain)
    hit = b.emit(Op.EQ, [b.value(n.args[0]), peak], "argmax")
    ties = b.emit(Op.GATHER, [b.emit(Op.REDUCE, [hit], "ties", index=index, to=n.type.domain, kind="sum")],
                  "ties", index=index, to=x_domain)
    return [(0, b.emit(Op.DIV, [b.emit(Op.MUL, [spread, hit], "d"), ties], "d"))]


def _edge_softmax(b: _Backward, n: Node, g: str) -> list:
    index = n.attrs.get("index", "dst")
    rows, groups = SOFTMAX_GROUPS[index]
    y = b.value(n.name)
    yg = b.emit(Op.MUL, [y, g], "d")
    total = b.emit(Op.REDUCE, [yg], "d", index=index, to=groups, kind="sum")
    spread = b.emit(Op.GATHER, [total], "d", index=index, to=rows)
    return [(0, b.emit(Op.MUL, [y, b.emit(Op.SUB, [g, spread], "d")], "d"))]


def _linear(b: _Backward, n: Node, g: str) -> list:
    xa, wa = n.args
    by, transpose = n.attrs["by"], n.attrs.get("transpose", False)
    w_type = b.fwd.node(wa).type
    dx_attrs = {"by": by, **({} if transpose else {"transpose": True})}
    dx = b.rw.emit(Op.LINEAR, [g, b.value(wa)], dx_attrs, hint=f"d_{n.name}")
    batched = len(w_type.shape) > 2
    pair = [g, b.value(xa)] if transpose else [b.value(xa), g]
    dw = b.emit(Op.LINEAR_WGRAD, pair, "d", by=by, batched=batched)
    return [(0, dx), (1, dw)]


def _reshape(b: _Backward, n: Node, g: str) -> list:
    return [(0, b.emit(Op.RESHAPE, [g], "d", shape=b.fwd.node(n.args[0]).type.shape))]


def _concat(b: _Backward, n: Node, g: str) -> list:
    grads, start = [], 0
    for i, a in enumerate(n.args):
        width = b.fwd.node(a).type.shape[-1]
        if width:  # a part of width 0 has an empty gradient: nothing to slice
            grads.append((i, b.emit(Op.SLICE, [g], "d", start=start, stop=start + width)))
        start += width
    return grads


def _slice(b: _Backward, n: Node, g: str) -> list:
    """The gradient fills the slice's columns and is zero in the others (concatenated around it)."""
    x = n.args[0]
    x_type = b.fwd.node(x).type
    start, stop, width = n.attrs["start"], n.attrs["stop"], x_type.shape[-1]

    def zeros(lo: int, hi: int) -> str:  # zeros shaped as columns lo:hi of x (x itself is not read)
        columns = b.emit(Op.SLICE, [b.value(x)], "zero", start=lo, stop=hi)
        like = b.type(columns)
        return b.emit(Op.SELECT, [b.constant(1.0, like), b.constant(0.0, like), columns], "zero")
    pieces = ([zeros(0, start)] if start > 0 else []) + [g] + ([zeros(stop, width)] if stop < width else [])
    return [(0, b.emit(Op.CONCAT, pieces, "d") if len(pieces) > 1 else g)]


RULES: dict[Op, Rule] = {
    **_elementwise_rules(),
    Op.ADD: _binary, Op.SUB: _binary, Op.MUL: _binary, Op.DIV: _binary,
    Op.ABS: _unary(_abs), Op.ELU: _unary(_elu), Op.SOFTPLUS: _unary(_softplus),
    Op.MINIMUM: _extremum, Op.MAXIMUM: _extremum,
    Op.SELECT: _select, Op.DOT: _dot, Op.GATHER: _gather, Op.REDUCE: _reduce, Op.EDGE_SOFTMAX: _edge_softmax,
    Op.LINEAR: _linear, Op.RESHAPE: _reshape, Op.CONCAT: _concat, Op.SLICE: _slice,
}


def _needs_grad(program: Program, wrt: set[str]) -> set[str]:
    needs = set()
    for node in program.nodes:
        if node.name in wrt or (node.op not in NOT_DIFFERENTIABLE and any(a in needs for a in node.args)):
            needs.add(node.name)
    return needs


def differentiate(program: Program, wrt: Sequence[str] | None = None) -> Gradient:
    """The gradient programs of ``program`` with respect to the inputs ``wrt`` (default: all)."""
    inputs = [n.name for n in program.inputs]
    wrt = list(inputs if wrt is None else wrt)
    unknown = [w for w in wrt if w not in inputs]
    if unknown:
        raise AutodiffError(f"{unknown} are not inputs of {program.name}")
    needs = _needs_grad(program, set(wrt))
    b = _Backward(program)
    grads: dict[str, list[str]] = {}
    out_grads = []
    for out in program.outputs:
        name = b.rw._fresh(f"d_{out}")
        b.rw.add_node(Node(name, Op.INPUT, (), program.node(out).type, freeze_attrs({"position": 0})))
        out_grads.append(name)
        if out in needs:
            grads.setdefault(out, []).append(name)
    for node in reversed(program.nodes):
        if node.name not in grads or node.op == Op.INPUT:
            continue
        contributions = grads.pop(node.name)
        b.current = node.name
        g = contributions[0]
        for other in contributions[1:]:
            g = b.emit(Op.ADD, [g, other], f"d_{node.name}")
        if node.op in SECOND_ORDER or node.op not in RULES:
            raise AutodiffError(f"no derivative rule for {node.op.value} (%{node.name}); "
                                f"second derivatives are not supported")
        for i, grad in RULES[node.op](b, node, g):
            if node.args[i] in needs:
                grads.setdefault(node.args[i], []).append(grad)
    results = []
    for name in wrt:
        if name in grads:
            g = grads[name][0]
            for other in grads[name][1:]:
                g = b.emit(Op.ADD, [g, other], f"d_{name}")
            results.append((name, g))
    backward = _finish(b, out_grads, [g for _, g in results])
    forward = Program(program.name, program.nodes, program.outputs + tuple(b.residuals))
    return Gradient(forward, backward, len(program.outputs), tuple(b.residuals), tuple(n for n, _ in results))


def _finish(b: _Backward, out_grads: list[str], outputs: list[str]) -> Program:
    """Inputs first: residuals in order, then the output gradients, positions numbered."""
    order = b.residuals + out_grads
    position = {name: i for i, name in enumerate(order)}
    inputs = sorted((n for n in b.rw.nodes if n.op == Op.INPUT), key=lambda n: position[n.name])
    inputs = [n.replace(attrs={"position": position[n.name]}) for n in inputs]
    body = [n for n in b.rw.nodes if n.op != Op.INPUT]
    return Program(b.rw.program.name, tuple(inputs + body), tuple(outputs))
