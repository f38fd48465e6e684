"""What the drop-in relational layers share: a graph remembered between calls, and relation
weights given whole, as bases with per-relation coefficients, or as diagonal blocks.

For bases, W_r = sum_b coeff[r, b] V_b, there are two orders: compose every W_r first and run
the plain program, or apply the bases to every node and combine per edge. The cost model
(``pigeon.ir.cost``) chooses on the sizes of the graph at hand; both give the same numbers."""
from __future__ import annotations

from typing import Any, Callable

import torch

import pigeon
from pigeon.examples.rgcn import rgcn
from pigeon.ir.cost import Cost, program_cost, score
from pigeon.lang import dot, linear, sum
from pigeon.runtime.graph import Graph
from pigeon.runtime.layouts import graph_stats


class LastGraph:
    """The graph of the latest call, rebuilt only when the arrays it was built from change
    (compared by value: a new tensor at a recycled address is still caught)."""

    def __init__(self) -> None:
        self._arrays: tuple[torch.Tensor, ...] = ()
        self._sizes: tuple = ()
        self._graph: Graph | None = None

    def get(self, arrays: tuple[torch.Tensor, ...], sizes: tuple, build: Callable[[], Graph]) -> Graph:
        same = (self._graph is not None and sizes == self._sizes and len(arrays) == len(self._arrays)
                and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(arrays, self._arrays)))
        if not same:
            self._graph = build()
            self._arrays = tuple(a.detach().clone() for a in arrays)
            self._sizes = sizes
        return self._graph


def _message(msg: Any, e: Any, edge_weight: Any, aggr: str) -> Any:
    """An edge's message scaled by its weight and, for "mean", by 1 / |N_r(v)| (while tracing)."""
    if edge_weight is not None:
        msg = msg * edge_weight[e]
    return msg / e.dst_etype_degree if aggr == "mean" else msg


def _aggregated(g: Any, h: Any, loop_weight: Any, bias: Any) -> Any:
    """The destinations' sum of e.msg, plus the self loop and the bias (while tracing)."""
    for n in g.dst_nodes():
        out = sum(e.msg for e in n.incoming_edges())
        if loop_weight is not None:
            out = out + linear(h[n], loop_weight)
        if bias is not None:
            out = out + bias
        n.out = out
    return n.out


@pigeon.compile
def rgcn_bases_first(g, h, bases, coeff, loop_weight=None, bias=None, edge_weight=None, aggr="mean"):
    """RGCN with W_r = sum_b coeff[r, b] V_b applied as bases first: ``bases`` is [in, out * B]
    (column o * B + b is V_b's column o), every node meets all B bases once, every edge mixes them."""
    num_bases = coeff.shape[1]
    size = bases.shape[1] // num_bases
    for n in g.nodes():
        n.per_basis = linear(h[n], bases).reshape(size, num_bases)
    for e in g.edges():
        msg = dot(e.src.per_basis, coeff[e.etype].reshape(1, num_bases)).reshape(size)
        e.msg = _message(msg, e, edge_weight, aggr)
    return _aggregated(g, h, loop_weight, bias)


@pigeon.compile
def rgcn_blocks(g, h, blocks, loop_weight=None, bias=None, edge_weight=None, aggr="mean"):
    """RGCN with block-diagonal W_r: ``blocks`` is [R, B, in / B, out / B]."""
    num_blocks, size_in, size_out = blocks.shape[1:]
    for e in g.edges():
        msg = linear(h[e.src].reshape(num_blocks, size_in), blocks[e.etype]).reshape(num_blocks * size_out)
        e.msg = _message(msg, e, edge_weight, aggr)
    return _aggregated(g, h, loop_weight, bias)


def bases_order(g: Graph, h: torch.Tensor, bases: torch.Tensor, coeff: torch.Tensor, **kwargs: Any) -> str:
    """"compose" or "bases": the cheaper order for W_r = sum_b coeff[r, b] bases[b] on ``g``,
    by the cost model (composing costs R x B x in x out multiply-adds on top of the plain program)."""
    stats = graph_stats(g)
    num_bases, size_in, size_out = bases.shape
    composed = torch.empty(coeff.shape[0], size_in, size_out, dtype=bases.dtype)
    flat = torch.empty(size_in, size_out * num_bases, dtype=bases.dtype)
    with torch.no_grad():
        plain = rgcn.executable(g, h, composed, **kwargs).forward
        first = rgcn_bases_first.executable(g, h, flat, coeff, **kwargs).forward
    composing = Cost(flops=2 * coeff.shape[0] * num_bases * size_in * size_out)
    cost_plain = score(program_cost(plain, stats).total + composing)
    return "compose" if cost_plain <= score(program_cost(first, stats).total) else "bases"


def relational_sum(g: Graph, h: torch.Tensor, weight: torch.Tensor, coeff: torch.Tensor | None = None,
                   blocks: bool = False, order: str | None = None, **kwargs: Any) -> torch.Tensor:
    """sum_r AGG_{u in N_r(v)} W_r h_u (+ loop weight and bias in ``kwargs``, as ``rgcn`` takes
    them) for a weight given whole ([R, in, out]), as bases ([B, in, out] with ``coeff`` [R, B])
    or as blocks ([R, B, in / B, out / B], ``blocks=True``). ``order`` forces "compose" or
    "bases" (else the cost model chooses)."""
    if blocks:
        return rgcn_blocks(g, h, weight, **kwargs)
    if coeff is None:
        return rgcn(g, h, weight, **kwargs)
    order = order or bases_order(g, h, weight, coeff, **kwargs)
    num_bases, size_in, size_out = weight.shape
    if order == "compose":
        composed = (coeff @ weight.reshape(num_bases, -1)).reshape(coeff.shape[0], size_in, size_out)
        return rgcn(g, h, composed, **kwargs)
    return rgcn_bases_first(g, h, weight.permute(1, 2, 0).reshape(size_in, size_out * num_bases), coeff, **kwargs)
