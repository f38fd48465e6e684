"""A naive interpreter of level-1 programs, for the tests only: every value is a Python list of
rows (one float64 tensor per node, edge, compact pair or type), and every op is a loop over
rows in Python, written from the op's definition without any of Pigeon's runtime.

It is the second oracle of the differential fuzzer (tests/test_fuzz.py), beside the reference
executor: ``run(program, g, *tensors)`` returns the outputs as tensors, and gradients come from
torch autograd through the loops (keep graphs small).

Conventions it shares with Pigeon because they are part of the level-1 semantics: aggregations
over no edges give 0; the gradient of ``max`` is shared equally among the edges that reach the
maximum; the rows of the compact domains are the unique (node, edge type) pairs sorted by edge
type, then node.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from pigeon.ir.ops import Op
from pigeon.ir.program import Program
from pigeon.ir.types import Domain
from pigeon.runtime.graph import Graph

D = Domain
Rows = list  # one tensor per row of a row or type domain; a GLOBAL value is a bare tensor


class Structure:
    """The graph's arrays as Python ints, and every index map the level-1 IR names."""

    def __init__(self, g: Graph):
        self.src = g.src.tolist()
        self.dst = g.dst.tolist()
        self.etype = g.etype.tolist()
        self.ntype = g.ntype.tolist()
        self.num_nodes, self.num_dst = g.num_nodes, g.num_dst_nodes
        self.num_etypes, self.num_ntypes = g.num_etypes, g.num_ntypes
        self.compact_pairs = sorted({(t, s) for s, t in zip(self.src, self.etype)})
        self.compact_dst_pairs = sorted({(t, d) for d, t in zip(self.dst, self.etype)})
        pair_of = {p: i for i, p in enumerate(self.compact_pairs)}
        dst_pair_of = {p: i for i, p in enumerate(self.compact_dst_pairs)}
        self.edge_to_compact = [pair_of[(t, s)] for s, t in zip(self.src, self.etype)]
        self.edge_to_compact_dst = [dst_pair_of[(t, d)] for d, t in zip(self.dst, self.etype)]

    def rows(self, domain: Domain) -> int:
        return {D.NODE: self.num_nodes, D.DST: self.num_dst, D.EDGE: len(self.src),
                D.COMPACT: len(self.compact_pairs), D.COMPACT_DST: len(self.compact_dst_pairs),
                D.ETYPE: self.num_etypes, D.NTYPE: self.num_ntypes}[domain]

    def source_rows(self, index: str, target: Domain) -> list[int]:
        """For each row of ``target``, the row of the source domain that a gather along
        ``index`` reads (the id that the index gives the row)."""
        n = self.rows(target)
        if index in ("etype", "ntype") and target in (D.ETYPE, D.NTYPE):
            return list(range(n))  # a type selector on a parameter domain: one row per type
        if target == D.EDGE:
            edges = range(n)
            return {
                "src": lambda: list(self.src),
                "dst": lambda: list(self.dst),
                "compact": lambda: list(self.edge_to_compact),
                "compact_dst": lambda: list(self.edge_to_compact_dst),
                "etype": lambda: list(self.etype),
                "src_ntype": lambda: [self.ntype[self.src[e]] for e in edges],
                "dst_ntype": lambda: [self.ntype[self.dst[e]] for e in edges],
            }[index]()
        if target == D.COMPACT:
            return {
                "compact_src": [s for _, s in self.compact_pairs],
                "etype": [t for t, _ in self.compact_pairs],
                "src_ntype": [self.ntype[s] for _, s in self.compact_pairs],
            }[index]
        if target == D.COMPACT_DST:
            return {
                "compact_dst_node": [d for _, d in self.compact_dst_pairs],
                "etype": [t for t, _ in self.compact_dst_pairs],
                "dst_ntype": [self.ntype[d] for _, d in self.compact_dst_pairs],
            }[index]
        if target in (D.NODE, D.DST):
            if index == "to_dst":
                return list(range(n))
            if index == "ntype":
                return [self.ntype[v] for v in range(n)]
        raise ValueError(f"naive: no index {index!r} into {target.value} rows")

    def degree(self, by: str) -> list[int]:
        """Per edge: the incoming edges of its destination (of its edge type for dst_etype)."""
        keys = [(d, t if by == "dst_etype" else 0) for d, t in zip(self.dst, self.etype)]
        counts: dict[tuple[int, int], int] = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        return [counts[k] for k in keys]


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _gelu_grad(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _where(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(cond, a, torch.zeros_like(a) + b)


def _softplus(x: torch.Tensor, beta: float, threshold: float) -> torch.Tensor:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold."""
    smooth = torch.log(1.0 + torch.exp(torch.clamp(x * beta, max=threshold))) / beta  # no inf off the branch
    return _where(x * beta > threshold, x, smooth)


def _minimum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The smaller per element; on ties each side gets half the gradient."""
    return torch.where(x < y, x, torch.where(y < x, y, (x + y) * 0.5))


UNARY: dict[Op, Callable[[torch.Tensor, dict], torch.Tensor]] = {
    Op.NEG: lambda x, a: -x,
    Op.EXP: lambda x, a: torch.exp(x),
    Op.LOG: lambda x, a: torch.log(x),
    Op.RECIP: lambda x, a: 1.0 / x,
    Op.SQRT: lambda x, a: torch.sqrt(x),
    Op.RELU: lambda x, a: _where(x > 0, x, 0.0),
    Op.LEAKY_RELU: lambda x, a: _where(x > 0, x, x * a["slope"]),
    Op.SIGMOID: lambda x, a: 1.0 / (1.0 + torch.exp(-x)),
    Op.TANH: lambda x, a: torch.tanh(x),
    Op.GELU: lambda x, a: _gelu(x),
    Op.ABS: lambda x, a: torch.sign(x) * x,  # the gradient at 0 is 0
    Op.ELU: lambda x, a: _where(x > 0, x, (torch.exp(x) - 1.0) * a["alpha"]),
    Op.SOFTPLUS: lambda x, a: _softplus(x, a["beta"], a["threshold"]),
    Op.STEP: lambda x, a: (x > 0).to(torch.float64),
    Op.GELU_GRAD: lambda x, a: _gelu_grad(x),
    Op.SCALE: lambda x, a: x * a["c"],
    Op.SHIFT: lambda x, a: x + a["c"],
    Op.POW: lambda x, a: x ** a["c"],
}

COMPARE = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
           "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}

BINARY: dict[Op, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    Op.ADD: lambda x, y: x + y,
    Op.SUB: lambda x, y: x - y,
    Op.MUL: lambda x, y: x * y,
    Op.DIV: lambda x, y: x / y,
    Op.MINIMUM: _minimum,
    Op.MAXIMUM: lambda x, y: -_minimum(-x, -y),
}
for _name, _compare in COMPARE.items():  # the comparisons the IR has (1 where true, else 0)
    if _name.upper() in Op.__members__:
        BINARY[Op[_name.upper()]] = (lambda c: lambda x, y: c(x, y).to(torch.float64))(_compare)



def _align(x: torch.Tensor, rank: int) -> torch.Tensor:
    """A row's features right-aligned to ``rank`` axes (numpy broadcasting)."""
    return x.reshape((1,) * (rank - x.dim()) + tuple(x.shape))


def _sum_to(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    while x.dim() > len(shape):
        x = x.sum(0)
    for axis, size in enumerate(shape):
        if size == 1 and x.shape[axis] != 1:
            x = x.sum(axis, keepdim=True)
    return x


class NaiveInterpreter:
    """Runs one level-1 program on one graph, row by row."""

    def __init__(self, program: Program, g: Graph):
        self.program = program
        self.s = Structure(g)

    def run(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, Any] = {}
        for node, x in zip(self.program.inputs, tensors):
            env[node.name] = x if node.type.domain == D.GLOBAL else list(x.unbind(0))
        for node in self.program.nodes:
            if node.op != Op.INPUT:
                env[node.name] = self.evaluate(node, [env[a] for a in node.args])
        return tuple(self.as_tensor(self.program.node(o), env[o]) for o in self.program.outputs)

    def as_tensor(self, node, value: Any) -> torch.Tensor:
        if node.type.domain == D.GLOBAL:
            return value
        if not value:
            return torch.zeros((0,) + node.type.shape, dtype=torch.float64)
        return torch.stack(value)

    def domain_of(self, name: str) -> Domain:
        return self.program.node(name).type.domain

    def evaluate(self, node, args: list[Any]) -> Any:
        op, attrs = node.op, node.attrs
        domains = [self.domain_of(a) for a in node.args]
        if op in UNARY:
            return self.per_row(domains, args, lambda x: UNARY[op](x, attrs))
        if op in BINARY:
            return self.per_row(domains, args, BINARY[op])
        if op.value == "select":
            return self.per_row(domains, args, lambda c, a, b: torch.where(c != 0, a, b))
        if op == Op.DOT:
            return self.per_row(domains, args, lambda x, y: (x * y).sum(-1, keepdim=True))
        if op == Op.RESHAPE:
            return self.per_row(domains, args, lambda x: x.reshape(tuple(attrs["shape"])))
        if op == Op.CONCAT:
            return self.per_row(domains, args, lambda *xs: torch.cat(xs, -1))
        if op == Op.SLICE:
            return self.per_row(domains, args, lambda x: x[..., attrs["start"]:attrs["stop"]])
        if op == Op.SUM_TO:
            return self.per_row(domains, args, lambda x: _sum_to(x, tuple(attrs["shape"])))
        return getattr(self, "_" + op.value)(node, domains, *args)

    def per_row(self, domains: list[Domain], args: list[Any], fn: Callable[..., torch.Tensor]) -> Any:
        """``fn`` on each row; operands of one op share a domain (or are all global).
        Operands are right-aligned to a common rank, so a row's features broadcast as numpy does."""
        def call(*xs: torch.Tensor) -> torch.Tensor:
            rank = max(x.dim() for x in xs)
            return fn(*(_align(x, rank) for x in xs))
        if all(d == D.GLOBAL for d in domains):
            return call(*args)
        rows = {len(a) for a, d in zip(args, domains) if d != D.GLOBAL}
        assert len(rows) == 1, f"operands with different row counts {rows}"
        count = rows.pop()
        return [call(*(a if d == D.GLOBAL else a[i] for a, d in zip(args, domains))) for i in range(count)]

    # sources ----------------------------------------------------------------------------

    def _degree(self, node, domains) -> Rows:
        return [torch.tensor([float(c)], dtype=torch.float64) for c in self.s.degree(node.attrs["by"])]

    def _const(self, node, domains) -> torch.Tensor:
        return torch.tensor(float(node.attrs["value"]), dtype=torch.float64)

    def _size(self, node, domains) -> torch.Tensor:
        return torch.tensor(float(self.s.rows(node.attrs["of"])), dtype=torch.float64)

    def _match(self, node, domains) -> Rows:
        to, cmp = node.attrs["to"], COMPARE[node.attrs["cmp"]]
        lhs = self.s.source_rows(node.attrs["lhs"], to)
        rhs_index = node.attrs.get("rhs")
        rhs = self.s.source_rows(rhs_index, to) if rhs_index is not None else [node.attrs["value"]] * len(lhs)
        return [torch.tensor([1.0 if cmp(a, b) else 0.0], dtype=torch.float64) for a, b in zip(lhs, rhs)]

    # movement ---------------------------------------------------------------------------

    def _gather(self, node, domains, x: Any) -> Rows:
        index, to = node.attrs["index"], node.attrs["to"]
        if index == "all":
            return [x for _ in range(self.s.rows(to))]
        return [x[i] for i in self.s.source_rows(index, to)]

    def _reduce(self, node, domains, x: Any) -> Any:
        index, to, kind = node.attrs["index"], node.attrs["to"], node.attrs["kind"]
        shape = node.type.shape
        if index == "all":  # rows folded into one global value
            groups = [list(range(len(x)))]
        else:
            target_of = self.s.source_rows(index, domains[0])  # reduce is the transpose of gather
            groups = [[] for _ in range(self.s.rows(to))]
            for row, target in enumerate(target_of):
                groups[target].append(row)
        out = [self.fold([x[i] for i in members], kind, shape) for members in groups]
        return out[0] if index == "all" else out

    @staticmethod
    def fold(items: list[torch.Tensor], kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        if not items:
            return torch.zeros(shape, dtype=torch.float64)
        total = items[0]
        for x in items[1:]:
            total = total + x
        if kind == "sum":
            return total
        if kind == "mean":
            return total / len(items)
        # max, elementwise: ties share the gradient equally (the level-1 convention)
        with torch.no_grad():
            peak = items[0].clone()
            for x in items[1:]:
                peak = torch.where(x > peak, x, peak)
            hits = [(x == peak).to(torch.float64) for x in items]
            count = sum(hits)
        weighted = items[0] * hits[0]
        for x, h in zip(items[1:], hits[1:]):
            weighted = weighted + x * h
        return weighted / count

    def _edge_softmax(self, node, domains, x: Rows) -> Rows:
        """Over the rows that share a group: a destination's incoming edges, a (destination,
        edge type) pair's edges, or a destination's pairs (the op's index)."""
        out: list[Any] = [None] * len(x)
        incoming: dict[int, list[int]] = {}
        for e, d in enumerate(self.s.source_rows(node.attrs.get("index", "dst"), domains[0])):
            incoming.setdefault(d, []).append(e)
        for edges in incoming.values():
            with torch.no_grad():
                peak = x[edges[0]].clone()
                for e in edges[1:]:
                    peak = torch.maximum(peak, x[e])
            exps = {e: torch.exp(x[e] - peak) for e in edges}
            total = exps[edges[0]]
            for e in edges[1:]:
                total = total + exps[e]
            for e in edges:
                out[e] = exps[e] / total
        return out

    # linear algebra ---------------------------------------------------------------------

    def _selected(self, by: str, domain: Domain, weight: Any) -> list[Any]:
        """The weight of each row of ``domain``."""
        if by == "all":
            return [weight] * (1 if domain == D.GLOBAL else self.s.rows(domain))
        return [weight[t] for t in self.s.source_rows(by, domain)]

    def _linear(self, node, domains, x: Any, w: Any) -> Any:
        transpose = node.attrs.get("transpose", False)

        def apply(row: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            if transpose:
                weight = weight.transpose(-1, -2)
            # [*batch, in] x [*batch, in, out] (or [in, out] shared by every batch position)
            return (row.unsqueeze(-1) * weight).sum(-2)

        if domains[0] == D.GLOBAL:
            return apply(x, w)
        return [apply(row, weight) for row, weight in zip(x, self._selected(node.attrs["by"], domains[0], w))]

    def _linear_wgrad(self, node, domains, x: Any, dy: Any) -> Any:
        by, batched = node.attrs["by"], node.attrs["batched"]
        shape = node.type.shape

        def outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            product = a.unsqueeze(-1) * b.unsqueeze(-2)  # [*batch, in, out]
            return product if batched else product.reshape((-1,) + product.shape[-2:]).sum(0)

        if domains[0] == D.GLOBAL:
            return outer(x, dy)
        if by == "all":
            groups = [list(range(len(x)))]
        else:
            groups = [[] for _ in range(self.s.num_etypes if by == "etype" else self.s.num_ntypes)]
            for row, t in enumerate(self.s.source_rows(by, domains[0])):
                groups[t].append(row)
        out = []
        for members in groups:
            total = torch.zeros(shape, dtype=torch.float64)
            for i in members:
                total = total + outer(x[i], dy[i])
            out.append(total)
        return out[0] if by == "all" else out


def run(program: Program, g: Graph, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The outputs of ``program`` on ``g`` (float64 tensors), differentiable by torch autograd."""
    return NaiveInterpreter(program, g).run(*tensors)
