"""Drop-in replacements for DGL's relational layers: the same constructor arguments, calls and
parameter names as DGL 2.1, so that ``load_state_dict(dgl_layer.state_dict())`` works and the
outputs match. Change ``from dgl.nn import RelGraphConv`` to ``from pigeon.nn.dgl import
RelGraphConv``; nothing else.

The pigeon graph is built from the DGL graph and the edge types on the first call and kept while
they stay the same (compared by value)."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

import pigeon
from pigeon.runtime.graph import Graph, GraphError

from .layers import PigeonLayer
from .relational import LastGraph, bases_order, relational_sum


def _graph(cache: LastGraph, g: Any, etypes: Any, num_rels: int) -> Graph:
    src, dst = g.edges()
    etypes = torch.as_tensor(etypes, device=src.device)
    if etypes.shape != src.shape:
        raise GraphError(f"etypes has shape {list(etypes.shape)}; expected [{src.numel()}], one type per edge")
    return cache.get((src, dst, etypes), (g.num_src_nodes(), g.num_dst_nodes(), num_rels), lambda: Graph.from_edges(
        src, dst, etypes, g.num_src_nodes(), num_dst_nodes=g.num_dst_nodes(), num_etypes=num_rels))


class TypedLinear(nn.Module):
    """DGL's ``TypedLinear``: ``x_i W_{type(i)}`` with ``regularizer`` None, "basis" (W_t = sum_b
    coeff[t, b] W[b]) or "bdd" (block-diagonal W_t, stored flat as [T, B * in/B * out/B])."""

    def __init__(self, in_size: int, out_size: int, num_types: int, regularizer: str | None = None,
                 num_bases: int | None = None):
        super().__init__()
        self.in_size, self.out_size, self.num_types = in_size, out_size, num_types
        if regularizer is None:
            self.W = nn.Parameter(torch.empty(num_types, in_size, out_size))
        elif regularizer == "basis":
            if num_bases is None:
                raise ValueError('Missing "num_bases" for basis regularization.')
            self.W = nn.Parameter(torch.empty(num_bases, in_size, out_size))
            self.coeff = nn.Parameter(torch.empty(num_types, num_bases))
            self.num_bases = num_bases
        elif regularizer == "bdd":
            if num_bases is None:
                raise ValueError('Missing "num_bases" for bdd regularization.')
            if in_size % num_bases != 0 or out_size % num_bases != 0:
                raise ValueError("Input and output sizes must be divisible by num_bases.")
            self.submat_in, self.submat_out = in_size // num_bases, out_size // num_bases
            self.W = nn.Parameter(torch.empty(num_types, num_bases * self.submat_in * self.submat_out))
            self.num_bases = num_bases
        else:
            raise ValueError(f'Supported regularizer options: "basis", "bdd", but got {regularizer}')
        self.regularizer = regularizer
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            fan = self.submat_in if self.regularizer == "bdd" else self.in_size
            nn.init.uniform_(self.W, -1 / math.sqrt(fan), 1 / math.sqrt(fan))
            if self.regularizer == "basis":
                nn.init.xavier_uniform_(self.coeff, gain=nn.init.calculate_gain("relu"))

    def relation_weight(self) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """(weight, coeff, blocks) in the form ``relational_sum`` takes."""
        if self.regularizer == "basis":
            return self.W, self.coeff, False
        if self.regularizer == "bdd":
            return self.W.view(self.num_types, self.num_bases, self.submat_in, self.submat_out), None, True
        return self.W, None, False

    def forward(self, x: torch.Tensor, x_type: torch.Tensor, sorted_by_type: bool = False) -> torch.Tensor:
        """Row i of ``x`` times the weight of type ``x_type[i]`` (a plain torch op: rows are not
        a graph; inside RelGraphConv the same weights run fused in the generated kernels)."""
        weight, coeff, blocks = self.relation_weight()
        if blocks:
            w = weight.index_select(0, x_type)  # [N, B, in/B, out/B]
            return torch.einsum("nbi,nbio->nbo", x.view(x.shape[0], self.num_bases, self.submat_in), w).reshape(
                x.shape[0], self.out_size)
        if coeff is not None:
            weight = (coeff @ weight.view(self.num_bases, -1)).view(self.num_types, self.in_size, self.out_size)
        return torch.bmm(x.unsqueeze(1), weight.index_select(0, x_type)).squeeze(1)


class RelGraphConv(PigeonLayer):
    """DGL's ``RelGraphConv``: ``h_v = act(norm(sum_{(u, r) -> v} e_uv W_r h_u) + bias + W_0 h_v)``
    then dropout, called as ``conv(g, feat, etypes, norm=None, presorted=False)``."""

    def __init__(self, in_feat: int, out_feat: int, num_rels: int, regularizer: str | None = None,
                 num_bases: int | None = None, bias: bool = True, activation: Callable | None = None,
                 self_loop: bool = True, dropout: float = 0.0, layer_norm: bool = False):
        super().__init__()
        if regularizer is not None and num_bases is None:
            num_bases = num_rels
        self.linear_r = TypedLinear(in_feat, out_feat, num_rels, regularizer, num_bases)
        self.num_rels = num_rels
        self.bias, self.activation, self.self_loop, self.layer_norm = bias, activation, self_loop, layer_norm
        if self.bias:
            self.h_bias = nn.Parameter(torch.zeros(out_feat))
        if self.layer_norm:
            self.layer_norm_weight = nn.LayerNorm(out_feat, elementwise_affine=True)
        if self.self_loop:
            self.loop_weight = nn.Parameter(torch.empty(in_feat, out_feat))
            nn.init.xavier_uniform_(self.loop_weight, gain=nn.init.calculate_gain("relu"))
        self.dropout = nn.Dropout(dropout)
        self._graphs = LastGraph()
        self._orders: dict[tuple, str] = {}

    def forward(self, g: Any, feat: torch.Tensor, etypes: Any, norm: torch.Tensor | None = None, *,
                presorted: bool = False) -> torch.Tensor:
        graph = _graph(self._graphs, g, etypes, self.num_rels)
        weight, coeff, blocks = self.linear_r.relation_weight()
        if norm is not None:
            norm = norm.reshape(graph.num_edges, 1)
        # with layer norm, DGL normalises the sum alone: bias and self-loop come after it
        fused = not self.layer_norm
        kwargs = {"loop_weight": self.loop_weight if self.self_loop and fused else None,
                  "bias": self.h_bias if self.bias and fused else None, "edge_weight": norm, "aggr": "sum"}
        order = None
        if coeff is not None:
            key = (graph.num_edges, graph.num_nodes, feat.dtype)
            if key not in self._orders:
                self._orders[key] = bases_order(graph, feat, weight, coeff, **kwargs)
            order = self._orders[key]
        h = relational_sum(graph, feat, weight, coeff, blocks=blocks, order=order, **kwargs)
        if self.layer_norm:
            h = self.layer_norm_weight(h)
            if self.bias:
                h = h + self.h_bias
            if self.self_loop:
                h = h + feat[: graph.num_dst_nodes] @ self.loop_weight
        if self.activation:
            h = self.activation(h)
        return self.dropout(h)


class HGTConv(PigeonLayer):
    """DGL's ``HGTConv``: ``linear_k``, ``linear_q``, ``linear_v``, ``linear_a`` (TypedLinear per
    node type), ``relation_pri``, ``relation_att``, ``relation_msg`` (per head), ``skip``,
    ``residual_w`` (when in_size != heads x head_size) and ``norm`` (``use_norm``), called as
    ``conv(g, x, ntype, etype, presorted=False)``; dropout after ``linear_a``, as DGL's."""

    def __init__(self, in_size: int, head_size: int, num_heads: int, num_ntypes: int, num_etypes: int,
                 dropout: float = 0.2, use_norm: bool = False):
        super().__init__()
        self.in_size, self.head_size, self.num_heads = in_size, head_size, num_heads
        self.num_ntypes, self.num_etypes, self.use_norm = num_ntypes, num_etypes, use_norm
        width = head_size * num_heads
        self.linear_k = TypedLinear(in_size, width, num_ntypes)
        self.linear_q = TypedLinear(in_size, width, num_ntypes)
        self.linear_v = TypedLinear(in_size, width, num_ntypes)
        self.linear_a = TypedLinear(width, width, num_ntypes)
        self.relation_pri = nn.ParameterList([nn.Parameter(torch.ones(num_etypes)) for _ in range(num_heads)])
        self.relation_att = nn.ModuleList(TypedLinear(head_size, head_size, num_etypes) for _ in range(num_heads))
        self.relation_msg = nn.ModuleList(TypedLinear(head_size, head_size, num_etypes) for _ in range(num_heads))
        self.skip = nn.Parameter(torch.ones(num_ntypes))
        self.drop = nn.Dropout(dropout)
        if use_norm:
            self.norm = nn.LayerNorm(width)
        if in_size != width:
            self.residual_w = nn.Parameter(torch.empty(in_size, width))
            nn.init.xavier_uniform_(self.residual_w)
        self._graphs = LastGraph()

    def forward(self, g: Any, x: torch.Tensor, ntype: torch.Tensor, etype: torch.Tensor, *,
                presorted: bool = False) -> torch.Tensor:
        from pigeon.examples.hgt import hgt

        src, dst = g.edges()
        ntype, etype = torch.as_tensor(ntype), torch.as_tensor(etype)
        graph = self._graphs.get((src, dst, etype, ntype), (g.num_src_nodes(), g.num_dst_nodes()), lambda: Graph.from_edges(
            src, dst, etype, g.num_src_nodes(), ntype, num_dst_nodes=g.num_dst_nodes(), num_etypes=self.num_etypes,
            num_ntypes=self.num_ntypes))
        relation_att = torch.stack([m.W for m in self.relation_att], 1)  # [R, H, d, d]: one matrix per head
        relation_msg = torch.stack([m.W for m in self.relation_msg], 1)
        relation_pri = torch.stack(list(self.relation_pri), 1)  # [R, H]
        h = self._run(hgt, graph, x, self.linear_k.W, self.linear_q.W, self.linear_v.W, relation_att, relation_msg,
                      relation_pri, self.linear_a.W, self.skip, getattr(self, "residual_w", None),
                      p=float(self.drop.p), training=self.training)
        return self.norm(h) if self.use_norm else h


