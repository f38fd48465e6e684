"""The elementwise functions of pigeon.lang beyond the basics (abs, elu, softplus, minimum,
maximum, clamp, c ** x): every back end that runs here against torch's own functions in
float64, forward and backward, ties and boundaries included."""
import math

import pytest
import torch
import torch.nn.functional as F

import pigeon
from pigeon.lang import clamp, elu, linear, maximum, minimum, softplus, sum
from random_graphs import random_graph
from test_where import GRAPHS


@pigeon.compile
def mixed(g, h, a):
    for e in g.edges():
        s, d = h[e.src] * a, h[e.dst] * a  # equal on self loops: ties for maximum/minimum
        e.x = maximum(s, d) + 0.5 * minimum(s, 0.25) + abs(s - d) + clamp(d, -0.5, 0.75)
    for n in g.dst_nodes():
        agg = sum(e.x for e in n.incoming_edges())
        n.out = elu(agg, 0.7) + softplus(agg, 2.0, 3.0) + 2.0 ** clamp(agg, max=1.0)
    return n.out


def mixed_formula(g, h, a):
    s, d = h[g.src] * a, h[g.dst] * a
    x = torch.maximum(s, d) + 0.5 * torch.minimum(s, torch.tensor(0.25, dtype=s.dtype)) + (s - d).abs() \
        + d.clamp(-0.5, 0.75)
    agg = torch.zeros(g.num_dst_nodes, x.shape[1], dtype=x.dtype).index_add(0, g.dst, x)
    return F.elu(agg, 0.7) + F.softplus(agg, 2.0, 3.0) + 2.0 ** agg.clamp(max=1.0)


@pytest.mark.parametrize("graph", GRAPHS)
def test_functions_match_torch(graph, backend):
    g = GRAPHS[graph]()
    torch.manual_seed(0)
    h = torch.randn(g.num_nodes, 5, dtype=torch.float64)
    h[:3] = torch.tensor([-0.5, 0.75, 0.25, 0.0, 1.0], dtype=torch.float64)  # on the boundaries
    h.requires_grad_()
    a = torch.randn(5, dtype=torch.float64).abs().add(0.5).requires_grad_()
    with pigeon.use_backend(backend):
        out = mixed(g, h, a)
    h_ref, a_ref = h.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    ref = mixed_formula(g, h_ref, a_ref)
    # float64 throughout: sums in another order differ by rounding only
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    up = torch.randn_like(ref)
    got = torch.autograd.grad((out * up).sum(), (h, a))
    want = torch.autograd.grad((ref * up).sum(), (h_ref, a_ref))
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


def test_unknown_methods_name_the_dsl_function():
    @pigeon.compile
    def f(g, h):
        for n in g.nodes():
            n.out = h[n].clamp(0.0)
        return n.out

    with pytest.raises(pigeon.TraceError, match=r"write pigeon.lang.clamp\(x, \.\.\.\)"):
        f(random_graph(num_etypes=3, seed=0), torch.randn(40, 2))


def test_a_non_positive_base_is_refused():
    @pigeon.compile
    def f(g, h):
        for n in g.nodes():
            n.out = (-2.0) ** h[n]
        return n.out

    with pytest.raises(pigeon.TraceError, match="the base must be a positive Python number"):
        f(random_graph(num_etypes=3, seed=0), torch.randn(40, 2))


def test_large_arguments_keep_finite_gradients():
    """elu and softplus of large values: the branch not taken must not turn the gradient into NaN."""
    @pigeon.compile
    def f(g, h):
        for n in g.nodes():
            n.out = elu(h[n]) + softplus(h[n])
        return n.out

    g = random_graph(num_etypes=3, seed=0)
    h = torch.full((40, 2), 1000.0, dtype=torch.float64, requires_grad=True)
    for name in ["reference", "cpp"]:
        with pigeon.use_backend(name):
            (grad,) = torch.autograd.grad(f(g, h).sum(), h)
        torch.testing.assert_close(grad, torch.full_like(grad, 2.0), rtol=0, atol=0)
    assert math.isfinite(float(f(g, h).detach().sum()))


def test_function_kernels_compile_with_nvrtc():
    pytest.importorskip("cupy", reason="NVRTC comes with the cuda13 extra (pip install -e '.[dev]')")
    from pigeon.codegen import render_module
    from pigeon.ir.lower import lower
    from pigeon.runtime import kernel_cache
    g = GRAPHS["many_etypes"]()
    exe = mixed.executable(g, torch.randn(g.num_nodes, 5), torch.randn(5))
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    for program in (grad.forward, grad.backward):
        source, kernels = render_module(lower(program))
        assert kernels and kernel_cache.compile_ptx(source, "compute_90", program.name).strip()


