"""The reference executor: runs any level-1 program with torch ops, on any device.

Differentiable through torch autograd. It is Pigeon's CPU backend and the oracle that every
optimised program and every generated kernel is checked against.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from pigeon.ir.indices import SOFTMAX_GROUPS
from pigeon.ir.ops import Op
from pigeon.ir.printer import format_node
from pigeon.ir.program import Node, Program
from pigeon.ir.types import Domain, ValueType

from . import layouts
from .graph import Graph

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                "float32": torch.float32, "float64": torch.float64}


class InputError(ValueError):
    """A tensor passed to a compiled program does not fit its type or its graph."""


def expected_shape(g: Graph, t: ValueType) -> tuple[int, ...]:
    """The tensor shape of a value of type ``t`` on graph ``g``."""
    if t.domain == Domain.GLOBAL:
        return t.shape
    return (layouts.num_rows(g, t.domain),) + t.shape


def check_inputs(program: Program, g: Graph, tensors: Sequence[torch.Tensor]) -> None:
    """Raise InputError naming the first input whose count, shape, dtype or device is wrong."""
    inputs = program.inputs
    if len(tensors) != len(inputs):
        raise InputError(f"{program.name} takes {len(inputs)} tensors, got {len(tensors)}")
    for node, x in zip(inputs, tensors):
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{node.name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype != TORCH_DTYPES[node.type.dtype]:
            raise InputError(f"{node.name} has dtype {x.dtype}, expected {TORCH_DTYPES[node.type.dtype]}")
        if x.device != g.device:
            raise InputError(f"{node.name} is on {x.device} but the graph is on {g.device}")
        want = expected_shape(g, node.type)
        if tuple(x.shape) != want:
            raise InputError(f"{node.name} has shape {list(x.shape)}, expected {list(want)} "
                             f"(a {node.type.domain.value} value of {list(node.type.shape)} on {g})")


def _rows(x: torch.Tensor, t: ValueType) -> int:
    return 0 if t.domain == Domain.GLOBAL else x.shape[0]


def _matmul(x: torch.Tensor, w: torch.Tensor, transpose: bool) -> torch.Tensor:
    if transpose:
        w = w.transpose(-1, -2)
    if w.dim() == 2:
        return x @ w
    return (x.unsqueeze(-2) @ w).squeeze(-2)


class ReferenceExecutor:
    """Runs one program on one graph: ``ReferenceExecutor(p, g).run(*tensors)``."""

    def __init__(self, program: Program, graph: Graph):
        self.program = program
        self.g = graph
        last_use: dict[str, int] = {}
        for i, node in enumerate(program.nodes):
            for a in node.args:
                last_use[a] = i
        self._free_after: dict[int, list[str]] = {}
        for name, i in last_use.items():
            if name not in program.outputs:
                self._free_after.setdefault(i, []).append(name)

    def run(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_inputs(self.program, self.g, tensors)
        self.g.check_unchanged()
        env: dict[str, torch.Tensor] = {n.name: x for n, x in zip(self.program.inputs, tensors)}
        for i, node in enumerate(self.program.nodes):
            if node.op != Op.INPUT:
                try:
                    env[node.name] = self.run_node(node, [env[a] for a in node.args])
                except Exception as err:
                    err.add_note(f"while executing {format_node(node, with_loc=True)}")
                    raise
            for name in self._free_after.get(i, ()):
                del env[name]
        return tuple(env[o] for o in self.program.outputs)

    def arg_type(self, node: Node, i: int) -> ValueType:
        return self.program.node(node.args[i]).type

    def run_node(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        if node.op in UNARY_FNS:
            return UNARY_FNS[node.op](args[0], node.attrs)
        if node.op in BINARY_FNS:
            return BINARY_FNS[node.op](*self._aligned(node, args))
        return getattr(self, "_" + node.op.value)(node, *args)

    # movement ---------------------------------------------------------------------------

    def _degree(self, node: Node) -> torch.Tensor:
        d = layouts.degree(self.g, node.attrs["by"])
        return d.to(TORCH_DTYPES[node.type.dtype]).unsqueeze(-1)

    def _const(self, node: Node) -> torch.Tensor:
        return torch.tensor(node.attrs["value"], dtype=TORCH_DTYPES[node.type.dtype], device=self.g.device)

    def _size(self, node: Node) -> torch.Tensor:
        rows = 1 if node.attrs["of"] == Domain.GLOBAL else layouts.num_rows(self.g, node.attrs["of"])
        return torch.tensor(float(rows), dtype=TORCH_DTYPES[node.type.dtype], device=self.g.device)

    def _match(self, node: Node) -> torch.Tensor:
        to = node.attrs["to"]
        lhs = layouts.index_array(self.g, node.attrs["lhs"], to)
        rhs = node.attrs["value"] if node.attrs.get("rhs") is None else layouts.index_array(self.g, node.attrs["rhs"], to)
        return COMPARE_FNS[node.attrs["cmp"]](lhs, rhs).to(TORCH_DTYPES[node.type.dtype]).unsqueeze(-1)

    def _select(self, node: Node, cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        cond, a, b = self._aligned(node, [cond, a, b])
        return torch.where(cond != 0, a, b)

    def _gather(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        index, to = node.attrs["index"], node.attrs["to"]
        if index == "all":
            return x.expand((layouts.num_rows(self.g, to),) + tuple(x.shape))
        if index == "to_dst":
            return x[: self.g.num_dst_nodes]
        return x.index_select(0, layouts.index_array(self.g, index, to))

    def _reduce(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        index, to, kind = node.attrs["index"], node.attrs["to"], node.attrs["kind"]
        source = self.arg_type(node, 0).domain
        if index == "all":
            return {"sum": torch.sum, "mean": torch.mean}[kind](x, 0) if kind != "max" else x.amax(0)
        rows = layouts.num_rows(self.g, to)
        if index == "to_dst" and kind == "sum":
            return torch.cat([x, x.new_zeros((rows - x.shape[0],) + tuple(x.shape[1:]))])
        idx = (torch.arange(x.shape[0], device=x.device) if index == "to_dst"
               else layouts.index_array(self.g, index, source))
        return segment_reduce(x, idx, rows, kind)

    def _edge_softmax(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        index = node.attrs.get("index", "dst")
        members, groups = SOFTMAX_GROUPS[index]
        group, rows = layouts.index_array(self.g, index, members), layouts.num_rows(self.g, groups)
        peak = segment_reduce(x.detach(), group, rows, "max")  # softmax is shift-invariant
        e = torch.exp(x - peak.index_select(0, group))
        total = segment_reduce(e, group, rows, "sum")
        return e / total.index_select(0, group)

    # linear algebra ---------------------------------------------------------------------

    def _linear(self, node: Node, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        by, transpose = node.attrs["by"], node.attrs.get("transpose", False)
        if by == "all":
            return _matmul(x, w, transpose)
        seg = layouts.segments(self.g, by, self.arg_type(node, 0).domain)
        xs = x if seg.perm is None else x.index_select(0, seg.perm)
        # every segment is multiplied, empty ones too, so every weight row gets a (zero) gradient
        pieces = [_matmul(chunk, w[t], transpose) for t, chunk in enumerate(torch.split(xs, seg.counts))]
        ys = torch.cat(pieces) if pieces else x.new_zeros((0,) + node.type.shape)
        return ys if seg.inverse is None else ys.index_select(0, seg.inverse)

    def _linear_wgrad(self, node: Node, x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        by, batched = node.attrs["by"], node.attrs["batched"]
        domain = self.arg_type(node, 0).domain

        def outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            if batched:  # rows, *batch, in  x  rows, *batch, out -> *batch, in, out
                return torch.einsum("n...i,n...o->...io", a, b)
            return a.flatten(0, -2).transpose(0, 1) @ b.flatten(0, -2)  # zero-width axes too

        if by == "all":
            if domain == Domain.GLOBAL:
                x, dy = x.unsqueeze(0), dy.unsqueeze(0)
            return outer(x, dy)
        seg = layouts.segments(self.g, by, domain)
        if seg.perm is not None:
            x, dy = x.index_select(0, seg.perm), dy.index_select(0, seg.perm)
        grads = [outer(a, b) for a, b in zip(torch.split(x, seg.counts), torch.split(dy, seg.counts))]
        return torch.stack(grads)

    def _dot(self, node: Node, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self._aligned(node, [x, y])
        return (x * y).sum(-1, keepdim=True)

    def _aligned(self, node: Node, args: list[torch.Tensor]) -> list[torch.Tensor]:
        """Operands with their feature axes right-aligned behind the row axis, for broadcasting."""
        rank = max(len(self.arg_type(node, i).shape) for i in range(len(args)))
        out = []
        for i, x in enumerate(args):
            t = self.arg_type(node, i)
            missing = rank - len(t.shape)
            if missing and t.domain != Domain.GLOBAL:
                x = x.reshape(x.shape[:1] + (1,) * missing + x.shape[1:])
            out.append(x)
        return out

    # feature shape ----------------------------------------------------------------------

    def _reshape(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[: x.dim() - len(self.arg_type(node, 0).shape)]
        return x.reshape(tuple(lead) + tuple(node.attrs["shape"]))

    def _concat(self, node: Node, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, -1)

    def _slice(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        return x[..., node.attrs["start"]:node.attrs["stop"]]

    def _sum_to(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        return sum_to(x, len(self.arg_type(node, 0).shape), tuple(node.attrs["shape"]))


def sum_to(x: torch.Tensor, feature_dims: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum the broadcast feature axes of ``x`` (the last ``feature_dims`` axes) down to ``shape``."""
    lead = x.dim() - feature_dims
    extra = feature_dims - len(shape)
    if extra:
        x = x.sum(dim=tuple(range(lead, lead + extra)))
    axes = tuple(lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1)
    return x.sum(dim=axes, keepdim=True) if axes else x