# ---------------------------------------------------------------------------------------------
# HeteroGraphConv over GraphConv, SAGEConv and GATConv
#
# DGL runs each relation's module on its relation graph and stacks the per-relation results of
# every destination type. Here one pigeon.Graph holds them all: the destination nodes of every
# type first (consecutive per type), then the source nodes of every type, features zero-padded
# to the widest and each relation's parameters stacked (zero-padded) into per-edge-type tensors.
# Each relation's value is then one affine form whatever its module,
#     pre_r(v) = Wn_r . sum_e (c_u(e) x_u + c_v(e) x_v) + Ws_r . x_v + b_r + GAT_r(v),
# with the coefficients c per module kind. A destination without edges of r gets the module's
# no-edge value base_r(v) = act_r(Wb_r . x_v + b_r), which the program adds for the relations it
# does not visit (n.relations() holds only the pairs with edges).

_ACTIVATIONS = {
    torch.relu: "relu", nn.functional.relu: "relu", torch.tanh: "tanh", nn.functional.tanh: "tanh",
    torch.sigmoid: "sigmoid", nn.functional.sigmoid: "sigmoid", nn.functional.elu: "elu",
    nn.functional.gelu: "gelu", nn.functional.leaky_relu: "leaky_relu:0.01",
}


def _activation_name(fn: Callable | None) -> str | None:
    """The DSL name of a module's activation (None: none); NotImplementedError for others."""
    if fn is None:
        return None
    if fn in _ACTIVATIONS:
        return _ACTIVATIONS[fn]
    simple = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
    if type(fn) in simple:
        return simple[type(fn)]
    if isinstance(fn, nn.ELU) and fn.alpha == 1.0:
        return "elu"
    if isinstance(fn, nn.GELU) and fn.approximate == "none":
        return "gelu"
    if isinstance(fn, nn.LeakyReLU):
        return f"leaky_relu:{float(fn.negative_slope)!r}"
    raise NotImplementedError(
        f"activation {fn!r} is not supported by pigeon's HeteroGraphConv: use None, relu, tanh, sigmoid, "
        f"elu (alpha 1), gelu (exact) or leaky_relu (torch functions or nn modules)")


def _activate(name: str | None, x: Any) -> Any:
    """``x`` through the DSL activation ``name`` (while tracing)."""
    from pigeon.lang import elu, gelu, leaky_relu, relu, sigmoid, tanh
    if name is None:
        return x
    if name.startswith("leaky_relu:"):
        return leaky_relu(x, float(name.split(":", 1)[1]))
    return {"relu": relu, "tanh": tanh, "sigmoid": sigmoid, "elu": elu, "gelu": gelu}[name](x)


def _mixed(names: tuple, masks: list, index: Any, x: Any) -> Any:
    """act_r(x) where the activation differs per edge type: the sum over the distinct activations
    ``names`` of mask[r] * act(x) (``index`` picks a mask's row; while tracing)."""
    if len(names) == 1:
        return _activate(names[0], x)
    return builtins_sum(index(masks[i]) * _activate(name, x) for i, name in enumerate(names))


def _power(degree: Any, exponent: float) -> Any:
    """``degree ** exponent`` for a constant exponent (while tracing); None for a factor of 1."""
    if exponent == 0.0:
        return None
    if exponent == 1.0:
        return degree
    return 1.0 / degree if exponent == -1.0 else degree ** exponent


def builtins_sum(items: Any) -> Any:
    """Python's sum over a few traced values (a trace-time unrolling, not a graph aggregation)."""
    items = list(items)
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