def test_concat_broadcasts_a_global_value_and_a_program_without_kernels_runs():
    from pigeon.lang import concat

    @pigeon.compile
    def joined(g, h, bias, training=True):
        for n in g.nodes():
            n.out = concat(h[n], bias) if training else h[n]
        return n.out

    g = random_graph(num_etypes=3, seed=0)
    h, bias = torch.randn(40, 3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    for name in ["reference", "cpp"]:
        with pigeon.use_backend(name):
            torch.testing.assert_close(joined(g, h, bias), torch.cat([h, bias.expand(40, 2)], 1), rtol=0, atol=0)
            torch.testing.assert_close(joined(g, h, bias, training=False), h, rtol=0, atol=0)  # no kernel at all


@pigeon.compile
def smallest(g, h, a):
    for e in g.edges():
        e.x = h[e.src] * a - h[e.dst]
    for n in g.dst_nodes():
        n.out = pigeon.lang.min(e.x for e in n.incoming_edges())
    return n.out


def smallest_formula(g, h, a):
    x = h[g.src] * a - h[g.dst]
    out = torch.full((g.num_dst_nodes, x.shape[1]), float("inf"), dtype=x.dtype)
    out = out.scatter_reduce(0, g.dst[:, None].expand_as(x), x, "amin")
    return torch.where(torch.isinf(out), torch.zeros_like(out), out)  # no incoming edge: 0


@pytest.mark.parametrize("graph", GRAPHS)
def test_min_aggregation_matches_torch(graph, backend):
    g = GRAPHS[graph]()
    gen = torch.Generator().manual_seed(2)
    leaves = [torch.randn(g.num_nodes, 3, dtype=torch.float64, generator=gen).round(decimals=1),  # ties too
              torch.randn(3, dtype=torch.float64, generator=gen).round(decimals=1)]
    ours = [x.clone().requires_grad_() for x in leaves]
    refs = [x.clone().requires_grad_() for x in leaves]
    with pigeon.use_backend(backend):
        out = smallest(g, *ours)
    ref = smallest_formula(g, *refs)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    for got, want in zip(torch.autograd.grad((out * up).sum(), ours), torch.autograd.grad((ref * up).sum(), refs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pigeon.compile
def sliced(g, h, W, bias):
    for e in g.edges():
        z = linear(h[e.src], W[e.etype]).reshape(2, 4)
        e.m = z[..., 1:3] * bias[:2] + z[..., 3:4]
    for n in g.dst_nodes():
        n.out = sum(e.m for e in n.incoming_edges()).reshape(4) + h[n][1:5]
    return n.out


def sliced_formula(g, h, W, bias):
    z = torch.bmm(h[g.src].unsqueeze(1), W[g.etype]).squeeze(1).reshape(-1, 2, 4)
    m = z[..., 1:3] * bias[:2] + z[..., 3:4]
    agg = torch.zeros(g.num_dst_nodes, 2, 2, dtype=h.dtype).index_add(0, g.dst, m)
    return agg.reshape(-1, 4) + h[: g.num_dst_nodes, 1:5]


@pytest.mark.parametrize("graph", GRAPHS)
def test_slices_match_torch(graph, backend):
    g = GRAPHS[graph]()
    gen = torch.Generator().manual_seed(3)
    leaves = [torch.randn(g.num_nodes, 6, dtype=torch.float64, generator=gen),
              torch.randn(max(g.num_etypes, 1), 6, 8, dtype=torch.float64, generator=gen),
              torch.randn(3, dtype=torch.float64, generator=gen)]
    ours = [x.clone().requires_grad_() for x in leaves]
    refs = [x.clone().requires_grad_() for x in leaves]
    with pigeon.use_backend(backend):
        out = sliced(g, *ours)
    ref = sliced_formula(g, *refs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    for got, want in zip(torch.autograd.grad((out * up).sum(), ours), torch.autograd.grad((ref * up).sum(), refs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_other_indexing_is_refused():
    @pigeon.compile
    def f(g, h):
        for n in g.nodes():
            n.out = h[n][::2]
        return n.out
    with pytest.raises(pigeon.TraceError, match="sliced along its last feature axis only"):
        f(random_graph(num_etypes=3, seed=0), torch.randn(40, 4))


@pigeon.compile
def traced_power(g, h, a):
    for e in g.edges():
        e.x = (1.0 + h[e.src] * h[e.src]) ** (a * h[e.dst])  # a positive base, a traced exponent
    for n in g.dst_nodes():
        n.out = sum(e.x for e in n.incoming_edges())
    return n.out


@pytest.mark.parametrize("graph", GRAPHS)
def test_a_traced_exponent_matches_torch_pow(graph, backend):
    g = GRAPHS[graph]()
    gen = torch.Generator().manual_seed(3)
    h = (torch.randn(g.num_nodes, 3, dtype=torch.float64, generator=gen) * 0.5).requires_grad_()
    a = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
    with pigeon.use_backend(backend):
        out = traced_power(g, h, a)
    h_ref, a_ref = h.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    x = torch.pow(1.0 + h_ref[g.src] ** 2, a_ref * h_ref[g.dst])
    ref = torch.zeros(g.num_dst_nodes, 3, dtype=x.dtype).index_add(0, g.dst, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: rounding only
    up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    for got, want in zip(torch.autograd.grad((out * up).sum(), (h, a)), torch.autograd.grad((ref * up).sum(), (h_ref, a_ref))):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
