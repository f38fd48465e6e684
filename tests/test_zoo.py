"""The layer zoo (examples/zoo): each published layer, written in the DSL, against a plain-torch
formula of its paper in float64, forward and every input's gradient, on every back end that runs
here (the torch reference, the generated C++, the CUDA kernels through the CUDA-on-CPU harness)
and on adversarial graphs."""
import pytest
import torch
import torch.nn.functional as F

from pigeon.examples.zoo import LAYERS
from test_relations import pairs
from test_where import GRAPHS


def scatter_sum(x, index, rows):
    return torch.zeros((rows,) + tuple(x.shape[1:]), dtype=x.dtype).index_add(0, index, x)


def per_relation_count(g):
    """For every edge, how many edges of its relation its destination has (|N_r(v)|)."""
    key = g.dst * g.num_etypes + g.etype
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    return counts[inverse].to(torch.float64).unsqueeze(1)


def edge_softmax(score, dst, rows):
    peak = torch.full((rows,) + tuple(score.shape[1:]), float("-inf"), dtype=score.dtype)
    peak = peak.scatter_reduce(0, dst.view(-1, *([1] * (score.dim() - 1))).expand_as(score), score, "amax")
    w = torch.exp(score - peak[dst])
    return w / scatter_sum(w, dst, rows)[dst]


def rgcn_basis(g, h, bases, coeff, loop_weight):
    num_bases = coeff.shape[1]
    v = bases.reshape(h.shape[1], -1, num_bases).permute(2, 0, 1)  # [B, in, out]
    w = torch.einsum("rb,bio->rio", coeff, v)  # W_r = sum_b a_rb V_b
    msg = torch.bmm(h[g.src].unsqueeze(1), w[g.etype]).squeeze(1) / per_relation_count(g)
    return scatter_sum(msg, g.dst, g.num_dst_nodes) + h[: g.num_dst_nodes] @ loop_weight


def rgcn_bdd(g, h, blocks, loop_weight):
    w = torch.stack([torch.block_diag(*blocks[r]) for r in range(blocks.shape[0])])
    msg = torch.bmm(h[g.src].unsqueeze(1), w[g.etype]).squeeze(1) / per_relation_count(g)
    return scatter_sum(msg, g.dst, g.num_dst_nodes) + h[: g.num_dst_nodes] @ loop_weight


def rgin(g, h, weight, self_weight, eps, w1, b1, w2, b2):
    msg = torch.bmm(h[g.src].unsqueeze(1), weight[g.etype]).squeeze(1)
    total = (1 + eps) * (h[: g.num_dst_nodes] @ self_weight) + scatter_sum(msg, g.dst, g.num_dst_nodes)
    return torch.relu(total @ w1 + b1) @ w2 + b2


def rsage(g, h, self_weight, neigh_weight, bias):
    out = h[: g.num_dst_nodes] @ self_weight + bias
    for r in range(g.num_etypes):  # each relation's own SAGE mean
        mask = g.etype == r
        if mask.any():
            total = scatter_sum(h[g.src[mask]], g.dst[mask], g.num_dst_nodes)
            count = torch.bincount(g.dst[mask], minlength=g.num_dst_nodes).clamp(min=1).unsqueeze(1)
            out = out + (total / count) @ neigh_weight[r]
    return out


def compgcn(g, h, rel, loop_rel, w_original, w_inverse, w_self, num_original, comp="sub"):
    phi = (lambda x, z: x - z) if comp == "sub" else (lambda x, z: x * z)
    c = phi(h[g.src], rel[g.etype])
    msg = torch.where((g.etype < num_original).unsqueeze(1), c @ w_original, c @ w_inverse)
    degree = torch.bincount(g.dst, minlength=g.num_dst_nodes).clamp(min=1).unsqueeze(1)
    own = phi(h[: g.num_dst_nodes], loop_rel) @ w_self
    return torch.tanh(scatter_sum(msg, g.dst, g.num_dst_nodes) / degree + own)


def film(g, h, weight, beta_weight, beta_bias, gamma_weight, gamma_bias, skip_weight, skip_beta, skip_gamma):
    hv = h[: g.num_dst_nodes]
    out = torch.relu((hv @ skip_gamma) * (hv @ skip_weight) + hv @ skip_beta)
    for r in range(g.num_etypes):  # PyG FiLMConv: one mean-aggregated propagate per relation
        mask = g.etype == r
        if not mask.any():
            continue
        src, dst = g.src[mask], g.dst[mask]
        beta = h[dst] @ beta_weight[r] + beta_bias[r]
        gamma = h[dst] @ gamma_weight[r] + gamma_bias[r]
        msg = torch.relu(gamma * (h[src] @ weight[r]) + beta)
        count = torch.bincount(dst, minlength=g.num_dst_nodes).clamp(min=1).unsqueeze(1)
        out = out + scatter_sum(msg, dst, g.num_dst_nodes) / count
    return out


