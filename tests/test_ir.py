"""Level-1 IR: printer goldens, the verifier, shape inference errors."""
import os
from pathlib import Path

import pytest

from pigeon.examples import hgt, rgat, rgcn
from pigeon.ir import Builder, Domain, Op, ShapeError, ValueType, VerifyError, verify
from pigeon.ir import shape_inference
from random_graphs import random_graph

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.name)
def test_printed_program_matches_golden(model):
    g = random_graph(seed=0)
    text = str(model.program(g, *model.example_inputs(g)))
    path = GOLDEN / f"{model.name}.txt"
    if os.environ.get("PIGEON_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_printing_is_stable_across_traces():
    g = random_graph(seed=0)
    args = rgat.example_inputs(g)
    first = str(rgat.rgat.program(g, *args))
    rgat.rgat._programs.clear()
    assert str(rgat.rgat.program(g, *args)) == first


def test_every_example_program_verifies():
    g = random_graph(seed=0)
    for model in (rgcn.rgcn, rgat.rgat, hgt.hgt):
        verify(model.program(g, *model.example_inputs(g)))


def _small_program():
    b = Builder("p")
    h = b.input("h", ValueType(Domain.NODE, (4,), "float64"), 0)
    w = b.input("w", ValueType(Domain.ETYPE, (4, 3), "float64"), 1)
    hs = b.add(Op.GATHER, [h], {"index": "src", "to": Domain.EDGE})
    y = b.add(Op.LINEAR, [hs, w], {"by": "etype"})
    out = b.add(Op.REDUCE, [y], {"index": "dst", "to": Domain.DST, "kind": "sum"})
    return b.build([out])


def test_builder_keeps_what_was_written_duplicates_and_dead_values_included():
    b = Builder("p")
    h = b.input("h", ValueType(Domain.NODE, (4,), "float64"), 0)
    first, second = b.add(Op.EXP, [h], hint="e"), b.add(Op.EXP, [h], hint="e")
    b.add(Op.NEG, [h], hint="unused")
    out = b.add(Op.ADD, [first, second], hint="out")
    p = verify(b.build([out]))
    assert [(n.name, n.op) for n in p.nodes] == [("h", Op.INPUT), ("e", Op.EXP), ("e_1", Op.EXP),
                                                  ("unused", Op.NEG), ("out", Op.ADD)]
    assert p.node("out").args == ("e", "e_1") and p.users["unused"] == ()
    assert shape_inference.run(p) == p


def test_verifier_accepts_a_valid_program_and_reports_broken_ones():
    p = verify(_small_program())
    nodes = list(p.nodes)
    bad_type = p.__class__(p.name, tuple(nodes[:-1] + [nodes[-1].replace(type=ValueType(Domain.NODE, (3,), "float64"))]), p.outputs)
    with pytest.raises(VerifyError, match="has type node\\[3\\] f64 but its op gives dst\\[3\\] f64"):
        verify(bad_type)
    out_of_order = p.__class__(p.name, (nodes[0], nodes[1], nodes[3], nodes[2], nodes[4]), p.outputs)
    with pytest.raises(VerifyError, match="uses %h_src before it is defined|uses %gather before it is defined"):
        verify(out_of_order)
    duplicate = p.__class__(p.name, tuple(nodes + [nodes[-1]]), p.outputs)
    with pytest.raises(VerifyError, match="defined twice"):
        verify(duplicate)
    with pytest.raises(VerifyError, match="output %nope is not defined"):
        verify(p.__class__(p.name, p.nodes, ("nope",)))


def test_program_dag_and_users():
    p = _small_program()
    dag = p.dag()
    assert set(dag.successors("h")) == {p.nodes[2].name}
    assert p.users["w"] == (p.nodes[3].name,)


@pytest.mark.parametrize("op,types,attrs,message", [
    (Op.ADD, [ValueType(Domain.EDGE, (4,)), ValueType(Domain.NODE, (4,))], {}, "different domains"),
    (Op.ADD, [ValueType(Domain.EDGE, (4,)), ValueType(Domain.EDGE, (3,))], {}, "do not broadcast"),
    (Op.MUL, [ValueType(Domain.EDGE, (4,), "float32"), ValueType(Domain.EDGE, (4,), "float64")], {}, "different dtypes"),
    (Op.LINEAR, [ValueType(Domain.EDGE, (4,)), ValueType(Domain.ETYPE, (5, 3))], {"by": "etype"}, "4 features but the weight expects 5"),
    (Op.LINEAR, [ValueType(Domain.NODE, (4,)), ValueType(Domain.ETYPE, (4, 3))], {"by": "etype"}, "cannot move etype rows to node"),
    (Op.LINEAR, [ValueType(Domain.EDGE, (4,)), ValueType(Domain.NTYPE, (4, 3))], {"by": "etype"}, "needs a etype weight"),
    (Op.GATHER, [ValueType(Domain.EDGE, (4,))], {"index": "src", "to": Domain.EDGE}, "cannot move edge rows"),
    (Op.REDUCE, [ValueType(Domain.EDGE, (4,))], {"index": "dst", "to": Domain.DST, "kind": "median"}, "reduce kind"),
    (Op.EDGE_SOFTMAX, [ValueType(Domain.NODE, (4,))], {}, "along dst normalises edge values"),
    (Op.RESHAPE, [ValueType(Domain.EDGE, (4,))], {"shape": (3, 2)}, "cannot reshape"),
    (Op.CONCAT, [ValueType(Domain.EDGE, (2, 4)), ValueType(Domain.EDGE, (3, 4))], {}, "differ before the last axis"),
    (Op.SUM_TO, [ValueType(Domain.EDGE, (2, 4))], {"shape": (3,)}, "not broadcast"),
])
def test_shape_inference_errors(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        shape_inference.infer(op, tuple(types), attrs)


@pytest.mark.parametrize("op,types,attrs,expected", [
    (Op.DOT, [ValueType(Domain.EDGE, (2, 8)), ValueType(Domain.EDGE, (2, 8))], {}, (2, 1)),
    (Op.MUL, [ValueType(Domain.EDGE, (2, 1)), ValueType(Domain.EDGE, (2, 8))], {}, (2, 8)),
    (Op.LINEAR, [ValueType(Domain.EDGE, (2, 8)), ValueType(Domain.ETYPE, (2, 8, 4))], {"by": "etype"}, (2, 4)),
    (Op.LINEAR, [ValueType(Domain.EDGE, (3,)), ValueType(Domain.ETYPE, (5, 3))], {"by": "etype", "transpose": True}, (5,)),
    (Op.LINEAR_WGRAD, [ValueType(Domain.EDGE, (2, 8)), ValueType(Domain.EDGE, (2, 4))], {"by": "etype", "batched": True}, (2, 8, 4)),
    (Op.CONCAT, [ValueType(Domain.NODE, (2, 4)), ValueType(Domain.NODE, (2, 3))], {}, (2, 7)),
    (Op.SUM_TO, [ValueType(Domain.EDGE, (2, 4))], {"shape": (2, 1)}, (2, 1)),
])
def test_shape_inference_results(op, types, attrs, expected):
    assert shape_inference.infer(op, tuple(types), attrs).shape == expected


def test_shape_inference_pass_rederives_types():
    p = _small_program()
    assert shape_inference.run(p) == p
