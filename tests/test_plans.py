"""Level 2: fusion into kernel plans, checked kernel by kernel against the level-1 reference."""
import textwrap

import pytest
import torch

import pigeon
from pigeon.cli import main
from pigeon.examples import hgt, rgat, rgcn
from pigeon.ir.lower import lower
from pigeon.ir.parser import parse_program
from pigeon.ir.plans import GemmSchedule, PlanProgram, Strategy, TraversalSchedule
from pigeon.ir.types import Domain
from pigeon.runtime.plan_interpreter import PlanError, run_plans
from pigeon.runtime.reference import execute
from random_graphs import random_graph

GRAPHS = {
    "many_etypes": lambda: random_graph(num_nodes=40, num_edges=240, num_etypes=300, seed=1),
    "block": lambda: random_graph(num_nodes=30, num_edges=150, num_etypes=40, seed=2, num_dst_nodes=12),
    "dense": lambda: random_graph(num_nodes=30, num_edges=1200, num_etypes=6, seed=3),
    "no_edges": lambda: pigeon.Graph.from_edges([], [], [], 5, [0, 1, 0, 1, 1], num_etypes=3),
}
MODELS = [rgcn.rgcn, rgat.rgat, hgt.hgt]


def _setup(model, g):
    args = [a.double() if isinstance(a, torch.Tensor) else a for a in model.example_inputs(g)]
    exe = model.executable(g, *args)
    params = dict(model._bind(g, args, {}))
    return exe, [params[n.name] for n in exe.forward.inputs]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_plans_compute_what_the_program_computes(model, graph):
    g = GRAPHS[graph]()
    exe, tensors = _setup(model, g)
    _same(run_plans(lower(exe.forward), g, *tensors), execute(exe.forward, g, *tensors))
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    forward = execute(grad.forward, g, *tensors)
    _same(run_plans(lower(grad.forward), g, *tensors), forward)
    upstream = [torch.randn_like(o) for o in forward[: grad.num_outputs]]
    backward_inputs = [*forward[grad.num_outputs:], *upstream]
    _same(run_plans(lower(grad.backward), g, *backward_inputs), execute(grad.backward, g, *backward_inputs))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_inference_stores_no_edge_sized_value(model):
    g = GRAPHS["dense"]()
    exe, _ = _setup(model, g)
    plans = lower(exe.forward)
    stored = [(k.name, w) for k in plans.kernels for w in k.writes if k.value_type(w).domain == Domain.EDGE]
    assert stored == []
    # a kernel per destination over the CSR, unless the sum runs per (destination, edge type) first
    assert any(k.strategy == Strategy.DST_PARALLEL for k in plans.kernels) or "index=compact_dst" in str(exe.forward)


def test_plans_are_data():
    g = GRAPHS["dense"]()
    exe, _ = _setup(rgat.rgat, g)
    a, b = lower(exe.forward), lower(exe.forward)
    assert a == b and hash(a) == hash(b) and str(a) == str(b)
    assert len({a, b}) == 1


def test_schedule_knobs_have_listed_defaults():
    for schedule in (GemmSchedule(), TraversalSchedule()):
        assert schedule.knobs()
        for knob, value in schedule.knobs().items():
            assert value in schedule.CHOICES[knob], knob


def lowered(text):
    return lower(parse_program(textwrap.dedent(text)))


def test_elementwise_ops_after_a_gemm_become_its_epilogue():
    plans = lowered("""
        program p
          %h : node[8] f32 = input[position=0]()
          %W : ntype[8,4] f32 = input[position=1]()
          %b : ntype[4] f32 = input[position=2]()
          %y : node[4] f32 = linear[by=ntype](%h, %W)
          %bn : node[4] f32 = gather[index=ntype, to=node](%b)
          %z : node[4] f32 = add(%y, %bn)
          %out : node[4] f32 = relu(%z)
          return %out
        """)
    (kernel,) = plans.kernels
    assert kernel.strategy == Strategy.GEMM and kernel.writes == ("out",) and kernel.layout == "node_by_ntype"


def test_a_gemm_does_not_absorb_the_ops_that_make_its_input():
    plans = lowered("""
        program p
          %h : node[8] f32 = input[position=0]()
          %W : global[8,4] f32 = input[position=1]()
          %x : node[8] f32 = tanh(%h)
          %out : node[4] f32 = linear[by=all](%x, %W)
          return %out
        """)
    assert [k.strategy for k in plans.kernels] == [Strategy.ROW_MAP, Strategy.GEMM]
    assert plans.kernels[0].writes == ("x",)


