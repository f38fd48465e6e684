"""Level-1 passes: goldens on hand-written programs, autodiff against torch autograd, the cost
model's account of the rewrites, and numerics with each pass on and off."""
import textwrap

import pytest
import torch

import pigeon
import pigeon.datasets
from pigeon.examples import hgt, rgat, rgcn
from pigeon.ir.cost import GraphStats, program_cost
from pigeon.ir.parser import parse_program
from pigeon.ir.passes import PASS_NAMES, compact, cse, dce, differentiate, linear_merge, linear_reorder, optimize
from pigeon.ir.printer import format_program
from pigeon.ir.verify import verify
from pigeon.runtime.layouts import graph_stats
from pigeon.runtime.reference import execute
from random_graphs import random_graph

DENSE = GraphStats(num_nodes=1000, num_dst_nodes=1000, num_edges=50000, num_compact=5000,
                   num_compact_dst=5000, num_etypes=10, num_ntypes=3)
SPARSE = GraphStats(num_nodes=1000, num_dst_nodes=1000, num_edges=600, num_compact=600,
                    num_compact_dst=600, num_etypes=500, num_ntypes=3)


def program(text):
    return verify(parse_program(textwrap.dedent(text)))


def assert_program(actual, expected_text):
    assert format_program(verify(actual)) == textwrap.dedent(expected_text).lstrip("\n")


def test_cse_merges_equal_values():
    p = program("""
        program p
          %h : node[4] f32 = input[position=0]()
          %a : edge[4] f32 = gather[index=src, to=edge](%h)
          %b : edge[4] f32 = gather[index=src, to=edge](%h)
          %c : edge[4] f32 = add(%a, %b)
          return %c
        """)
    assert_program(cse.run(p), """
        program p
          %h : node[4] f32 = input[position=0]()
          %a : edge[4] f32 = gather[index=src, to=edge](%h)
          %c : edge[4] f32 = add(%a, %a)
          return %c
        """)


def test_dce_drops_dead_values_and_keeps_inputs():
    p = program("""
        program p
          %h : node[4] f32 = input[position=0]()
          %w : global[4] f32 = input[position=1]()
          %a : node[4] f32 = exp(%h)
          %b : node[4] f32 = neg(%h)
          return %b
        """)
    assert_program(dce.run(p), """
        program p
          %h : node[4] f32 = input[position=0]()
          %w : global[4] f32 = input[position=1]()
          %b : node[4] f32 = neg(%h)
          return %b
        """)


REORDER_INPUT = """
    program p
      %h : node[8] f32 = input[position=0]()
      %W : etype[8,6] f32 = input[position=1]()
      %a : etype[2,3] f32 = input[position=2]()
      %hd : edge[8] f32 = gather[index=dst, to=edge](%h)
      %z : edge[6] f32 = linear[by=etype](%hd, %W)
      %zh : edge[2,3] f32 = reshape[shape=[2,3]](%z)
      %ae : edge[2,3] f32 = gather[index=etype, to=edge](%a)
      %s : edge[2,1] f32 = dot(%zh, %ae)
      return %s
    """


def test_linear_reorder_moves_the_vector_into_the_weight():
    assert_program(linear_reorder.run(program(REORDER_INPUT), DENSE), """
        program p
          %h : node[8] f32 = input[position=0]()
          %W : etype[8,6] f32 = input[position=1]()
          %a : etype[2,3] f32 = input[position=2]()
          %hd : edge[8] f32 = gather[index=dst, to=edge](%h)
          %W_heads : etype[8,2,3] f32 = reshape[shape=[8,2,3]](%W)
          %W_a : etype[8,2,1] f32 = dot(%W_heads, %a)
          %W_a_1 : etype[8,2] f32 = reshape[shape=[8,2]](%W_a)
          %s_linear : edge[2] f32 = linear[by=etype](%hd, %W_a_1)
          %s : edge[2,1] f32 = reshape[shape=[2,1]](%s_linear)
          return %s
        """)


def test_linear_reorder_needs_the_cost_model_to_agree():
    p = program(REORDER_INPUT)
    assert linear_reorder.run(p, SPARSE) == p  # 500 relations' weight products cost more than they save
    assert linear_reorder.run(p, None) == p


MERGE_INPUT = """
    program p
      %h : node[16] f32 = input[position=0]()
      %A : ntype[16,{mid}] f32 = input[position=1]()
      %B : global[{mid},{out}] f32 = input[position=2]()
      %y : node[{mid}] f32 = linear[by=ntype](%h, %A)
      %z : node[{out}] f32 = linear[by=all](%y, %B)
      return %z
    """


def test_linear_merge_when_it_saves_flops():
    assert_program(linear_merge.run(program(MERGE_INPUT.format(mid=16, out=4)), DENSE), """
        program p
          %h : node[16] f32 = input[position=0]()
          %A : ntype[16,16] f32 = input[position=1]()
          %B : global[16,4] f32 = input[position=2]()
          %A_B : ntype[16,4] f32 = linear[by=all](%A, %B)
          %z : node[4] f32 = linear[by=ntype](%h, %A_B)
          return %z
        """)
    narrow = program(MERGE_INPUT.format(mid=2, out=64))  # 16*2 + 2*64 FLOPs per row beat 16*64
    assert linear_merge.run(narrow, DENSE) == narrow


COMPACT_INPUT = """
    program p
      %h : node[8] f32 = input[position=0]()
      %W : etype[8,8] f32 = input[position=1]()
      %hs : edge[8] f32 = gather[index=src, to=edge](%h)
      %z : edge[8] f32 = linear[by=etype](%hs, %W)
      %s : edge[8] f32 = edge_softmax(%z)
      %y : edge[8] f32 = mul(%s, %z)
      return %y
    """


