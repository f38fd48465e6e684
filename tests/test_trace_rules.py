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