def _hetero_body(g, x, p, *, acts, aggregate, num_slots, use_sum,
                 use_gcn, use_gat, use_pool, use_edge_weight, use_attention_mask, heads, size, slope, pad, folded,
                 unfolded, base_acts,
                 constant, constant_bases, typed_bases, base_is_own, exponents):
    """The program of ``hetero_program`` (see there)."""
    from pigeon.lang import concat, dot, leaky_relu, linear, max, maximum, minimum, relu, softmax, sum, where
    for e in g.edges():
        if use_pool:  # SAGE's "pool": relu(fc_pool(x_u)), then a maximum over the relation's edges
            pooled = relu(linear(x[e.src], p["Wp"][e.etype]) + p["bp"][e.etype])
            e.pool = pooled * p["edge_weight"][e] if use_edge_weight else pooled
        if use_sum:
            if exponents is None:  # they differ per relation
                coeff = (e.src_etype_degree ** p["p_src"][e.etype]
                         * (e.dst_etype_degree + p["gcn"][e.etype]) ** p["p_dst"][e.etype])
            else:  # the same for every relation: trace constants, a factor of 1 left out
                p_src, p_dst, shift = exponents
                dst_degree = e.dst_etype_degree + shift if shift else e.dst_etype_degree
                factors = [f for f in (_power(e.src_etype_degree, p_src), _power(dst_degree, p_dst)) if f is not None]
                coeff = factors[0] * factors[1] if len(factors) == 2 else (factors[0] if factors else None)
            if use_edge_weight:
                coeff = p["edge_weight"][e] if coeff is None else coeff * p["edge_weight"][e]
            msg = x[e.src] if coeff is None else x[e.src] * coeff
            if use_gcn:  # SAGE's "gcn" adds x_v / (deg + 1) once: 1 / (deg (deg + 1)) on each edge
                msg = msg + x[e.dst] * (p["gcn"][e.etype] / (e.dst_etype_degree * (e.dst_etype_degree + 1.0)))
            e.msg = msg
        if use_gat:
            z_src = linear(x[e.src], p["w_src"][e.etype]).reshape(heads, size)
            z_dst = linear(x[e.dst], p["w_dst"][e.etype]).reshape(heads, size)
            score = dot(z_src, p["attn_l"][e.etype]) + dot(z_dst, p["attn_r"][e.etype])
            if slope is not None:
                e.score = leaky_relu(score, slope)
            else:  # negative slopes differing per relation
                e.score = maximum(score, 0.0) + p["slope"][e.etype] * minimum(score, 0.0)
            z = z_src * p["edge_weight"][e].reshape(1, 1) if use_edge_weight else z_src
            e.z = z * p["attention_mask"][e].reshape(heads, 1) if use_attention_mask else z

    def act_r(r, value):
        return _mixed(acts, [p[f"act{i}"] for i in range(len(acts))], lambda m: m[r.etype], value)

    for r in g.dst_relations():
        pre = own = linear(x[r.dst], p["Ws"][r.etype]) + p["b"][r.etype]
        if use_sum:
            pre = pre + linear(sum(e.msg for e in r.incoming_edges()), p["Wn"][r.etype])
        if use_pool:
            pre = pre + linear(max(e.pool for e in r.incoming_edges()), p["Wq"][r.etype])
        if use_gat:
            att = sum(softmax(e.score) * e.z for e in r.incoming_edges()).reshape(heads * size)
            pre = pre + (concat(att, p["zpad"]) if pad else att)
        r.f = act_r(r, pre)
        if aggregate in ("sum", "mean"):
            r.base = act_r(r, own if base_is_own else linear(x[r.dst], p["Wb"][r.etype]) + p["b"][r.etype])

    def base(k, n):  # relation k's no-edge value at n (0 unless n's type is k's destination type)
        key = str(k)
        if k in constant_bases:
            return p["into" + key][n.ntype] * p["bc" + key]
        return p["into" + key][n.ntype] * _activate(base_acts[k], linear(x[n], p["bw" + key]) + p["bb" + key])

    for n in g.dst_nodes():
        if aggregate in ("sum", "mean"):
            out = sum(r.f - r.base for r in n.relations())
            if folded:
                out = out + linear(x[n], p["WB"][n.ntype])
            if constant:
                out = out + p["cB"][n.ntype]
            for j in range(typed_bases):
                value = linear(x[n], p[f"TW{j}"][n.ntype]) + p[f"Tb{j}"][n.ntype]
                masks = [p[f"Tact{j}_{i}"] for i in range(len(acts))]
                out = out + p[f"Tuse{j}"][n.ntype] * _mixed(acts, masks, lambda m: m[n.ntype], value)
            n.out = out * p["inv_count"][n.ntype] if aggregate == "mean" else out
        else:
            values = []
            for j in range(num_slots):
                here = sum(where(p["slot"][r.etype] == float(j), 1.0, 0.0) for r in n.relations())
                value = sum(where(p["slot"][r.etype] == float(j), r.f, 0.0) for r in n.relations())
                absent = builtins_sum(base(k, n) for k in unfolded[j])
                values.append(value + (1.0 - here) * absent)
            if aggregate == "stack":
                n.out = concat(*values) if num_slots > 1 else values[0]
            else:
                pick = maximum if aggregate == "max" else minimum
                out = values[0]
                for j in range(1, num_slots):
                    out = where(p[f"has{j}"][n.ntype] > 0.0, pick(out, values[j]), out)
                n.out = out
    return n.out


@pigeon.compile
def hetero_program(g, x, p, acts=(None,), aggregate="sum", num_slots=1,
                   use_sum=True, use_gcn=False, use_gat=False, use_pool=False, use_edge_weight=False,
                   use_attention_mask=False, heads=1, size=1,
                   slope=None, pad=False, folded=False, unfolded=(), base_acts=(), constant=False, constant_bases=(),
                   typed_bases=0, base_is_own=False, exponents=None):
    """DGL's ``HeteroGraphConv`` over GraphConv / SAGEConv / GATConv relations on one graph: ``x``
    [N, in] (destinations first), ``p`` the stacked per-edge-type parameters (``Wn``, ``Ws``,
    ``Wb`` [R, in, out], ``b`` [R, out], ``p_src``, ``p_dst``, ``gcn`` [R]: the message
    coefficient deg_src^p_src (deg_dst + gcn)^p_dst; SAGE pool's ``Wp`` [R, in, in], ``bp``
    [R, in], ``Wq`` [R, in, out] (relu(x_u Wp + bp), maximised over the edges, times Wq); GAT's
    ``w_src``, ``w_dst`` [R, in, H D], ``attn_l``, ``attn_r`` [R, H, D] and, with attention
    dropout, ``attention_mask`` [E, H]; per node type ``WB`` [T, in, out], ``cB`` [T, out] (the
    summed no-edge values that fold), ``inv_count`` [T]; ``slot`` [R] (a relation's position
    among its destination type's), ``has{j}`` [T] (whether a type has slot j), ``act{i}`` [R] (1
    where the edge type's activation is ``acts[i]``); for max/min/stack, ``unfolded`` holds one
    tuple of edge types per slot, whose no-edge values are ``bc{k}`` [out] (``constant_bases``)
    or ``bw{k}`` [in, out], ``bb{k}`` [out], with ``into{k}`` [T], one-hot of their destination
    type; for sum/mean the no-edge values that do not fold are ``typed_bases`` rounds of
    ``TW{j}`` [T, in, out], ``Tb{j}`` [T, out], ``Tuse{j}`` [T] and ``Tact{j}_{i}`` [T], round j holding the j-th such relation of every node type;
    ``base_is_own``: every ``Wb`` is its ``Ws`` (a no-edge value is the destination's own term,
    computed once); ``exponents``: (p_src, p_dst, gcn) where every relation has the same (else
    None: the tensors)."""
    return _hetero_body(g, x, p, acts=acts, aggregate=aggregate,
                        num_slots=num_slots, use_sum=use_sum, use_gcn=use_gcn, use_gat=use_gat, use_pool=use_pool,
                        use_edge_weight=use_edge_weight,
                        use_attention_mask=use_attention_mask, heads=heads, size=size, slope=slope, pad=pad,
                        folded=folded, unfolded=unfolded, base_acts=base_acts, constant=constant,
                        constant_bases=constant_bases, typed_bases=typed_bases,
                        base_is_own=base_is_own, exponents=exponents)


