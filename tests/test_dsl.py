"""The loop DSL: tracing every op against direct torch, errors that point at the user's line,
and the per-signature program cache."""
import inspect

import pytest
import torch

import pigeon
from pigeon.lang import concat, dot, exp, gelu, leaky_relu, linear, log, max, mean, relu, sigmoid, softmax, sqrt, sum, tanh
from random_graphs import random_graph


def line_of(fragment, fn):
    """The absolute line number of the first source line of ``fn`` containing ``fragment``."""
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, text in enumerate(lines) if fragment in text)


@pigeon.compile
def kitchen_sink(g, h, w, scale, b):
    for n in g.nodes():
        n.t = tanh(linear(h[n], w))
    for e in g.edges():
        a = e.src.t * scale[e.etype] - e.dst.t / 2.0
        e.x = concat(gelu(a), relu(a) ** 2.0, sqrt(exp(a) + 1.0), log(sigmoid(a)))
        e.s = leaky_relu(dot(e.x, e.x), 0.05) / e.dst_degree
    for n in g.dst_nodes():
        n.out = concat(mean(e.x for e in n.incoming_edges()), max(e.x for e in n.incoming_edges()),
                       sum(softmax(e.s) * e.x for e in n.incoming_edges())) + b - 1.0 / (1.0 + dot(n.t.reshape(1, 3).reshape(3), n.t))
    return n.out


def kitchen_sink_formula(g, h, w, scale, b):
    t = torch.tanh(h @ w)
    a = t[g.src] * scale[g.etype] - t[g.dst] / 2.0
    x = torch.cat([torch.nn.functional.gelu(a), torch.relu(a) ** 2, torch.sqrt(torch.exp(a) + 1),
                   torch.log(torch.sigmoid(a))], -1)
    deg = torch.bincount(g.dst, minlength=g.num_nodes)[g.dst].unsqueeze(-1).to(h.dtype)
    s = torch.nn.functional.leaky_relu((x * x).sum(-1, keepdim=True), 0.05) / deg
    n = g.num_dst_nodes
    mean_x, max_x, soft = torch.zeros(n, 12, dtype=h.dtype), torch.zeros(n, 12, dtype=h.dtype), torch.zeros(n, 12, dtype=h.dtype)
    for v in range(n):
        m = g.dst == v
        if m.any():
            mean_x[v] = x[m].mean(0)
            max_x[v] = x[m].max(0).values
            soft[v] = (torch.softmax(s[m], 0) * x[m]).sum(0)
    return torch.cat([mean_x, max_x, soft], -1) + b - 1.0 / (1.0 + (t[:n] * t[:n]).sum(-1, keepdim=True))


def test_every_dsl_op_matches_torch_forward_and_backward():
    g = random_graph(num_etypes=20, seed=11)
    args = [torch.randn(g.num_nodes, 5, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64),
            torch.randn(g.num_etypes, 3, dtype=torch.float64), torch.randn(36, dtype=torch.float64)]
    ours = [a.clone().requires_grad_() for a in args]
    theirs = [a.clone().requires_grad_() for a in args]
    out, ref = kitchen_sink(g, *ours), kitchen_sink_formula(g, *theirs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    up = torch.randn_like(ref)
    (out * up).sum().backward()
    (ref * up).sum().backward()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)


def trace_error(fn, *args):
    g = random_graph(num_etypes=4, seed=0)
    with pytest.raises(pigeon.TraceError) as info:
        pigeon.compile(fn)(g, *args)
    return info.value


def test_data_dependent_control_flow_points_at_the_users_line():
    def f(g, h):
        for e in g.edges():
            if h[e.src] > 0:
                e.x = h[e.src]
        return h
    err = trace_error(f, torch.randn(40, 4))
    assert err.line == line_of("if h[e.src] > 0", f)
    assert "pigeon.lang.where" in str(err) and "if h[e.src] > 0" in str(err)


def test_truth_value_of_a_traced_value():
    def f(g, h):
        for n in g.nodes():
            n.y = h[n] if relu(h[n]) else h[n]
        return n.y
    err = trace_error(f, torch.randn(40, 4))
    assert "Python control flow" in str(err) and err.line == line_of("if relu", f)


def test_torch_function_on_a_traced_value():
    def f(g, h):
        for n in g.nodes():
            n.y = torch.exp(h[n])
        return n.y
    err = trace_error(f, torch.randn(40, 4))
    assert "torch.exp cannot run on a traced value" in str(err) and err.line == line_of("torch.exp", f)


def test_shape_mismatch_points_at_the_users_line():
    def f(g, h, w):
        for e in g.edges():
            e.y = linear(h[e.src], w[e.etype])
        return h
    err = trace_error(f, torch.randn(40, 4), torch.randn(4, 5, 3))
    assert "4 features but the weight expects 5" in str(err)
    assert err.line == line_of("linear(h[e.src]", f)


def test_edge_value_assigned_to_a_node():
    def f(g, h):
        for e in g.edges():
            e.y = h[e.src]
        for n in g.dst_nodes():
            n.out = e.y
        return n.out
    assert "aggregate it with sum/mean/max" in str(trace_error(f, torch.randn(40, 4)))


