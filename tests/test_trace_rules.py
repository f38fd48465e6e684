"""What a trace may depend on: Python control flow on traced values and loop ids is refused at
the user's line, loops over the graph trace to the right program or are refused, and a size
read from a tensor argument keys the compiled program."""
import builtins

import pytest
import torch

import pigeon
from pigeon.lang import linear, sum
from random_graphs import random_graph


def line_of(text, fn):
    import inspect
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


def refused(fn, *args, g=None):
    g = g or random_graph(num_etypes=4, seed=0)
    with pytest.raises(pigeon.TraceError) as info:
        pigeon.compile(fn)(g, *args)
    return info.value


H = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))


def selector_if(g, h):
    for e in g.edges():
        if e.etype == 0:
            e.m = h[e.src]
        else:
            e.m = h[e.dst]
    for n in g.dst_nodes():
        n.out = sum(e.m for e in n.incoming_edges())
    return n.out


def ntype_conditional(g, h):
    for n in g.nodes():
        n.out = h[n] if n.ntype == 1 else 2.0 * h[n]
    return n.out


def self_loop_if(g, h):
    for e in g.edges():
        e.m = h[e.src]
        if e.src == e.dst:
            e.m = 2.0 * h[e.src]
    for n in g.dst_nodes():
        n.out = sum(e.m for e in n.incoming_edges())
    return n.out


def value_and(g, h):
    for n in g.nodes():
        n.out = h[n] and 2.0 * h[n]
    return n.out


def value_not(g, h):
    for n in g.nodes():
        n.out = h[n] * (not h[n] > 0)
    return n.out


def value_bool(g, h):
    for n in g.nodes():
        n.out = h[n] * bool(h[n] > 0)
    return n.out


def selector_int(g, h):
    for e in g.edges():
        e.m = h[e.src] * int(e.etype)
    return e.m


def value_float(g, h):
    for n in g.nodes():
        n.out = h[n] * float(h[n])
    return n.out


def selector_range(g, h):
    for e in g.edges():
        for _ in range(e.etype):
            e.m = h[e.src]
    return e.m


def selector_len(g, h):
    for n in g.nodes():
        n.out = h[n] * len(n.ntype)
    return n.out


def value_while(g, h):
    for n in g.nodes():
        x = h[n]
        while x > 1.0:
            x = x / 2.0
        n.out = x
    return n.out


@pytest.mark.parametrize("fn, line", [
    (selector_if, "if e.etype == 0"), (ntype_conditional, "if n.ntype == 1"),
    (self_loop_if, "if e.src == e.dst"), (value_and, " and "), (value_not, "not h[n]"),
    (value_bool, "* bool("), (selector_int, "int(e.etype)"), (value_float, "float(h[n])"),
    (selector_range, "range(e.etype)"), (selector_len, "len(n.ntype)"), (value_while, "while x"),
], ids=lambda x: getattr(x, "__name__", None))
def test_python_control_flow_on_traced_data_is_refused_at_the_users_line(fn, line):
    err = refused(fn, H)
    assert err.line == line_of(line, fn), str(err)
    assert "pigeon.lang.where" in str(err)


def test_a_nested_graph_loop_is_refused():
    def all_pairs(g, h):
        for n in g.dst_nodes():
            n.out = h[n]
            for m in g.nodes():
                n.out = n.out + h[m]
        return n.out
    err = refused(all_pairs, H)
    assert err.line == line_of("for m in g.nodes()", all_pairs) and "nested graph loops" in str(err)


@pytest.mark.parametrize("form", ["for_loop", "builtin_sum", "list_comprehension"])
def test_incoming_edges_only_inside_an_aggregation(form):
    def for_loop(g, h):
        for n in g.dst_nodes():
            acc = 0
            for e in n.incoming_edges():
                acc = acc + h[e.src]
            n.out = acc
        return n.out

    def builtin_sum(g, h):
        for n in g.dst_nodes():
            n.out = builtins.sum(h[e.src] for e in n.incoming_edges())
        return n.out

    def list_comprehension(g, h):
        for n in g.dst_nodes():
            n.out = sum([h[e.src] for e in n.incoming_edges()])
        return n.out
    fn = {"for_loop": for_loop, "builtin_sum": builtin_sum, "list_comprehension": list_comprehension}[form]
    err = refused(fn, H)
    assert "incoming_edges() is traced once" in str(err)
    assert err.line == line_of({"for_loop": "for e in", "builtin_sum": "builtins.sum",
                                "list_comprehension": "sum(["}[form], fn)