def segment_reduce(x: torch.Tensor, index: torch.Tensor, rows: int, kind: str) -> torch.Tensor:
    """Fold row ``i`` of ``x`` into row ``index[i]`` of a [rows, ...] result; empty rows are 0."""
    shape = (rows,) + tuple(x.shape[1:])
    if kind == "max":
        expanded = index.view((-1,) + (1,) * (x.dim() - 1)).expand_as(x)
        return x.new_zeros(shape).scatter_reduce(0, expanded, x, "amax", include_self=False)
    total = x.new_zeros(shape).index_add(0, index, x)
    if kind == "sum":
        return total
    count = torch.bincount(index, minlength=rows).clamp(min=1).to(x.dtype)
    return total / count.view((-1,) + (1,) * (x.dim() - 1))


def _gelu_grad(x: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(x * 0.7071067811865476))
    pdf = torch.exp(-0.5 * x * x) * 0.3989422804014327
    return cdf + x * pdf


UNARY_FNS: dict[Op, Callable[[torch.Tensor, dict], torch.Tensor]] = {
    Op.NEG: lambda x, a: -x,
    Op.EXP: lambda x, a: torch.exp(x),
    Op.LOG: lambda x, a: torch.log(x),
    Op.RECIP: lambda x, a: torch.reciprocal(x),
    Op.SQRT: lambda x, a: torch.sqrt(x),
    Op.RELU: lambda x, a: torch.relu(x),
    Op.LEAKY_RELU: lambda x, a: torch.nn.functional.leaky_relu(x, a["slope"]),
    Op.SIGMOID: lambda x, a: torch.sigmoid(x),
    Op.TANH: lambda x, a: torch.tanh(x),
    Op.GELU: lambda x, a: torch.nn.functional.gelu(x),
    Op.ABS: lambda x, a: torch.abs(x),
    Op.ELU: lambda x, a: torch.nn.functional.elu(x, a["alpha"]),
    Op.SOFTPLUS: lambda x, a: torch.nn.functional.softplus(x, a["beta"], a["threshold"]),
    Op.STEP: lambda x, a: (x > 0).to(x.dtype),
    Op.GELU_GRAD: lambda x, a: _gelu_grad(x),
    Op.SCALE: lambda x, a: x * a["c"],
    Op.SHIFT: lambda x, a: x + a["c"],
    Op.POW: lambda x, a: torch.pow(x, a["c"]),
}

BINARY_FNS: dict[Op, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    Op.ADD: torch.add,
    Op.SUB: torch.sub,
    Op.MUL: torch.mul,
    Op.DIV: torch.div,
    Op.MINIMUM: torch.minimum,
    Op.MAXIMUM: torch.maximum,
    Op.EQ: lambda x, y: (x == y).to(x.dtype),
    Op.NE: lambda x, y: (x != y).to(x.dtype),
    Op.LT: lambda x, y: (x < y).to(x.dtype),
    Op.LE: lambda x, y: (x <= y).to(x.dtype),
    Op.GT: lambda x, y: (x > y).to(x.dtype),
    Op.GE: lambda x, y: (x >= y).to(x.dtype),
}

COMPARE_FNS = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}


def execute(program: Program, graph: Graph, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Run ``program`` on ``graph`` with its inputs in order; returns its outputs."""
    return ReferenceExecutor(program, graph).run(*tensors)