def heat(g, h, edge_attr, node_weight, node_bias, etype_emb, attr_weight, att, msg_weight, msg_bias):
    heads, size = att.shape[1], msg_weight.shape[1]
    x = torch.bmm(h.unsqueeze(1), node_weight[g.ntype]).squeeze(1) + node_bias[g.ntype]
    attr = F.leaky_relu(edge_attr @ attr_weight, 0.2)
    kind = F.leaky_relu(etype_emb[g.etype], 0.2)
    score = F.leaky_relu(torch.cat([x[g.dst], x[g.src], kind, attr], -1) @ att, 0.2)
    alpha = edge_softmax(score, g.dst, g.num_dst_nodes)  # [E, heads]
    msg = torch.cat([x[g.src], attr], -1) @ msg_weight + msg_bias  # [E, size]
    out = scatter_sum(alpha.unsqueeze(-1) * msg.unsqueeze(1), g.dst, g.num_dst_nodes)
    return (out + x[: g.num_dst_nodes].unsqueeze(1)).reshape(-1, heads * size)


def simple_hgn(g, h, weight, rel_emb, rel_weight, a_dst, a_src, a_rel, res_weight):
    heads, size = a_dst.shape
    z = (h @ weight).reshape(-1, heads, size)
    r = (rel_emb @ rel_weight).reshape(-1, heads, a_rel.shape[1])[g.etype]
    score = F.leaky_relu((z[g.dst] * a_dst).sum(-1) + (z[g.src] * a_src).sum(-1) + (r * a_rel).sum(-1), 0.05)
    alpha = edge_softmax(score, g.dst, g.num_dst_nodes)
    agg = scatter_sum(alpha.unsqueeze(-1) * z[g.src], g.dst, g.num_dst_nodes)
    return F.elu(agg.reshape(-1, heads * size)) + h[: g.num_dst_nodes] @ res_weight


def han(g, h, proj, attn_src, attn_dst, sem_weight, sem_bias, sem_query):
    heads, size = attn_src.shape[1:]
    pair, node, etype = pairs(g)
    num_pairs, rows = node.numel(), g.num_dst_nodes
    z = (h @ proj).reshape(-1, heads, size)
    score = F.leaky_relu((z[g.src] * attn_src[g.etype]).sum(-1) + (z[g.dst] * attn_dst[g.etype]).sum(-1), 0.2)
    alpha = edge_softmax(score, pair, num_pairs)  # within each (destination, metapath)
    per_path = F.elu(scatter_sum(alpha.unsqueeze(-1) * z[g.src], pair, num_pairs).reshape(num_pairs, heads * size))
    w = torch.tanh(per_path @ sem_weight + sem_bias) @ sem_query  # [pairs]
    count = torch.bincount(etype, minlength=g.num_etypes).clamp(min=1).to(w.dtype)
    importance = scatter_sum(w, etype, g.num_etypes) / count  # mean over the nodes of each metapath
    beta = edge_softmax(importance[etype], node, rows)  # across each node's metapaths
    return scatter_sum(beta.unsqueeze(1) * per_path, node, rows)


def gatv2_relations(g, h, w_src, w_dst, attn, bias):
    heads, size = attn.shape[1:]
    pair, node, _ = pairs(g)
    z = torch.bmm(h[g.src].unsqueeze(1), w_src[g.etype]).squeeze(1).reshape(-1, heads, size)
    z_dst = torch.bmm(h[g.dst].unsqueeze(1), w_dst[g.etype]).squeeze(1).reshape(-1, heads, size)
    alpha = edge_softmax((F.leaky_relu(z + z_dst, 0.2) * attn[g.etype]).sum(-1), pair, node.numel())
    return scatter_sum(alpha.unsqueeze(-1) * z, g.dst, g.num_dst_nodes).reshape(-1, heads * size) + bias


FORMULAS = {"rgcn_basis": rgcn_basis, "rgcn_bdd": rgcn_bdd, "rgin": rgin, "rsage": rsage,
            "compgcn": compgcn, "film": film, "heat": heat, "simple_hgn": simple_hgn, "han": han,
            "gatv2_relations": gatv2_relations}


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_zoo_layer_matches_its_formula(layer, graph, backend):
    module = LAYERS[layer]
    fn = getattr(module, layer)
    g = GRAPHS[graph]()
    torch.manual_seed(0)
    args = module.example_inputs(g, feats=8, heads=2, dtype=torch.float64)
    args = [a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    refs = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    tensors = [(a, r) for a, r in zip(args, refs) if isinstance(a, torch.Tensor)]
    import pigeon
    with pigeon.use_backend(backend):
        out = fn(g, *args)
    ref = FORMULAS[layer](g, *refs)
    # float64 end to end: results differ by the rounding of sums taken in another order
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    up = torch.randn_like(ref)
    got = torch.autograd.grad((out * up).sum(), [a for a, _ in tensors], allow_unused=True)
    want = torch.autograd.grad((ref * up).sum(), [r for _, r in tensors], allow_unused=True)
    for x, y, (a, _) in zip(got, want, tensors):
        x = torch.zeros_like(a) if x is None else x
        y = torch.zeros_like(a) if y is None else y
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("comp", ["sub", "mult"])
def test_compgcn_compositions(comp):
    module = LAYERS["compgcn"]
    g = GRAPHS["many_etypes"]()
    torch.manual_seed(1)
    args = list(module.example_inputs(g, feats=8, dtype=torch.float64))
    torch.testing.assert_close(module.compgcn(g, *args, comp=comp), compgcn(g, *args, comp=comp),
                               rtol=1e-10, atol=1e-10)