def test_edge_work_and_its_aggregation_are_one_traversal():
    plans = lowered("""
        program p
          %h : node[8] f32 = input[position=0]()
          %s : edge[1] f32 = input[position=1]()
          %hs : edge[8] f32 = gather[index=src, to=edge](%h)
          %a : edge[1] f32 = edge_softmax(%s)
          %m : edge[8] f32 = mul(%a, %hs)
          %out : dst[8] f32 = reduce[index=dst, kind=sum, to=dst](%m)
          %back : node[8] f32 = reduce[index=src, kind=sum, to=node](%m)
          return %out, %back
        """)
    (kernel,) = plans.kernels
    assert kernel.strategy == Strategy.DST_PARALLEL and kernel.layout == "csr"
    assert kernel.writes == ("out", "back")


def test_a_scatter_gets_atomics_and_its_users_another_kernel():
    plans = lowered("""
        program p
          %d : edge[4] f32 = input[position=0]()
          %e : edge[4] f32 = exp(%d)
          %n : node[4] f32 = reduce[index=src, kind=sum, to=node](%e)
          %out : node[4] f32 = neg(%n)
          return %out
        """)
    first, second = plans.kernels
    assert first.strategy == Strategy.EDGE_PARALLEL
    assert first.writes == ("n",) and second.strategy == Strategy.ROW_MAP


def test_a_kernel_reading_an_unstored_value_is_caught():
    g = GRAPHS["dense"]()
    exe, tensors = _setup(rgat.rgat, g)
    plans = lower(exe.forward)
    broken = PlanProgram(plans.name, plans.inputs, plans.kernels[1:], plans.outputs)
    with pytest.raises(PlanError, match="which no earlier kernel stored"):
        run_plans(broken, g, *tensors)