def test_a_sum_over_all_edges_is_a_readout():
    @pigeon.compile
    def readout(g, h):
        return sum(h[e.src] for e in g.edges())
    g = random_graph(num_etypes=4, seed=0)
    h = H.double()
    torch.testing.assert_close(readout(g, h), h[g.src].sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("exit", ["break", "return"])
def test_leaving_a_graph_loop_early_is_refused(exit):
    def with_break(g, h):
        for n in g.nodes():
            n.out = 2.0 * h[n]
            break
        return n.out

    def with_return(g, h):
        for n in g.nodes():
            n.out = 2.0 * h[n]
            return n.out
    fn = with_break if exit == "break" else with_return
    err = refused(fn, H)
    assert "left early" in str(err) and err.line == line_of("for n in g.nodes()", fn)


def test_a_loop_with_continue_and_a_skipped_body_trace_right():
    @pigeon.compile
    def skipping(g, h, w):
        for e in g.edges():
            e.m = linear(h[e.src], w[e.etype])
            continue
        for _ in []:  # a body that never runs traces nothing
            raise AssertionError
        for n in g.dst_nodes():
            n.out = sum(e.m for e in n.incoming_edges())
        return n.out

    g = random_graph(num_etypes=4, seed=2)
    h, w = H.double(), torch.randn(4, 4, 3, dtype=torch.float64)
    m = torch.bmm(h[g.src].unsqueeze(1), w[g.etype]).squeeze(1)
    want = torch.zeros(g.num_nodes, 3, dtype=torch.float64).index_add(0, g.dst, m)
    torch.testing.assert_close(skipping(g, h, w), want, rtol=1e-12, atol=1e-12)


def test_a_size_read_in_a_trace_keys_the_program():
    @pigeon.compile
    def centred(g, h, w):
        for n in g.nodes():
            n.out = h[n] - h.shape[0] * w + len(h) / w.shape[0]
        return n.out

    w = torch.randn(4, dtype=torch.float64)
    for seed, size in enumerate([10, 25, 7]):
        g = random_graph(num_nodes=size, num_edges=3 * size, num_etypes=3, seed=seed, num_isolated=2)
        h = torch.randn(size, 4, dtype=torch.float64)
        torch.testing.assert_close(centred(g, h, w), h - size * w + size / 4, rtol=1e-12, atol=1e-12)
    assert len(centred._programs) == 3


@pigeon.compile
def size_scaled(g, h, w):
    """Graph sizes in arithmetic with traced values: read from the graph at every call."""
    total = sum(h[n] for n in g.nodes())
    for n in g.dst_nodes():
        n.out = (sum(linear(h[e.src], w) for e in n.incoming_edges()) * (g.num_etypes / g.num_edges)
                 + total / h.shape[0] - g.num_dst_nodes / g.num_nodes + 2.0 ** (h[n] / h.size(0)))
    return n.out


def size_scaled_formula(g, h, w):
    agg = torch.zeros(g.num_dst_nodes, w.shape[1], dtype=h.dtype).index_add(0, g.dst, h[g.src] @ w)
    x = h[: g.num_dst_nodes]
    return (agg * (g.num_etypes / g.num_edges) + h.sum(0) / g.num_nodes - g.num_dst_nodes / g.num_nodes
            + 2.0 ** (x / g.num_nodes))


def test_graph_sizes_are_read_at_every_call(backend):
    w = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    graphs = [random_graph(num_nodes=10, num_edges=30, num_etypes=3, seed=1, num_isolated=2),
              random_graph(num_nodes=25, num_edges=90, num_etypes=5, seed=2, num_isolated=2, num_dst_nodes=12),
              random_graph(num_nodes=7, num_edges=20, num_etypes=2, seed=3, num_isolated=1)]
    fn = pigeon.compile(size_scaled.fn)
    for seed, g in enumerate(graphs):
        gen = torch.Generator().manual_seed(seed)
        h = torch.randn(g.num_nodes, 4, dtype=torch.float64, generator=gen).requires_grad_()
        ref_h = h.detach().clone().requires_grad_()
        with pigeon.use_backend(backend):
            out = fn(g, h, w)
        ref = size_scaled_formula(g, ref_h, w)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
        up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
        torch.testing.assert_close(torch.autograd.grad((out * up).sum(), h)[0],
                                   torch.autograd.grad((ref * up).sum(), ref_h)[0], rtol=1e-10, atol=1e-10)
    assert len(fn._programs) == 1  # one program for every size


@pytest.mark.parametrize("use", ["range", "zeros", "if", "int"])
def test_graph_sizes_as_python_numbers_are_refused(use):
    def f(g, h):
        if use == "range":
            for _ in range(g.num_nodes):
                pass
        elif use == "zeros":
            torch.zeros(g.num_edges)
        elif use == "if":
            if g.num_edges:
                pass
        else:
            int(g.num_dst_nodes)
        for n in g.nodes():
            n.out = h[n]
        return n.out
    message = str(refused(f, H))
    assert "g.num_" in message or "if" in message, message
    if use != "if":
        assert "use it in arithmetic with traced values" in message


def test_sizes_not_read_are_not_part_of_the_key():
    @pigeon.compile
    def scaled(g, h, w):
        size = w.shape[1:]  # feature sizes only
        for n in g.nodes():
            n.out = linear(h[n], w) * float(size[0])
        return n.out

    w = torch.randn(4, 3, dtype=torch.float64)
    for seed, size in enumerate([10, 25]):
        g = random_graph(num_nodes=size, num_edges=3 * size, num_etypes=3, seed=seed, num_isolated=2)
        h = torch.randn(size, 4, dtype=torch.float64)
        torch.testing.assert_close(scaled(g, h, w), 3.0 * h @ w, rtol=1e-12, atol=1e-12)
    assert len(scaled._programs) == 1


def test_graph_size_kernels_compile_with_nvrtc():
    """The sizes reach the generated CUDA kernels as row-count arguments, forward and backward."""
    pytest.importorskip("cupy", reason="NVRTC comes with the cuda13 extra (pip install -e '.[dev]')")
    from pigeon.codegen import render_module
    from pigeon.ir.lower import lower
    from pigeon.runtime import kernel_cache
    g = random_graph(num_nodes=12, num_edges=40, num_etypes=3, seed=4, num_isolated=2)
    gen = torch.Generator().manual_seed(5)
    exe = size_scaled.executable(g, torch.randn(12, 4, generator=gen), torch.randn(4, 4, generator=gen))
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    for phase, program in (("forward", grad.forward), ("backward", grad.backward)):
        source, kernels = render_module(lower(program))
        ptx = kernel_cache.compile_ptx(source, "compute_90", f"size_scaled_{phase}")
        assert all(f".entry {k.name}(" in ptx for k in kernels)
        if phase == "forward":
            assert "rows_edge" in source and "rows_etype" in source