def test_compact_materialises_per_src_etype_pair():
    assert_program(compact.run(program(COMPACT_INPUT), DENSE), """
        program p
          %h : node[8] f32 = input[position=0]()
          %W : etype[8,8] f32 = input[position=1]()
          %hs_compact : compact[8] f32 = gather[index=compact_src, to=compact](%h)
          %z_compact : compact[8] f32 = linear[by=etype](%hs_compact, %W)
          %z : edge[8] f32 = gather[index=compact, to=edge](%z_compact)
          %s : edge[8] f32 = edge_softmax(%z)
          %y : edge[8] f32 = mul(%s, %z)
          return %y
        """)


def test_compact_leaves_graphs_without_shared_pairs_alone():
    p = program(COMPACT_INPUT)
    assert compact.run(p, SPARSE) == p


def test_compact_on_the_dst_side():
    p = program(COMPACT_INPUT.replace("index=src", "index=dst"))
    assert "gather[index=compact_dst_node, to=compact_dst](%h)" in format_program(compact.run(p, DENSE))


def _example(model, g, dtype=torch.float64):
    args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in model.example_inputs(g)]
    params = dict(model._bind(g, args, {}))
    return model.program(g, *args), params


@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.name)
@pytest.mark.parametrize("optimised", [False, True])
def test_autodiff_matches_torch_autograd(model, optimised):
    g = random_graph(num_nodes=30, num_edges=600, num_etypes=8, seed=5)
    p, params = _example(model, g)
    if optimised:
        p = optimize(p, graph_stats(g))
    tensors = [params[n.name].clone().requires_grad_() for n in p.inputs]
    outs = execute(p, g, *tensors)
    upstream = [torch.randn_like(o) for o in outs]
    torch.autograd.backward(outs, upstream)
    grad = differentiate(p)
    verify(grad.forward)
    verify(grad.backward)
    forward = execute(grad.forward, g, *[t.detach() for t in tensors])
    torch.testing.assert_close(forward[: grad.num_outputs], tuple(o.detach() for o in outs))
    residuals = forward[grad.num_outputs:]
    grads = execute(grad.backward, g, *residuals, *upstream)
    names = [n.name for n in p.inputs]
    assert set(grad.wrt) == {n for n, t in zip(names, tensors) if t.grad is not None}
    for name, value in zip(grad.wrt, grads):
        torch.testing.assert_close(value, tensors[names.index(name)].grad, rtol=1e-10, atol=1e-10, msg=name)


def test_autodiff_of_every_dsl_op():
    from test_dsl import kitchen_sink
    g = random_graph(num_etypes=20, seed=11)
    args = [torch.randn(g.num_nodes, 5, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64),
            torch.randn(g.num_etypes, 3, dtype=torch.float64), torch.randn(36, dtype=torch.float64)]
    p = kitchen_sink.program(g, *args)
    tensors = [a.clone().requires_grad_() for a in args]
    (out,) = execute(p, g, *tensors)
    up = torch.randn_like(out)
    out.backward(up)
    grad = differentiate(p)
    residuals = execute(grad.forward, g, *args)[1:]
    for value, t in zip(execute(grad.backward, g, *residuals, up), tensors):
        torch.testing.assert_close(value, t.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("disabled", [(name,) for name in PASS_NAMES] + [PASS_NAMES])
@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.name)
def test_each_pass_off_gives_the_same_numbers(model, disabled):
    g = random_graph(num_nodes=30, num_edges=1200, num_etypes=6, seed=3)
    _, params = _example(model, g)

    def run():
        tensors = {k: v.clone().requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in params.items()}
        out = model(g, **tensors)
        out.backward(torch.ones_like(out))
        return out.detach(), {k: v.grad for k, v in tensors.items() if isinstance(v, torch.Tensor)}

    out, grads = run()
    with pigeon.disable_passes(*disabled):
        out_off, grads_off = run()
    torch.testing.assert_close(out, out_off, rtol=1e-10, atol=1e-10)
    for k in grads:
        torch.testing.assert_close(grads[k], grads_off[k], rtol=1e-10, atol=1e-10, msg=k)


def test_rewrites_apply_on_a_graph_where_they_pay():
    g = random_graph(num_nodes=30, num_edges=1200, num_etypes=6, seed=3)
    forward = {m.name: str(m.executable(g, *m.example_inputs(g)).forward) for m in (rgcn.rgcn, rgat.rgat, hgt.hgt)}
    assert "to=compact](%h)" in forward["rgcn"]
    assert "to=compact](%h)" in forward["rgat"] and "%weight_heads" in forward["rgat"]
    assert "to=compact_dst](%h)" in forward["rgat"]
    assert "to=compact](%k)" in forward["hgt"] and "to=compact](%v)" in forward["hgt"]


@pytest.mark.parametrize("dataset", ["aifb", "mutag"])
@pytest.mark.parametrize("model", [rgat.rgat, hgt.hgt], ids=lambda m: m.name)
def test_cost_model_shows_the_savings(dataset, model):
    g = pigeon.datasets.synthetic(dataset, scale=0.05).graph
    p = model.program(g, *model.example_inputs(g, feats=64, heads=2))
    stats = graph_stats(g)
    before, after = program_cost(p, stats).total, program_cost(optimize(p, stats), stats).total
    assert after.flops < 0.75 * before.flops and after.bytes < 0.9 * before.bytes


def test_unknown_pass_names_are_refused():
    with pytest.raises(ValueError, match="unknown passes \\['compaction'\\]"):
        with pigeon.disable_passes("compaction"):
            pass