def test_builtin_sum_over_edges_is_caught():
    import builtins

    def f(g, h):
        for e in g.edges():
            e.y = h[e.src]
        for n in g.dst_nodes():
            n.out = builtins.sum(e.y for e in n.incoming_edges())
        return n.out
    err = trace_error(f, torch.randn(40, 4))
    assert "Python's own sum" in str(err) and err.line == line_of("builtins.sum", f)


def test_unset_values_and_conflicting_uses():
    def unset(g, h):
        for e in g.edges():
            e.y = h[e.src]
            e.z = e.scor
        return h
    assert "e.scor was never set (set so far: y)" in str(trace_error(unset, torch.randn(40, 4)))

    def conflict(g, h):
        for e in g.edges():
            e.y = h[e.src] + h[e.etype]
        return e.y
    assert "uses h as a etype value, but h[e.src] already made it a node value" in str(
        trace_error(conflict, torch.randn(40, 4)))


def test_argument_checks():
    def f(g, h, w):
        for n in g.nodes():
            n.y = linear(h[n], w)
        return n.y
    assert "mix dtypes" in str(trace_error(f, torch.randn(40, 4), torch.randn(4, 4, dtype=torch.float64)))
    assert "not floating point" in str(trace_error(f, torch.randn(40, 4), torch.ones(4, 4, dtype=torch.int64)))


def test_dsl_functions_need_a_trace():
    with pytest.raises(pigeon.TraceError, match="only be called inside a @pigeon.compile"):
        exp(torch.ones(2))


def test_builtin_fallbacks_of_the_aggregations():
    assert sum([1, 2, 3]) == 6 and max([1, 5, 2]) == 5 and mean([1.0, 3.0]) == 2.0 and max(1, 4) == 4


@pigeon.compile
def simple(g, h, w, aggr="sum"):
    for e in g.edges():
        e.m = linear(h[e.src], w[e.etype])
    for n in g.dst_nodes():
        n.out = sum(e.m for e in n.incoming_edges()) if aggr == "sum" else mean(e.m for e in n.incoming_edges())
    return n.out


def test_programs_are_cached_per_signature():
    simple._programs.clear()
    g1, g2 = random_graph(num_etypes=5, seed=1), random_graph(num_nodes=50, num_etypes=5, seed=2)
    w = torch.randn(5, 4, 3)
    simple(g1, torch.randn(40, 4), w)
    simple(g2, torch.randn(50, 4), w)  # another graph size: same program
    assert len(simple._programs) == 1
    simple(g1, torch.randn(40, 4), w, aggr="mean")
    simple(g1, torch.randn(40, 4, dtype=torch.float64), w.double())
    assert len(simple._programs) == 3
    assert simple.program(g1, torch.randn(40, 4), w) is simple.program(g2, torch.randn(50, 4), w)


def test_inputs_that_do_not_fit_the_graph():
    g = random_graph(num_etypes=5, seed=1)
    w = torch.randn(5, 4, 3)
    with pytest.raises(pigeon.InputError, match="h has shape \\[41, 4\\], expected \\[40, 4\\]"):
        simple(g, torch.randn(41, 4), w)
    with pytest.raises(pigeon.InputError, match="w has shape \\[6, 4, 3\\], expected \\[5, 4, 3\\]"):
        simple(g, torch.randn(40, 4), torch.randn(6, 4, 3))
    with pytest.raises(pigeon.InputError, match="is on meta but the graph is on cpu"):
        simple(g, torch.randn(40, 4, device="meta"), w.to("meta"))
    with pytest.raises(TypeError, match="must be a pigeon.Graph"):
        simple("not a graph", torch.randn(40, 4), w)


def test_a_graph_cannot_be_changed_through_its_arrays():
    g = random_graph(num_etypes=5, seed=1)
    w, h = torch.randn(5, 4, 3), torch.randn(40, 4)
    before = simple(g, h, w)
    g.src[0] = 1 - g.src[0]  # a copy: the graph keeps its own arrays
    torch.testing.assert_close(simple(g, h, w), before, rtol=0, atol=0)


def test_backend_choice():
    g = random_graph(num_etypes=5, seed=1)
    w = torch.randn(5, 4, 3)
    with pytest.raises(ValueError, match="the cuda backend runs generated kernels on CUDA tensors"):
        with pigeon.use_backend("cuda"):
            simple(g, torch.randn(40, 4), w)
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        with pigeon.use_backend("tpu"):
            pass
    with pigeon.use_backend("reference"):
        assert simple.executable(g, torch.randn(40, 4), w).backend == "reference"


def test_switches_called_without_with_hold_until_closed():
    g = random_graph(num_etypes=5, seed=1)
    w = torch.randn(5, 4, 3)
    default = simple.executable(g, torch.randn(40, 4), w).backend
    switch = pigeon.use_backend("reference")
    try:
        assert simple.executable(g, torch.randn(40, 4), w).backend == "reference"
        pigeon.use_backend(None)
        assert simple.executable(g, torch.randn(40, 4), w).backend == default
    finally:
        switch.close()
    passes = pigeon.disable_passes("compact")
    try:
        assert "compact" in simple.executable(g, torch.randn(40, 4), w).config.disabled
    finally:
        passes.close()
    assert "compact" not in simple.executable(g, torch.randn(40, 4), w).config.disabled