_STANDALONE = ("pigeon.nn.dgl.{name} runs inside pigeon.nn.dgl.HeteroGraphConv; called alone it runs as a "
               "HeteroGraphConv of one relation")


class _RelationModule(nn.Module):
    """What the per-relation modules share: DGL's ``set_allow_zero_in_degree`` and a standalone
    call on a graph of one edge type, run as a HeteroGraphConv of that one relation."""

    _allow_zero_in_degree = True
    _checks_zero_in_degree = False

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        self._allow_zero_in_degree = set_value

    def _standalone(self, graph: Any, feat: Any, edge_weight: torch.Tensor | None) -> torch.Tensor:
        if len(graph.canonical_etypes) != 1:
            raise GraphError(f"{type(self).__name__} called alone needs a graph of one edge type, got "
                             f"{graph.canonical_etypes}; use pigeon.nn.dgl.HeteroGraphConv for several")
        stype, etype, dtype = graph.canonical_etypes[0]
        if self._checks_zero_in_degree and not self._allow_zero_in_degree and bool((graph.in_degrees() == 0).any()):
            raise GraphError("There are 0-in-degree nodes in the graph, output for those nodes will be invalid "
                             "(as DGL: add self loops, or set allow_zero_in_degree=True)")
        if isinstance(feat, tuple):
            inputs = ({stype: feat[0]}, {dtype: feat[1]})
        else:
            inputs = {stype: feat}
        kwargs = {etype: {"edge_weight": edge_weight}} if edge_weight is not None else None
        return _hetero_forward({(stype, etype, dtype): self}, "sum", graph, inputs, kwargs)[dtype]