def test_show_plans_and_passes(capsys):
    assert main(["show", "rgat", "--plans", "--dataset", "aifb", "--scale", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "dst_parallel over dst rows, layout csr" in out and "stored values:" in out and " MB)" in out
    assert main(["show", "hgt", "--all", "--dataset", "mutag", "--scale", "0.1"]) == 0
    out = capsys.readouterr().out
    for stage in ("# after traced", "# after cse", "# after compact", "# after dce"):
        assert stage in out
    assert main(["show", "rgcn", "--backward", "--cost"]) == 0
    out = capsys.readouterr().out
    assert "program rgcn_backward" in out and "linear_wgrad" in out and "total" in out
    assert main(["cost", "rgat", "--datasets", "aifb", "--scale", "0.1"]) == 0
    assert "+compact" in capsys.readouterr().out
    assert main(["kernels", "hgt", "--datasets", "mutag", "--scale", "0.1", "-v"]) == 0
    out = capsys.readouterr().out
    assert "training backward:" in out and "floor" in out and "wgrad" in out


@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_show_plans_lists_every_op_a_kernel_computes(model, backward, capsys):
    """Each op of the optimised program is printed in a kernel of ``pigeon show --plans`` (HGT's
    last kernel once left out the ops behind its gated skip connection, %mul_2 and %mul_3)."""
    from pigeon.cli import find_functions, load_graph, traced_program
    from pigeon.ir.ops import Op
    from pigeon.ir.passes import differentiate, optimize
    from pigeon.runtime.layouts import graph_stats

    g = load_graph("mutag", 0.1)
    stats = graph_stats(g)
    (fn,) = find_functions(model)
    program = optimize(traced_program(fn, g, "float32"), stats)
    if backward:
        program = optimize(differentiate(program).backward, stats)
    assert main(["show", model, "--plans", "--dataset", "mutag", "--scale", "0.1"]
                + (["--backward"] if backward else [])) == 0
    printed = {line.split(" : ")[0].strip() for line in capsys.readouterr().out.splitlines() if " : " in line}
    computed = {f"%{n.name}" for n in program.nodes if n.op != Op.INPUT}
    assert computed and computed <= printed, sorted(computed - printed)
    if model == "hgt" and not backward:
        assert {"%mul_2", "%mul_3", "%out"} <= printed


def test_atomic_destination_reductions_split_the_traversal():
    text = """
        program p
          %h : node[8] f32 = input[position=0]()
          %b : global[8] f32 = input[position=1]()
          %hs : edge[8] f32 = gather[index=src, to=edge](%h)
          %m : edge[8] f32 = relu(%hs)
          %s : dst[8] f32 = reduce[index=dst, kind=mean, to=dst](%m)
          %bd : dst[8] f32 = gather[index=all, to=dst](%b)
          %out : dst[8] f32 = add(%s, %bd)
          return %out
        """
    assert [k.strategy for k in lowered(text).kernels] == [Strategy.DST_PARALLEL]
    split = lower(parse_program(textwrap.dedent(text)), dst_reductions="atomic")
    assert [k.strategy for k in split.kernels] == [Strategy.EDGE_PARALLEL, Strategy.ROW_MAP]
    assert split.kernels[0].writes == ("s",)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_atomic_destination_reductions_compute_the_same(model):
    g = GRAPHS["dense"]()
    exe, tensors = _setup(model, g)
    plans = lower(exe.forward, dst_reductions="atomic")
    _same(run_plans(plans, g, *tensors), execute(exe.forward, g, *tensors))
    if model is rgcn.rgcn:  # no softmax: every destination reduction can go atomic
        assert all(k.strategy != Strategy.DST_PARALLEL for k in plans.kernels)


def test_a_gemm_epilogue_reads_its_result_only_at_its_own_element():
    """A gate of width 1 times a wider value, a broadcast [H, 1] x [1, F] and a slice of the
    result read a GEMM's result at other elements: those ops go to other kernels. A value of the
    row that does not depend on the result (a per-type gate) is read anywhere and stays."""
    program = parse_program(textwrap.dedent("""
        program p
          %h : node[8] f64 = input[position=0]()
          %W : ntype[8,1] f64 = input[position=1]()
          %V : ntype[8,6] f64 = input[position=2]()
          %b : global[1,3] f64 = input[position=3]()
          %k : ntype[1] f64 = input[position=4]()
          %gate : node[1] f64 = linear[by=ntype](%h, %W)
          %x : node[6] f64 = linear[by=ntype](%h, %V)
          %k_n : node[1] f64 = gather[index=ntype, to=node](%k)
          %own : node[1] f64 = sigmoid(%k_n)
          %kept : node[6] f64 = mul(%own, %x)
          %scaled : node[6] f64 = mul(%gate, %kept)
          %heads : node[6,1] f64 = reshape[shape=[6,1]](%scaled)
          %bn : node[1,3] f64 = gather[index=all, to=node](%b)
          %wide : node[6,3] f64 = mul(%heads, %bn)
          %first : node[3] f64 = slice[start=0, stop=3](%x)
          %gated : node[3] f64 = tanh(%first)
          return %wide, %gated
        """))
    plans = lower(program)
    gemm_of = {k.anchor.name: {n.name for n in k.ops} for k in plans.kernels if k.strategy == Strategy.GEMM}
    assert "scaled" not in gemm_of["gate"]  # the gate would be read at every column
    assert {"own", "kept", "scaled"} <= gemm_of["x"]
    assert not {"wide", "gated"} & gemm_of["x"]  # a broadcast of the result, a slice of it
    g = GRAPHS["dense"]()
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(g.num_nodes, 8, generator=gen, dtype=torch.float64)] + [
        torch.randn(*shape, generator=gen, dtype=torch.float64)
        for shape in ((g.num_ntypes, 8, 1), (g.num_ntypes, 8, 6), (1, 3), (g.num_ntypes, 1))]
    _same(run_plans(plans, g, *tensors), execute(program, g, *tensors))


def test_an_output_view_of_a_scattered_value_is_copied_after_its_kernel():
    plans = lower(parse_program(textwrap.dedent("""
        program p
          %h : node[6] f32 = input[position=0]()
          %hs : edge[6] f32 = gather[index=src, to=edge](%h)
          %m : edge[6] f32 = relu(%hs)
          %s : dst[6] f32 = reduce[index=dst, kind=mean, to=dst](%m)
          %out : dst[2,3] f32 = reshape[shape=[2,3]](%s)
          return %out
        """)), dst_reductions="atomic")
    scatter, copy = plans.kernels
    assert scatter.strategy == Strategy.EDGE_PARALLEL and scatter.writes == ("s",)
    assert copy.strategy == Strategy.ROW_MAP and copy.writes == ("out",)


def test_an_output_read_through_a_gather_is_copied_by_a_kernel_of_its_rows():
    """A value of one global row returned on every destination: the kernel over global rows
    cannot store it per destination; a copy kernel over the destinations does."""
    program = parse_program(textwrap.dedent("""
        program p
          %c : global[2] f64 = input[position=0]()
          %s : global[2] f64 = sigmoid(%c)
          %out : dst[2] f64 = gather[index=all, to=dst](%s)
          return %out
        """))
    first, copy = lower(program).kernels
    assert (first.domain, first.writes) == (Domain.GLOBAL, ("s",))
    assert (copy.domain, copy.writes) == (Domain.DST, ("out",))
    g = GRAPHS["block"]()
    c = torch.randn(2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _same(run_plans(lower(program), g, c), execute(program, g, c))
