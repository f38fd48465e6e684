"""The aggregation-order pass: goldens, where the cost model takes it, what it leaves alone, and
RGCN with the pass forced on against the plain-torch formula in float64, forward and backward,
on every back end here and on adversarial graphs."""
import textwrap

import pytest
import torch

import pigeon
from pigeon.examples import rgcn
from pigeon.ir.cost import GraphStats
from pigeon.ir.parser import parse_program
from pigeon.ir.passes import PASS_NAMES, aggregation_order, optimize
from pigeon.ir.printer import format_program
from pigeon.ir.verify import verify
import formulas
from test_where import GRAPHS

# many edges per (destination, edge type): the pairs of the destination side are few
MANY_PER_DST = GraphStats(num_nodes=100_000, num_dst_nodes=100_000, num_edges=200_000, num_compact=180_000,
                          num_compact_dst=20_000, num_etypes=10, num_ntypes=1)
# many edges per (source, edge type): compaction of the sources is the cheaper form
MANY_PER_SRC = GraphStats(num_nodes=100_000, num_dst_nodes=100_000, num_edges=200_000, num_compact=20_000,
                          num_compact_dst=180_000, num_etypes=10, num_ntypes=1)

RGCN_MEAN = """
    program p
      %h : node[8] f32 = input[position=0]()
      %W : etype[8,8] f32 = input[position=1]()
      %hs : edge[8] f32 = gather[index=src, to=edge](%h)
      %m : edge[8] f32 = linear[by=etype](%hs, %W)
      %d : edge[1] f32 = degree[by=dst_etype, dtype=float32]()
      %md : edge[8] f32 = div(%m, %d)
      %out : dst[8] f32 = reduce[index=dst, kind=sum, to=dst](%md)
      return %out
    """


def program(text):
    return verify(parse_program(textwrap.dedent(text)))


def test_the_linear_moves_after_a_sum_per_destination_and_edge_type():
    assert format_program(verify(aggregation_order.run(program(RGCN_MEAN), MANY_PER_DST))) == textwrap.dedent("""
        program p
          %h : node[8] f32 = input[position=0]()
          %W : etype[8,8] f32 = input[position=1]()
          %hs : edge[8] f32 = gather[index=src, to=edge](%h)
          %d : edge[1] f32 = degree[by=dst_etype, dtype=float32]()
          %hs_scaled : edge[8] f32 = div(%hs, %d)
          %hs_per_etype : compact_dst[8] f32 = reduce[index=compact_dst, kind=sum, to=compact_dst](%hs_scaled)
          %m_per_etype : compact_dst[8] f32 = linear[by=etype](%hs_per_etype, %W)
          %out : dst[8] f32 = reduce[index=compact_dst_node, kind=sum, to=dst](%m_per_etype)
          return %out
        """).lstrip("\n")


def test_the_cost_model_keeps_the_compact_form_where_sources_repeat():
    p = program(RGCN_MEAN)
    assert aggregation_order.run(p, MANY_PER_SRC) == p
    assert aggregation_order.run(p, None) == p  # no sizes, no rewrite


def test_the_pipeline_chooses_per_graph():
    on_dst = format_program(optimize(program(RGCN_MEAN), MANY_PER_DST))
    on_src = format_program(optimize(program(RGCN_MEAN), MANY_PER_SRC))
    assert "to=compact_dst](%hs" in on_dst and "linear[by=etype](%hs_per_etype" in on_dst
    assert "index=compact_src" in on_src and "compact_dst" not in on_src
    assert "aggregation_order" in PASS_NAMES


@pytest.mark.parametrize("change", [
    ("%md : edge[8] f32 = div(%m, %d)", "%md : edge[8] f32 = tanh(%m)"),  # not linear in between
    ("kind=sum", "kind=max"),  # a maximum does not commute with the linear map
    ("linear[by=etype]", "linear[by=src_ntype]"),  # a weight per source type differs within a pair
])
def test_what_is_left_alone(change):
    text = RGCN_MEAN.replace(*change)
    if "src_ntype" in text:
        text = text.replace("%W : etype[8,8]", "%W : ntype[8,8]")
    p = program(text)
    assert aggregation_order.run(p, MANY_PER_DST) == p


def test_a_linear_read_elsewhere_is_left_alone():
    p = program(RGCN_MEAN.replace("return %out", "return %out, %m"))
    assert aggregation_order.run(p, MANY_PER_DST) == p


def test_a_factor_wider_than_one_is_left_alone():
    text = (RGCN_MEAN.replace("%d : edge[1] f32 = degree[by=dst_etype, dtype=float32]()",
                              "%d : edge[8] f32 = gather[index=src, to=edge](%g)")
            .replace("%W : etype[8,8] f32 = input[position=1]()",
                     "%W : etype[8,8] f32 = input[position=1]()\n      %g : node[8] f32 = input[position=2]()"))
    p = program(text)
    assert aggregation_order.run(p, MANY_PER_DST) == p


@pytest.fixture
def forced(monkeypatch):
    """The pass applied wherever it matches, so that small graphs test the reordered program.
    RGCN's compiled programs start empty and are put back afterwards: one that another test
    optimised without the pass is not reused here, nor one optimised here reused there."""
    monkeypatch.setattr(aggregation_order, "pays", lambda candidate, current, stats: True)
    monkeypatch.setattr(rgcn.rgcn, "_executables", {})


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("options", [{"aggr": "mean"}, {"aggr": "sum", "edge_weight": True}], ids=["mean", "weighted"])
def test_reordered_rgcn_matches_the_formula(options, graph, backend, forced):
    g = GRAPHS[graph]()
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(g.num_nodes, 6, dtype=torch.float64, generator=gen),
              torch.randn(g.num_etypes, 6, 5, dtype=torch.float64, generator=gen),
              torch.randn(6, 5, dtype=torch.float64, generator=gen), torch.randn(5, dtype=torch.float64, generator=gen)]
    if options.get("edge_weight"):
        leaves.append(torch.rand(g.num_edges, 1, dtype=torch.float64, generator=gen) + 0.5)
    ours = [x.clone().requires_grad_() for x in leaves]
    refs = [x.clone().requires_grad_() for x in leaves]
    with pigeon.use_backend(backend):
        out = rgcn.rgcn(g, *ours, aggr=options["aggr"])
        exe = rgcn.rgcn.executable(g, *ours, aggr=options["aggr"])
    if g.num_edges:
        assert "compact_dst_node" in format_program(exe.forward)  # the reordered program ran
    ref = formulas.rgcn(g, *refs, aggr=options["aggr"])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
    up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    for got, want in zip(torch.autograd.grad((out * up).sum(), ours), torch.autograd.grad((ref * up).sum(), refs)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