class GraphConv(_RelationModule):
    """DGL's ``GraphConv`` (``weight`` [in, out], ``bias`` [out]) as a HeteroGraphConv relation:
    ``act(D_dst^-1/2 A D_src^-1/2 X W + b)`` for norm "both" ("left", "right", "none" as DGL's),
    degrees of the relation clamped to 1, ``edge_weight`` multiplying each message."""

    _checks_zero_in_degree = True

    def __init__(self, in_feats: int, out_feats: int, norm: str = "both", weight: bool = True, bias: bool = True,
                 activation: Callable | None = None, allow_zero_in_degree: bool = False):
        super().__init__()
        if norm not in ("none", "both", "right", "left"):
            raise ValueError(f'Invalid norm value. Must be either "none", "both", "right" or "left". But got "{norm}".')
        self._in_feats, self._out_feats, self._norm = in_feats, out_feats, norm
        self._allow_zero_in_degree = allow_zero_in_degree
        self.weight = nn.Parameter(torch.empty(in_feats, out_feats)) if weight else None
        self.bias = nn.Parameter(torch.empty(out_feats)) if bias else None
        self._activation = activation
        _activation_name(activation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, graph: Any, feat: Any, weight: torch.Tensor | None = None,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is not None:
            raise NotImplementedError("pigeon's GraphConv takes no external weight: create it with weight=True")
        return self._standalone(graph, feat, edge_weight)


class SAGEConv(_RelationModule):
    """DGL's ``SAGEConv`` (``fc_neigh``, ``fc_self`` or ``bias`` for "gcn", ``fc_pool`` for
    "pool") as a HeteroGraphConv relation, with aggregator_type "mean", "gcn" or "pool" ("lstm",
    a recurrent net over each destination's edges in DGL's order, is refused); ``feat_drop``
    drops the relation's source and destination features with masks of their own, as DGL's."""

    def __init__(self, in_feats: int | tuple[int, int], out_feats: int, aggregator_type: str, feat_drop: float = 0.0,
                 bias: bool = True, norm: Callable | None = None, activation: Callable | None = None):
        super().__init__()
        if aggregator_type not in {"mean", "gcn", "pool", "lstm"}:
            raise ValueError(f"Invalid aggregator_type. Must be one of {{'mean', 'gcn', 'pool', 'lstm'}}. "
                             f"But got {aggregator_type!r} instead.")
        if aggregator_type == "lstm":
            raise NotImplementedError("pigeon's SAGEConv supports aggregator_type 'mean', 'gcn' and 'pool', not "
                                      "'lstm' (a recurrent net over the edges in DGL's order): use dgl.nn.SAGEConv "
                                      "for it")
        if norm is not None:
            raise NotImplementedError("pigeon's SAGEConv takes no norm: apply it to HeteroGraphConv's outputs "
                                      "only where that is the same (it is not, under sum/mean/max/min)")
        self._in_src_feats, self._in_dst_feats = in_feats if isinstance(in_feats, tuple) else (in_feats, in_feats)
        self._out_feats, self._aggre_type, self.norm = out_feats, aggregator_type, None
        self.feat_drop = nn.Dropout(feat_drop)
        self.activation = activation
        _activation_name(activation)
        if aggregator_type == "pool":
            self.fc_pool = nn.Linear(self._in_src_feats, self._in_src_feats)
        self.fc_neigh = nn.Linear(self._in_src_feats, out_feats, bias=False)
        if aggregator_type != "gcn":
            self.fc_self = nn.Linear(self._in_dst_feats, out_feats, bias=bias)
        elif bias:
            self.bias = nn.Parameter(torch.zeros(out_feats))
        else:
            self.register_buffer("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        if self._aggre_type == "pool":
            nn.init.xavier_uniform_(self.fc_pool.weight, gain=gain)
        if self._aggre_type != "gcn":
            nn.init.xavier_uniform_(self.fc_self.weight, gain=gain)
        nn.init.xavier_uniform_(self.fc_neigh.weight, gain=gain)

    def forward(self, graph: Any, feat: Any, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        return self._standalone(graph, feat, edge_weight)


class GATConv(_RelationModule):
    """DGL's ``GATConv`` (``fc`` or ``fc_src``/``fc_dst``, ``attn_l``, ``attn_r``, ``bias``,
    ``res_fc``) as a HeteroGraphConv relation: attention softmax over each destination's edges of
    the relation, output [N, heads, out]; ``feat_drop`` and ``attn_drop`` draw the relation's own
    masks, as DGL's (a seeded run gives DGL's numbers)."""

    _checks_zero_in_degree = True

    def __init__(self, in_feats: int | tuple[int, int], out_feats: int, num_heads: int, feat_drop: float = 0.0,
                 attn_drop: float = 0.0, negative_slope: float = 0.2, residual: bool = False,
                 activation: Callable | None = None, allow_zero_in_degree: bool = False, bias: bool = True):
        super().__init__()
        self._num_heads, self._out_feats = num_heads, out_feats
        self._in_src_feats, self._in_dst_feats = in_feats if isinstance(in_feats, tuple) else (in_feats, in_feats)
        self._allow_zero_in_degree = allow_zero_in_degree
        width = out_feats * num_heads
        if isinstance(in_feats, tuple):
            self.fc_src = nn.Linear(self._in_src_feats, width, bias=False)
            self.fc_dst = nn.Linear(self._in_dst_feats, width, bias=False)
        else:
            self.fc = nn.Linear(self._in_src_feats, width, bias=False)
        self.attn_l = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.attn_r = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.feat_drop, self.attn_drop = nn.Dropout(feat_drop), nn.Dropout(attn_drop)
        self.leaky_relu = nn.LeakyReLU(negative_slope)
        self.has_linear_res = self.has_explicit_bias = False
        if residual:
            if self._in_dst_feats != width:
                self.res_fc = nn.Linear(self._in_dst_feats, width, bias=bias)
                self.has_linear_res = True
            else:
                self.res_fc = nn.Identity()
        else:
            self.register_buffer("res_fc", None)
        if bias and not self.has_linear_res:
            self.bias = nn.Parameter(torch.empty(width))
            self.has_explicit_bias = True
        else:
            self.register_buffer("bias", None)
        self.activation = activation
        _activation_name(activation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        for fc in (getattr(self, "fc", None), getattr(self, "fc_src", None), getattr(self, "fc_dst", None)):
            if fc is not None:
                nn.init.xavier_normal_(fc.weight, gain=gain)
        nn.init.xavier_normal_(self.attn_l, gain=gain)
        nn.init.xavier_normal_(self.attn_r, gain=gain)
        if self.has_explicit_bias:
            nn.init.constant_(self.bias, 0)
        if isinstance(self.res_fc, nn.Linear):
            nn.init.xavier_normal_(self.res_fc.weight, gain=gain)
            if self.res_fc.bias is not None:
                nn.init.constant_(self.res_fc.bias, 0)

    def forward(self, graph: Any, feat: Any, edge_weight: torch.Tensor | None = None,
                get_attention: bool = False) -> torch.Tensor:
        if get_attention:
            raise NotImplementedError("pigeon's GATConv does not return the attention (get_attention=True)")
        return self._standalone(graph, feat, edge_weight)


_AGGREGATES = ("sum", "max", "min", "mean", "stack")


class HeteroGraphConv(PigeonLayer):
    """DGL's ``HeteroGraphConv`` over pigeon's ``GraphConv``, ``SAGEConv`` and ``GATConv``
    (``mods`` keyed by edge type or canonical edge type, ``aggregate`` one of "sum", "max", "min",
    "mean", "stack"), called as ``conv(g, inputs, mod_args=None, mod_kwargs=None)`` on a DGL
    heterograph or block with ``inputs`` a dict per node type or a (src, dst) pair of them. As in
    DGL 2.1, every canonical edge type whose source features are given takes part, edges or not:
    a destination without edges of a relation gets its module's no-edge value. ``mod_kwargs`` may
    give ``edge_weight`` per edge type; ``state_dict`` keys are DGL's (``mods.<etype>.<name>``)."""

    def __init__(self, mods: dict, aggregate: str | Callable = "sum"):
        super().__init__()
        self.mod_dict = mods
        for key, mod in mods.items():
            if not isinstance(mod, _RelationModule):
                raise TypeError(f"mods[{key!r}] is a {type(mod).__name__}: pigeon's HeteroGraphConv runs "
                                f"pigeon.nn.dgl.GraphConv, SAGEConv and GATConv modules")
        self.mods = nn.ModuleDict({str(k): v for k, v in mods.items()})
        for mod in self.mods.values():
            mod.set_allow_zero_in_degree(True)
        if callable(aggregate) and not isinstance(aggregate, str):
            raise NotImplementedError("pigeon's HeteroGraphConv takes aggregate 'sum', 'max', 'min', 'mean' or "
                                      "'stack', not a callable")
        if aggregate not in _AGGREGATES:
            raise ValueError(f'Invalid cross type aggregator. Must be one of "sum", "max", "min", "mean" or "stack". '
                             f'But got "{aggregate}"')
        self.aggregate = aggregate
        self._graphs, self._copies = LastGraph(), LastGraph()

    def _get_module(self, etype: Any) -> _RelationModule:
        mod = self.mod_dict.get(etype, None)
        if mod is not None:
            return mod
        if isinstance(etype, tuple):
            return self.mod_dict[etype[1]]
        raise KeyError(f"Cannot find module with edge type {etype}")

    def forward(self, g: Any, inputs: Any, mod_args: dict | None = None,
                mod_kwargs: dict | None = None) -> dict[str, torch.Tensor]:
        if mod_args and any(len(args) for args in mod_args.values()):
            raise NotImplementedError("pigeon's HeteroGraphConv takes no mod_args: pass edge_weight in mod_kwargs")
        mods = {c: self._get_module(c) for c in g.canonical_etypes}
        out = _hetero_forward(mods, self.aggregate, g, inputs, mod_kwargs, self._graphs, self._copies)
        self.last_executable = hetero_program.last_executable if out else None
        return out


def _relations(mods: dict, g: Any, inputs: Any) -> tuple[list, dict, dict]:
    """(the canonical edge types that run, source features, destination features), as DGL
    chooses them: a relation runs where its source (and destination) features are given."""
    if isinstance(inputs, tuple) or g.is_block:
        if isinstance(inputs, tuple):
            src_inputs, dst_inputs = inputs
        else:
            src_inputs = inputs
            dst_inputs = {k: v[: g.number_of_dst_nodes(k)] for k, v in inputs.items()}
        active = [c for c in g.canonical_etypes if c in mods and c[0] in src_inputs and c[2] in dst_inputs]
    else:
        src_inputs = dst_inputs = inputs
        active = [c for c in g.canonical_etypes if c in mods and c[0] in inputs]
        for c in active:
            if c[2] not in inputs:
                raise KeyError(f"edge type {c} needs the features of its destination type {c[2]!r} in inputs")
    return active, src_inputs, dst_inputs


def _out_shape(mod: _RelationModule) -> tuple[int, ...]:
    if isinstance(mod, GATConv):
        return (mod._num_heads, mod._out_feats)
    if isinstance(mod, GraphConv):
        return (mod._out_feats if mod.weight is not None else mod._in_feats,)
    return (mod._out_feats,)


def _draws_masks(mod: _RelationModule) -> bool:
    """Whether ``mod`` drops features or attention weights in this call (training, p > 0)."""
    drops = [getattr(mod, "feat_drop", None), getattr(mod, "attn_drop", None)]
    return mod.training and any(d is not None and d.p > 0 for d in drops)


class _RelationCopies:
    """A DGL graph seen with every relation of ``active`` on its own copy of its source and
    destination nodes (node types ``src{k}`` and ``dst{k}``): DGL's modules drop each relation's
    inputs with their own masks, so in training the nodes of one type differ per relation."""

    is_block = False

    def __init__(self, g: Any, active: list) -> None:
        self._g = g
        self.canonical_etypes = [(f"src{k}", c[1], f"dst{k}") for k, c in enumerate(active)]
        self._of = dict(zip(self.canonical_etypes, active))
        self.srctypes = [c[0] for c in self.canonical_etypes]
        self.dsttypes = [c[2] for c in self.canonical_etypes]
        self._src_type = {copy[0]: c[0] for copy, c in self._of.items()}
        self._dst_type = {copy[2]: c[2] for copy, c in self._of.items()}

    def num_src_nodes(self, t: str) -> int:
        return self._g.num_src_nodes(self._src_type[t])

    def num_dst_nodes(self, t: str) -> int:
        return self._g.num_dst_nodes(self._dst_type[t])

    def edges(self, etype: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        return self._g.edges(etype=self._of[etype])

    def num_edges(self, etype: tuple) -> int:
        return self._g.num_edges(self._of[etype])


def _across_relations(aggregate: str, values: list[torch.Tensor]) -> torch.Tensor:
    """DGL's cross-relation aggregate of one destination type's per-relation outputs."""
    if aggregate == "stack":
        return torch.stack(values, dim=1)
    stacked = torch.stack(values, dim=0)
    if aggregate in ("max", "min"):
        return (torch.max if aggregate == "max" else torch.min)(stacked, dim=0)[0]
    return stacked.sum(0) if aggregate == "sum" else stacked.mean(0)


def _relation_parameters(mod: _RelationModule, fin: int, fout: int, like: torch.Tensor) -> dict[str, Any]:
    """One relation's module as the affine form of ``hetero_program``: its ``Wn``, ``Ws``, ``Wb``
    [fin, fout], ``b`` [fout], message exponents, GAT weights, and whether its no-edge value is a
    constant (no weight on x_v)."""
    def pad(w: torch.Tensor) -> torch.Tensor:
        w = w.to(like.dtype)
        return nn.functional.pad(w, (0, fout - w.shape[1], 0, fin - w.shape[0]))

    zero_w, zero_b = like.new_zeros(fin, fout), like.new_zeros(fout)
    out = {"Wn": zero_w, "Ws": zero_w, "b": zero_b, "p_src": 0.0, "p_dst": 0.0, "gcn": 0.0, "gat": None,
           "pool": None, "constant": False}
    if isinstance(mod, GraphConv):
        weight = mod.weight if mod.weight is not None else torch.eye(mod._in_feats, dtype=like.dtype)
        out.update(Wn=pad(weight), constant=True, act=mod._activation,
                   p_src={"both": -0.5, "left": -1.0}.get(mod._norm, 0.0),
                   p_dst={"both": -0.5, "right": -1.0}.get(mod._norm, 0.0))
        if mod.bias is not None:
            out["b"] = nn.functional.pad(mod.bias, (0, fout - mod.bias.shape[0]))
        out["Wb"] = zero_w
    elif isinstance(mod, SAGEConv):
        out.update(Wn=pad(mod.fc_neigh.weight.t()), p_dst=-1.0, act=mod.activation)
        if mod._aggre_type == "pool":  # its neighbours go through fc_pool and a maximum, not the mean
            square = nn.functional.pad(mod.fc_pool.weight.t().to(like.dtype), (0, fin - mod._in_src_feats,
                                                                             0, fin - mod._in_src_feats))
            out["pool"] = (square, nn.functional.pad(mod.fc_pool.bias, (0, fin - mod._in_src_feats)), out["Wn"])
            out["Wn"] = zero_w
        if mod._aggre_type == "gcn":
            if mod._in_src_feats != mod._in_dst_feats:
                raise ValueError("SAGEConv 'gcn' needs the same source and destination feature sizes")
            out.update(gcn=1.0, Wb=out["Wn"])  # no edges: fc_neigh(x_v / 1)
            bias = mod.bias
        else:
            out.update(Ws=pad(mod.fc_self.weight.t()))
            out["Wb"] = out["Ws"]
            bias = mod.fc_self.bias
        if bias is not None:
            out["b"] = nn.functional.pad(bias, (0, fout - bias.shape[0]))
    else:
        width = mod._num_heads * mod._out_feats
        fc_src = mod.fc_src if hasattr(mod, "fc_src") else mod.fc
        fc_dst = mod.fc_dst if hasattr(mod, "fc_dst") else mod.fc
        rows = lambda w: nn.functional.pad(w, (0, 0, 0, fin - w.shape[0]))  # noqa: E731
        out.update(gat=(rows(fc_src.weight.t()), rows(fc_dst.weight.t()), mod.attn_l[0], mod.attn_r[0],
                        float(mod.leaky_relu.negative_slope)), act=mod.activation)
        bias = None
        if isinstance(mod.res_fc, nn.Linear):
            out["Ws"], bias = pad(mod.res_fc.weight.t()), mod.res_fc.bias
        elif mod.res_fc is not None:  # identity
            out["Ws"] = pad(torch.eye(width, dtype=like.dtype))
        else:
            out["constant"] = True
        if mod.has_explicit_bias:
            bias = mod.bias
        if bias is not None:
            out["b"] = nn.functional.pad(bias, (0, fout - width))
        out["Wb"] = out["Ws"]
    out["act_name"] = _activation_name(out["act"])
    return out


def _build_graph(g: Any, active: list, dst_types: list, src_types: list) -> Graph:
    """Destination nodes of every type of ``dst_types`` (in that order), then the source nodes of
    ``src_types``; edge type = position in ``active``."""
    dst_off, src_off, total = {}, {}, 0
    for t in dst_types:
        dst_off[t], total = total, total + g.num_dst_nodes(t)
    num_dst = total
    for t in src_types:
        src_off[t], total = total, total + g.num_src_nodes(t)
    src, dst, etype = [], [], []
    for k, c in enumerate(active):
        u, v = g.edges(etype=c)
        src.append(u.long() + src_off[c[0]])
        dst.append(v.long() + dst_off[c[2]])
        etype.append(torch.full_like(src[-1], k))
    ntype = torch.zeros(total, dtype=torch.long)
    for i, t in enumerate(dst_types):
        ntype[dst_off[t]: dst_off[t] + g.num_dst_nodes(t)] = i
    return Graph.from_edges(torch.cat(src), torch.cat(dst), torch.cat(etype), total, ntype, num_dst_nodes=num_dst,
                            num_etypes=len(active), num_ntypes=len(dst_types))


def _edge_weights(active: list, g: Any, mod_kwargs: dict | None, like: torch.Tensor) -> torch.Tensor | None:
    """Every relation's ``edge_weight`` (1 where none is given) as [E, 1], or None if none is."""
    mod_kwargs = mod_kwargs or {}
    for etype, kwargs in mod_kwargs.items():
        unknown = set(kwargs) - {"edge_weight"}
        if unknown:
            raise NotImplementedError(f"mod_kwargs[{etype!r}] has {sorted(unknown)}: pigeon's HeteroGraphConv "
                                      f"takes edge_weight only")
    if not any(kwargs.get("edge_weight") is not None for kwargs in mod_kwargs.values()):
        return None
    parts = []
    for c in active:
        w = mod_kwargs.get(c[1], {}).get("edge_weight")
        count = g.num_edges(c)
        if w is None:
            parts.append(like.new_ones(count))
            continue
        if w.shape[0] != count or w.numel() != count:
            raise GraphError(f"edge_weight of {c} has shape {list(w.shape)}; expected [{count}], one per edge")
        parts.append(w.reshape(count).to(like.dtype))
    return torch.cat(parts).unsqueeze(-1)


def _hetero_forward(mods: dict, aggregate: str, g: Any, inputs: Any, mod_kwargs: dict | None,
                    cache: LastGraph | None = None, copies_cache: LastGraph | None = None) -> dict[str, torch.Tensor]:
    """HeteroGraphConv's forward for ``mods`` keyed by canonical edge type."""
    active, src_inputs, dst_inputs = _relations(mods, g, inputs)
    if not active:
        return {}
    modules = [mods[c] for c in active]
    dst_types, src_types, shapes = _checked(g, active, modules, src_inputs, dst_inputs)
    if not any(_draws_masks(m) for m in modules):
        return _run(g, active, modules, dst_types, src_types, shapes, aggregate, src_inputs, dst_inputs, mod_kwargs,
                    cache if cache is not None else LastGraph())
    # Dropout in training: DGL draws masks per relation, in the order of its relations: the
    # source features, the destination features, then (GATConv) the attention weights. Drawn
    # the same way from torch's generator here, so a seeded run gives DGL's numbers.
    copies = _RelationCopies(g, active)
    src, dst, masks = {}, {}, []
    heads = next((m._num_heads for m in modules if isinstance(m, GATConv)), 1)
    for k, (c, mod) in enumerate(zip(active, modules)):
        drop = getattr(mod, "feat_drop", None)
        s, d = src_inputs[c[0]], dst_inputs[c[2]]
        src[f"src{k}"], dst[f"dst{k}"] = (drop(s), drop(d)) if drop is not None else (s, d)
        if isinstance(mod, SAGEConv) and mod._aggre_type == "gcn" and c[0] == c[2] and not g.is_block:
            # a relation within one node type has one node frame in DGL: "gcn" writes the dropped
            # destination features into it, and its messages read them
            src[f"src{k}"] = dst[f"dst{k}"]
        ones = s.new_ones(g.num_edges(c), heads, 1)
        masks.append(mod.attn_drop(ones) if isinstance(mod, GATConv) else ones)
    attention_drops = any(isinstance(m, GATConv) and m.training and m.attn_drop.p > 0 for m in modules)
    copy_shapes = {f"dst{k}": shapes[c[2]] for k, c in enumerate(active)}
    out = _run(copies, copies.canonical_etypes, modules, copies.dsttypes, copies.srctypes, copy_shapes, "sum", src,
               dst, mod_kwargs, copies_cache if copies_cache is not None else LastGraph(),
               torch.cat(masks).reshape(-1, heads) if attention_drops else None)
    per_type: dict[str, list[torch.Tensor]] = {}
    for k, c in enumerate(active):
        per_type.setdefault(c[2], []).append(out[f"dst{k}"])
    return {t: _across_relations(aggregate, per_type[t]) for t in dst_types}


def _checked(g: Any, active: list, modules: list, src_inputs: dict,
             dst_inputs: dict) -> tuple[list, list, dict[str, tuple[int, ...]]]:
    """(destination types, source types, output shape per destination type) once the inputs and
    modules are checked."""
    dst_types = [t for t in g.dsttypes if any(c[2] == t for c in active)]
    src_types = [t for t in g.srctypes if any(c[0] == t for c in active)]
    for t in src_types:
        if src_inputs[t].dim() != 2 or src_inputs[t].shape[0] != g.num_src_nodes(t):
            raise ValueError(f"features of {t!r} have shape {list(src_inputs[t].shape)}; expected "
                             f"[{g.num_src_nodes(t)}, in]")
    for t in dst_types:
        if dst_inputs[t].dim() != 2 or dst_inputs[t].shape[0] != g.num_dst_nodes(t):
            raise ValueError(f"destination features of {t!r} have shape {list(dst_inputs[t].shape)}; expected "
                             f"[{g.num_dst_nodes(t)}, in]")
    shapes: dict[str, tuple[int, ...]] = {}
    for c, mod in zip(active, modules):
        if shapes.setdefault(c[2], _out_shape(mod)) != _out_shape(mod):
            raise ValueError(f"the modules into {c[2]!r} give outputs of shapes {shapes[c[2]]} and "
                             f"{_out_shape(mod)}: they must agree to be aggregated")
    gats = {(m._num_heads, m._out_feats) for m in modules if isinstance(m, GATConv)}
    if len(gats) > 1:
        raise NotImplementedError(f"the GATConv modules of one HeteroGraphConv must share num_heads and out_feats, "
                                  f"got {sorted(gats)}")
    return dst_types, src_types, shapes


def _run(g: Any, active: list, modules: list, dst_types: list, src_types: list, shapes: dict, aggregate: str,
         src_inputs: dict, dst_inputs: dict, mod_kwargs: dict | None, cache: LastGraph,
         attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``hetero_program`` on the checked relations ``active`` of ``g``, its output split per
    destination type; ``attention_mask`` [E, heads] multiplies the GAT attention weights."""
    like = src_inputs[src_types[0]]
    feats = [dst_inputs[t] for t in dst_types] + [src_inputs[t] for t in src_types]
    fin = max(f.shape[1] for f in feats)
    fout = max(math.prod(s) for s in shapes.values())
    x = torch.cat([nn.functional.pad(f, (0, fin - f.shape[1])) for f in feats])
    arrays = tuple(a for c in active for a in g.edges(etype=c))
    sizes = (tuple(active), tuple(g.num_dst_nodes(t) for t in dst_types), tuple(g.num_src_nodes(t) for t in src_types))
    graph = cache.get(arrays, sizes, lambda: _build_graph(g, active, dst_types, src_types))
    params, constants = _program_inputs(active, modules, dst_types, aggregate, fin, fout, like)
    edge_weight = _edge_weights(active, g, mod_kwargs, like)
    if edge_weight is not None:
        params["edge_weight"] = edge_weight
    if attention_mask is not None:
        params["attention_mask"] = attention_mask.to(like.dtype)
    out = hetero_program(graph, x, params, aggregate=aggregate, use_edge_weight=edge_weight is not None,
                         use_attention_mask=attention_mask is not None, **constants)
    result = {}
    # one split, not a slice per type: a slice's backward fills a zero tensor of the whole output
    for t, rows in zip(dst_types, torch.split(out, [g.num_dst_nodes(t) for t in dst_types])):
        width, shape = math.prod(shapes[t]), shapes[t]
        if aggregate == "stack":
            count = sum(1 for c in active if c[2] == t)
            result[t] = rows.reshape(rows.shape[0], -1, fout)[:, :count, :width].reshape(rows.shape[0], count, *shape)
        else:
            result[t] = rows[:, :width].reshape(rows.shape[0], *shape)
    return result


def _program_inputs(active: list, modules: list, dst_types: list, aggregate: str, fin: int, fout: int,
                    like: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The stacked parameters (a few per edge or node type: torch) and the trace constants of
    ``hetero_program``."""
    parts = [_relation_parameters(m, fin, fout, like) for m in modules]
    num_types = len(dst_types)
    dst_of = [dst_types.index(c[2]) for c in active]
    vector = lambda values: like.new_tensor(values)  # noqa: E731
    p = {name: torch.stack([part[name] for part in parts]) for name in ("Wn", "Ws", "Wb", "b")}
    uniform = tuple(parts[0][name] for name in ("p_src", "p_dst", "gcn"))
    if all(tuple(part[name] for name in ("p_src", "p_dst", "gcn")) == uniform for part in parts):
        exponents: tuple | None = tuple(float(v) for v in uniform)
        if uniform[2]:
            p["gcn"] = vector([part["gcn"] for part in parts])  # SAGE "gcn"'s own term reads it
    else:
        exponents = None
        for name in ("p_src", "p_dst", "gcn"):
            p[name] = vector([part[name] for part in parts])
    names = [part["act_name"] for part in parts]
    acts = tuple(dict.fromkeys(names))
    for i, name in enumerate(acts):
        p[f"act{i}"] = vector([1.0 if n == name else 0.0 for n in names])
    constants: dict[str, Any] = {"acts": acts, "use_sum": any(not isinstance(m, GATConv) and part["pool"] is None
                                                for m, part in zip(modules, parts)),
                                 "use_gcn": any(part["gcn"] for part in parts), "base_acts": tuple(names),
                                 "exponents": exponents}
    if any(part["pool"] is not None for part in parts):
        zeros = (like.new_zeros(fin, fin), like.new_zeros(fin), like.new_zeros(fin, fout))
        for name, i in (("Wp", 0), ("bp", 1), ("Wq", 2)):
            p[name] = torch.stack([part["pool"][i] if part["pool"] is not None else zeros[i] for part in parts])
        constants["use_pool"] = True
    gat = [part["gat"] for part in parts if part["gat"] is not None]
    if gat:
        heads, size = gat[0][2].shape
        width = heads * size
        zeros = (like.new_zeros(fin, width), like.new_zeros(heads, size))
        for name, i, zero in (("w_src", 0, zeros[0]), ("w_dst", 1, zeros[0]), ("attn_l", 2, zeros[1]),
                              ("attn_r", 3, zeros[1])):
            p[name] = torch.stack([part["gat"][i] if part["gat"] is not None else zero for part in parts])
        slopes = {g_[4] for g_ in gat}
        p["slope"] = vector([part["gat"][4] if part["gat"] is not None else 0.0 for part in parts])
        if width < fout:
            p["zpad"] = like.new_zeros(fout - width)
        constants.update(use_gat=True, heads=heads, size=size, slope=slopes.pop() if len(slopes) == 1 else None,
                         pad=width < fout)

    def one_hot(t: int) -> torch.Tensor:
        return vector([1.0 if i == t else 0.0 for i in range(num_types)])

    def add_base(k: int) -> None:
        part = parts[k]
        p[f"into{k}"] = one_hot(dst_of[k])
        if part["constant"]:
            p[f"bc{k}"] = part["act"](part["b"]) if part["act"] is not None else part["b"]
        else:
            p[f"bw{k}"], p[f"bb{k}"] = part["Wb"], part["b"]

    constant_bases = tuple(k for k, part in enumerate(parts) if part["constant"])
    if aggregate in ("sum", "mean"):
        # no-edge values that fold into per-node-type sums: linear ones, and constants through act
        folded_w = [like.new_zeros(fin, fout) for _ in range(num_types)]
        folded_b = [like.new_zeros(fout) for _ in range(num_types)]
        unfolded = []
        for k, part in enumerate(parts):
            t = dst_of[k]
            if part["act"] is None:
                folded_w[t] = folded_w[t] + part["Wb"]
                folded_b[t] = folded_b[t] + part["b"]
            elif part["constant"]:
                folded_b[t] = folded_b[t] + part["act"](part["b"])
            else:
                unfolded.append(k)
        p["WB"], p["cB"] = torch.stack(folded_w), torch.stack(folded_b)
        p["inv_count"] = vector([1.0 / dst_of.count(t) for t in range(num_types)])
        constants.update(folded=any(part["act"] is None and not part["constant"] for part in parts), constant=True)
        if unfolded:
            # the no-edge values that do not fold: the j-th of each destination type's is one
            # typed linear per node (as many as the most any type has), not one linear per
            # relation at every node
            of_type = [[k for k in unfolded if dst_of[k] == t] for t in range(num_types)]
            rounds = max(len(ks) for ks in of_type)
            for j in range(rounds):
                at = [ks[j] if j < len(ks) else None for ks in of_type]  # each type's relation in round j
                p[f"TW{j}"] = torch.stack([parts[k]["Wb"] if k is not None else like.new_zeros(fin, fout) for k in at])
                p[f"Tb{j}"] = torch.stack([parts[k]["b"] if k is not None else like.new_zeros(fout) for k in at])
                p[f"Tuse{j}"] = vector([1.0 if k is not None else 0.0 for k in at])
                for i, name in enumerate(acts):
                    p[f"Tact{j}_{i}"] = vector([1.0 if k is not None and names[k] == name else 0.0 for k in at])
            constants["typed_bases"] = rounds
    else:
        slot = [dst_of[:k].count(dst_of[k]) for k in range(len(active))]
        num_slots = max(slot) + 1
        p["slot"] = vector([float(s) for s in slot])
        for j in range(num_slots):
            p[f"has{j}"] = vector([1.0 if j < dst_of.count(t) else 0.0 for t in range(num_types)])
        for k in range(len(active)):
            add_base(k)
        constants.update(num_slots=num_slots, unfolded=tuple(tuple(k for k in range(len(active)) if slot[k] == j)
                                                            for j in range(num_slots)))
    constants["constant_bases"] = constant_bases
    if all(part["Wb"] is part["Ws"] for part in parts):  # SAGE mean and pool, GAT, GraphConv
        constants["base_is_own"] = True
        del p["Wb"]
    return p, constants
