"""Differential fuzzing: random DSL programs on random graphs, every back end that runs here
against the naive row-by-row interpreter (tests/naive.py), forward and backward, in float64.

A program is drawn from a grammar of the DSL's ops (typed and global linears, elementwise
functions, dot, softmax, every aggregation, concat, reshape, broadcasting, ``where``), written
out as Python source and compiled with ``@pigeon.compile``, so the tracer is fuzzed too. Each
program then runs on several drawn graphs (1 node, no edges, empty relations, isolated nodes,
self loops, multi-edges, hubs, 1,000 relations, bipartite blocks): the level-1 program it
traces is interpreted naively, and its outputs and the gradients of its inputs (torch autograd
through the loops) are the oracle for the reference and C++ back ends; small cases also pass
``torch.autograd.gradcheck`` on the C++ back end, and a share of programs runs its kernels
through the CUDA-on-CPU harness.

``pytest -q`` runs a short fixed-seed profile; ``pytest -m fuzz`` the long one (at least 2,000
(program, graph) pairs). Failing examples that Hypothesis shrinks become REGRESSIONS below
(a strict xfail naming the cause until the fix is in).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import shutil
import tempfile
import time
import zlib
from typing import Any, Callable, Iterator

import pytest
import torch

pytest.importorskip("hypothesis", reason="the fuzzer needs Hypothesis (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import naive  # noqa: E402
import pigeon  # noqa: E402
import pigeon.lang  # noqa: E402
from pigeon.ir.passes import PASS_NAMES  # noqa: E402
from pigeon.runtime import cpp_compiler  # noqa: E402
from random_graphs import EDGE_CASES, edge_case_graph  # noqa: E402

HAS_WHERE = hasattr(pigeon.lang, "where")  # the grammar's `where` productions need it
BACKENDS = ("reference", "cpp") if cpp_compiler.find_compiler() is not None else ("reference",)

NEWER_UNARY = ("abs", "elu", "softplus", "clamp")  # in the grammar where pigeon.lang has them

DEGREE_BOUND = 300.0  # no drawn graph has a node with more incoming edges
SQUASH_ABOVE = 1e3  # a value that may grow past this goes through tanh first
TOLERANCE = 1e-7  # rtol, and atol per unit of the largest naive magnitude (float64 throughout)


# ----------------------------------------------------------------------------------------
# programs


@dataclasses.dataclass(frozen=True)
class Expr:
    """Generated source of one expression: ``rowed`` is False for a global (unrowed) value;
    ``bound`` a rough bound of its magnitude, to keep exp and powers finite."""

    text: str
    rowed: bool
    bound: float


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A tensor argument: its role ("node", "edge", "etype", "ntype", "global") and feature shape."""

    name: str
    role: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class FuzzProgram:
    """A generated DSL function: its source text, its tensor arguments, and the passes it runs
    without."""

    source: str
    inputs: tuple[InputSpec, ...]
    disabled: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{i.name}: {i.role}{list(i.shape)}" for i in self.inputs)
        return f"FuzzProgram(disabled={self.disabled}, inputs=[{args}], source=\n{self.source})"

    def compiled(self) -> pigeon.CompiledFunction:
        """The source run through ``@pigeon.compile`` (written to a file, so that trace errors
        can quote its lines)."""
        path = os.path.join(_source_dir(), f"fuzzed_{abs(hash(self.source)):x}.py")
        with open(path, "w") as f:
            f.write(self.source)
        namespace: dict[str, Any] = {name: getattr(pigeon.lang, name) for name in pigeon.lang.__all__}
        exec(compile(self.source, path, "exec"), namespace)
        return pigeon.compile(namespace["fuzzed"])


@functools.lru_cache(maxsize=None)
def _source_dir() -> str:
    return tempfile.mkdtemp(prefix="pigeon-fuzz-")


SHAPES = [(2,), (1,), (3,), (4,), (2, 3), (2, 1), (3, 2), (1, 2), (2, 2)]
LEAF_PREFIX = {"node": "h", "edge": "w", "etype": "r", "ntype": "t", "global": "c"}


def broadcast_parts(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes that broadcast to ``shape`` without growing it (``shape`` itself first)."""
    parts = [shape, (1,)]
    if len(shape) == 2:
        parts += [(shape[1],), (1, shape[1]), (shape[0], 1), (1, 1)]
    return list(dict.fromkeys(parts))


def reshape_sources(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Other shapes of rank 1 or 2 with as many elements as ``shape``."""
    n = math.prod(shape)
    candidates = [(n,)] + [(a, n // a) for a in range(1, n + 1) if n % a == 0]
    return [s for s in candidates if s != shape]


class ProgramWriter:
    """Draws one DSL function from the grammar, statement by statement."""

    def __init__(self, draw: Callable[[Any], Any], with_where: bool):
        self.draw = draw
        self.with_where = with_where
        self.inputs: list[InputSpec] = []
        self.lines: list[str] = []
        # values set so far: name -> (shape, bound), by where they live
        self.node_values: dict[str, tuple[tuple[int, ...], float]] = {}
        self.edge_values: dict[str, tuple[tuple[int, ...], float]] = {}
        self.dst_values: dict[str, tuple[tuple[int, ...], float]] = {}

    def pick(self, options: list[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def input(self, role: str, shape: tuple[int, ...]) -> str:
        same = [i.name for i in self.inputs if i.role == role and i.shape == shape]
        if same and self.draw(st.booleans()):
            return self.pick(same)
        name = f"{LEAF_PREFIX[role]}{sum(i.role == role for i in self.inputs)}"
        self.inputs.append(InputSpec(name, role, shape))
        return name

    # the grammar: expr(ctx, shape, depth, rowed) with ctx "node", "edge" or "dst" -------------

    def expr(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None = None) -> Expr:
        kinds = ["leaf"]
        if depth > 0:
            kinds += ["unary", "binary", "scalar", "linear", "reshape"]
            if shape[-1] == 1:
                kinds.append("dot")
            if shape[-1] >= 2:
                kinds.append("concat")
            if rowed is not False and ctx == "edge":
                kinds.append("softmax")
            if rowed is not False and ctx == "dst":
                kinds += ["aggregate", "aggregate"]
            if self.with_where and rowed is not False:
                kinds.append("where")
        kind = self.pick(kinds)
        e = self.leaf(ctx, shape, rowed) if kind == "leaf" else getattr(self, kind)(ctx, shape, depth - 1, rowed)
        if e.bound > SQUASH_ABOVE:
            return Expr(f"tanh({e.text})", e.rowed, 1.0)
        return e

    def leaf(self, ctx: str, shape: tuple[int, ...], rowed: bool | None) -> Expr:
        def values(table: dict, text: str) -> list[tuple[str, float]]:
            return [(text.format(name), bound) for name, (s, bound) in table.items() if s == shape]

        options: list[tuple[str, Any]] = []
        if rowed is not True:
            options.append(("global", None))
        if rowed is not False:
            if ctx == "edge":
                options += [("node_src", None), ("node_dst", None), ("edge_input", None), ("typed", "e.etype"),
                            ("typed", "e.src.ntype"), ("typed", "e.dst.ntype")]
                options += [("value", v) for v in values(self.edge_values, "e.{}")]
                options += [("value", v) for v in values(self.node_values, "e.src.{}")]
                options += [("value", v) for v in values(self.node_values, "e.dst.{}")]
                options += [("value", v) for v in values(self.dst_values, "e.dst.{}")]
                if shape == (1,):
                    options += [("value", (degree, DEGREE_BOUND)) for degree in ("e.dst_degree", "e.dst_etype_degree")]
            else:
                options += [("node_n", None), ("typed", "n.ntype")]
                options += [("value", v) for v in values(self.node_values, "n.{}")]
                if ctx == "dst":
                    options += [("value", v) for v in values(self.dst_values, "n.{}")]
        computed = [o for o in options if o[0] == "value"]
        kind, arg = self.pick(computed if computed and self.draw(st.booleans()) else options)
        if kind == "value":
            return Expr(arg[0], True, arg[1])
        if kind == "global":
            return Expr(self.input("global", shape), False, 2.0)
        if kind == "typed":
            role = "etype" if arg == "e.etype" else "ntype"
            return Expr(f"{self.input(role, shape)}[{arg}]", True, 2.0)
        if kind == "edge_input":
            return Expr(f"{self.input('edge', shape)}[e]", True, 2.0)
        index = {"node_src": "e.src", "node_dst": "e.dst", "node_n": "n"}[kind]
        return Expr(f"{self.input('node', shape)}[{index}]", True, 2.0)

    def unary(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        fn = self.pick(["tanh", "relu", "leaky_relu", "sigmoid", "gelu", "exp", "log", "sqrt", "neg",
                        "square", "cube", "power", "two_to_the"] + [f for f in NEWER_UNARY if hasattr(pigeon.lang, f)])
        x = self.expr(ctx, shape, depth, rowed)
        if fn in ("tanh", "sigmoid"):
            return Expr(f"{fn}({x.text})", x.rowed, 1.0)
        if fn in ("relu", "gelu", "abs"):
            return Expr(f"{fn}({x.text})", x.rowed, x.bound)
        if fn == "elu":
            return Expr(f"elu({x.text}, {self.pick([1.0, 0.5])})", x.rowed, x.bound)
        if fn == "softplus":
            beta, threshold = self.pick([(1.0, 20.0), (2.0, 1.0)])  # the second switches to x often
            return Expr(f"softplus({x.text}, {beta}, {threshold})", x.rowed, x.bound + 1.0)
        if fn == "clamp":
            bounds = self.pick(["-0.5, 0.8", "min=0.2", "max=-0.1"])
            return Expr(f"clamp({x.text}, {bounds})", x.rowed, x.bound)
        if fn == "leaky_relu":
            slope = self.pick([0.2, 0.01, 1.5])
            return Expr(f"leaky_relu({x.text}, {slope})", x.rowed, x.bound * 1.5)
        if fn == "neg":
            return Expr(f"(-{x.text})", x.rowed, x.bound)
        if fn in ("exp", "two_to_the"):
            text = x.text if x.bound <= 4.0 else f"tanh({x.text})"
            bound = math.exp(x.bound) if text == x.text else math.e
            return Expr(f"exp({text})" if fn == "exp" else f"(2.0 ** {text})", x.rowed, bound)
        if fn == "square":
            return Expr(f"({x.text} ** 2.0)", x.rowed, x.bound ** 2)
        if fn == "cube":
            return Expr(f"({x.text} ** 3)", x.rowed, x.bound ** 3)
        low, text, high = self.positive(x)
        if fn == "log":
            return Expr(f"log({text})", x.rowed, max(abs(math.log(low)), math.log(high)))
        if fn == "sqrt":
            return Expr(f"sqrt({text})", x.rowed, math.sqrt(high))
        c = self.pick([0.5, -1.5, 1.5])
        return Expr(f"({text} ** {c})", x.rowed, max(low ** c, high ** c))

    def positive(self, x: Expr) -> tuple[float, str, float]:
        """``x`` made positive: (lower bound, text, upper bound)."""
        guard = self.pick(["square", "sigmoid", "exp"])
        if guard == "square":
            return 0.5, f"({x.text} * {x.text} + 0.5)", x.bound ** 2 + 0.5
        if guard == "sigmoid":
            return 0.25, f"(sigmoid({x.text}) + 0.25)", 1.25
        return math.exp(-1), f"exp(tanh({x.text}))", math.e

    def scalar(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        form, c = self.pick([("{x} * {c}", 0.5), ("{x} + {c}", 1.0), ("{c} - {x}", 0.5), ("{c} * {x}", -1.5),
                             ("{x} / {c}", 4.0), ("{x} - {c}", 2.0), ("{c} + {x}", -0.5), ("{c} / {p}", 2.0)])
        x = self.expr(ctx, shape, depth, rowed)
        if "{p}" in form:
            low, text, _ = self.positive(x)
            return Expr("(" + form.format(c=c, p=text) + ")", x.rowed, c / low)
        bound = x.bound * abs(c) if "*" in form else x.bound / c if "/" in form else x.bound + abs(c)
        return Expr("(" + form.format(c=c, x=x.text) + ")", x.rowed, bound)

    def pair(self, ctx: str, shapes: tuple[tuple[int, ...], tuple[int, ...]], depth: int,
             rowed: bool | None) -> tuple[Expr, Expr]:
        """Two operands; at least one rowed if ``rowed``, both global if ``rowed is False``."""
        first = self.draw(st.booleans()) if rowed else True
        a = self.expr(ctx, shapes[0], depth, rowed if first else None)
        b = self.expr(ctx, shapes[1], depth, None if first and rowed else rowed)
        return a, b

    def operand_shapes(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Two shapes that broadcast to ``shape``."""
        if len(shape) == 2 and self.draw(st.integers(0, 4)) == 0:
            pair = ((shape[0], 1), self.pick([(1, shape[1]), (shape[1],)]))  # an outer product
        else:
            pair = (shape, self.pick(broadcast_parts(shape)))
        return pair if self.draw(st.booleans()) else (pair[1], pair[0])

    def binary(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        op = self.pick(["+", "*", "-", "/"] + [f for f in ("minimum", "maximum") if hasattr(pigeon.lang, f)])
        shapes = self.operand_shapes(shape)
        if op in ("minimum", "maximum"):
            a, b = self.pair(ctx, shapes, depth, rowed)
            return Expr(f"{op}({a.text}, {b.text})", a.rowed or b.rowed, max(a.bound, b.bound))
        if op == "/":
            a, b = self.pair(ctx, shapes, depth, rowed)
            if b.rowed and ctx == "edge" and shapes[1] == (1,) and self.draw(st.booleans()):
                return Expr(f"({a.text} / e.dst_degree)", True, a.bound)
            low, text, _ = self.positive(b)
            return Expr(f"({a.text} / {text})", a.rowed or b.rowed, a.bound / low)
        a, b = self.pair(ctx, shapes, depth, rowed)
        bound = a.bound * b.bound if op == "*" else a.bound + b.bound
        return Expr(f"({a.text} {op} {b.text})", a.rowed or b.rowed, bound)

    def linear(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        selectors = ["global"]
        if rowed is not False:
            selectors += ["e.etype", "e.src.ntype", "e.dst.ntype"] if ctx == "edge" else ["n.ntype"]
        by = self.pick(selectors)
        k = self.draw(st.integers(1, 4))
        batch = shape[:-1] if shape[:-1] and self.draw(st.booleans()) else ()
        weight_shape = batch + (k, shape[-1])
        x = self.expr(ctx, shape[:-1] + (k,), depth, rowed if by == "global" else True)
        if by == "global":
            weight = self.input("global", weight_shape)
        else:
            weight = f"{self.input('etype' if by == 'e.etype' else 'ntype', weight_shape)}[{by}]"
        return Expr(f"linear({x.text}, {weight})", x.rowed, x.bound * k * 2.0)

    def dot(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        k = self.draw(st.integers(1, 4))
        a, b = self.pair(ctx, self.operand_shapes(shape[:-1] + (k,)), depth, rowed)
        return Expr(f"dot({a.text}, {b.text})", a.rowed or b.rowed, a.bound * b.bound * k)

    def reshape(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        x = self.expr(ctx, self.pick(reshape_sources(shape)), depth, rowed)
        return Expr(f"{x.text}.reshape({', '.join(map(str, shape))})", x.rowed, x.bound)

    def concat(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        first = self.draw(st.integers(1, shape[-1] - 1))
        widths = [first, shape[-1] - first]
        if widths[1] >= 2 and self.draw(st.booleans()):
            widths[1:] = [1, widths[1] - 1]
        parts = [self.expr(ctx, shape[:-1] + (widths[0],), depth, rowed)]
        for w in widths[1:]:  # concat does not broadcast: every part lives where the first does
            parts.append(self.expr(ctx, shape[:-1] + (w,), depth, parts[0].rowed))
        return Expr(f"concat({', '.join(p.text for p in parts)})", parts[0].rowed, max(p.bound for p in parts))

    def softmax(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        x = self.expr(ctx, shape, depth, True)
        within = ', by="etype"' if self.draw(st.integers(0, 2)) == 0 else ""  # within each relation
        return Expr(f"softmax({x.text}{within})", True, 1.0)

    def aggregate(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        kind = self.pick(["sum", "mean", "max"])
        x = self.expr("edge", shape, depth, True)
        bound = x.bound * DEGREE_BOUND if kind == "sum" else x.bound
        if self.draw(st.integers(0, 2)) == 0:  # within each relation (its softmaxes too), then across
            across = self.pick(["sum", "mean", "max", "min"])
            bound = x.bound * DEGREE_BOUND if "sum" in (kind, across) else x.bound
            return Expr(f"{across}({kind}({x.text} for e in r.incoming_edges()) for r in n.relations())", True, bound)
        return Expr(f"{kind}({x.text} for e in n.incoming_edges())", True, bound)

    def where(self, ctx: str, shape: tuple[int, ...], depth: int, rowed: bool | None) -> Expr:
        """``where(cond, a, b)``: conditions on ids, or on values with a margin, so that values
        that are equal but computed in another order cannot flip a comparison."""
        kinds = ["value", "value_pair", "is_zero"] + (["etype", "src_is_dst", "ntype_pair", "ntype"] if ctx == "edge"
                                                       else ["ntype"])
        kind = self.pick(kinds)
        cmp = self.pick([">", "<", ">=", "<=", "!="])
        cond_shape = self.pick(broadcast_parts(shape))
        if kind == "value":
            x = self.expr(ctx, cond_shape, depth, None)
            cond = f"({x.text} {cmp} {self.pick([0.3, -0.3, 0.7])})"
        elif kind == "value_pair":
            x, y = self.pair(ctx, (cond_shape, self.pick(broadcast_parts(cond_shape))), depth, None)
            cond = f"({x.text} {cmp} {y.text} + {self.pick([0.3, -0.3])})"
        elif kind == "is_zero":
            x = self.expr(ctx, cond_shape, depth, None)
            cond = f"(relu({x.text} - 0.3) == 0.0)"
        elif kind == "etype":
            cond = f"(e.etype {self.pick(['==', '!=', '<', '>='])} {self.draw(st.integers(0, 2))})"
        elif kind == "src_is_dst":
            cond = self.pick(["(e.src == e.dst)", "(e.src != e.dst)"])
        elif kind == "ntype_pair":
            cond = "(e.src.ntype == e.dst.ntype)"
        else:
            node = "e.src" if ctx == "edge" else "n"
            cond = f"({node}.ntype {self.pick(['==', '!='])} {self.draw(st.integers(0, 1))})"
        a = self.expr(ctx, shape, depth, True)
        if self.draw(st.integers(0, 3)) == 0:
            b = Expr(str(self.pick([0.0, 1.0, -2.0])), False, 2.0)
        else:
            b = self.expr(ctx, self.pick(broadcast_parts(shape)), depth, None)
        a, b = (a, b) if self.draw(st.booleans()) else (b, a)
        return Expr(f"where({cond}, {a.text}, {b.text})", True, max(a.bound, b.bound))

    # statements -----------------------------------------------------------------------------

    def assign(self, table: dict, target: str, name: str, ctx: str, min_depth: int = 0) -> None:
        shape = self.pick(SHAPES)
        e = self.expr(ctx, shape, self.draw(st.integers(min_depth, 4)))
        self.lines.append(f"        {target}.{name} = {e.text}")
        table[name] = (shape, e.bound)

    def program(self) -> FuzzProgram:
        body: list[str] = []
        if self.draw(st.integers(0, 2)) == 0:
            self.lines = ["    for n in g.nodes():"]
            for i in range(self.draw(st.integers(1, 2))):
                self.assign(self.node_values, "n", f"a{i}", "node")
            body += self.lines
        rounds = self.draw(st.integers(1, 2))
        for round_ in range(rounds):
            self.lines = ["    for e in g.edges():"]
            for i in range(self.draw(st.integers(1, 3))):
                self.assign(self.edge_values, "e", f"m{round_}{i}", "edge")
            body += self.lines
            self.lines = ["    for n in g.dst_nodes():"]
            count = self.draw(st.integers(1, 2))
            for i in range(count):  # the returned value is built deeper, over the values before it
                last = round_ == rounds - 1 and i == count - 1
                self.assign(self.dst_values, "n", f"o{round_}{i}", "dst", 2 if last else 0)
            body += self.lines
        outputs = [f"n.{list(self.dst_values)[-1]}"]
        disabled = tuple(p for p in PASS_NAMES if self.draw(st.integers(0, 5)) == 0)
        extra = self.draw(st.sampled_from(["none", "none", "dst", "edge"]))
        if extra == "dst":
            outputs.insert(0, f"n.{self.pick(list(self.dst_values))}")
        elif extra == "edge":
            outputs.append(f"e.{self.pick(list(self.edge_values))}")
        args = ", ".join(["g"] + [i.name for i in self.inputs])
        source = "\n".join([f"def fuzzed({args}):", *body, f"    return {', '.join(outputs)}", ""])
        return FuzzProgram(source, tuple(self.inputs), disabled)


@st.composite
def programs(draw: Callable[[Any], Any]) -> FuzzProgram:
    """A random DSL function of the grammar above."""
    return ProgramWriter(draw, HAS_WHERE).program()


# ----------------------------------------------------------------------------------------
# graphs


@st.composite
def graphs(draw: Callable[[Any], Any], max_nodes: int = 12, max_edges: int = 40) -> pigeon.Graph:
    """A small typed multigraph of drawn edges, or one of the named edge cases of random_graphs
    (drawn with a seed)."""
    if draw(st.integers(0, 3)) == 0:
        return edge_case_graph(draw(st.sampled_from(EDGE_CASES)), draw(st.integers(0, 2**16)))
    num_nodes = draw(st.integers(1, max_nodes))
    num_dst = draw(st.sampled_from([num_nodes, num_nodes, num_nodes, draw(st.integers(0, num_nodes))]))
    num_etypes = draw(st.sampled_from([1, 2, 3, 5, 1000]))
    num_ntypes = draw(st.integers(1, 3))
    edge = st.tuples(st.integers(0, num_nodes - 1), st.integers(0, max(num_dst - 1, 0)),
                     st.integers(0, min(num_etypes, 8) - 1 if num_etypes < 1000 else 999))
    edges = draw(st.lists(edge, max_size=max_edges if num_dst else 0))
    if edges and draw(st.booleans()):
        edges += draw(st.lists(st.sampled_from(edges), max_size=4))  # multi-edges
    if num_dst and draw(st.integers(0, 3)) == 0:
        edges += [(v, v, draw(st.integers(0, min(num_etypes, 4) - 1))) for v in range(num_dst)]  # self loops
    ntype = draw(st.lists(st.integers(0, num_ntypes - 1), min_size=num_nodes, max_size=num_nodes))
    src, dst, etype = (list(column) for column in zip(*edges)) if edges else ([], [], [])
    return pigeon.Graph.from_edges(src, dst, etype, num_nodes, ntype, num_etypes=num_etypes,
                                   num_ntypes=num_ntypes, num_dst_nodes=num_dst)


# ----------------------------------------------------------------------------------------
# checking one (program, graph) pair


def make_inputs(program: FuzzProgram, g: pigeon.Graph, seed: int) -> list[torch.Tensor]:
    """Seeded float64 arguments of ``program`` on ``g``."""
    gen = torch.Generator().manual_seed(seed)
    rows = {"node": g.num_nodes, "edge": g.num_edges, "etype": g.num_etypes, "ntype": g.num_ntypes}
    tensors = []
    for spec in program.inputs:
        lead = () if spec.role == "global" else (rows[spec.role],)
        tensors.append(torch.randn(lead + spec.shape, generator=gen, dtype=torch.float64) * 0.7)
    return tensors


def outputs_and_grads(run: Callable[..., Any], tensors: list[torch.Tensor], wrt: list[bool],
                      upstream_seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``run(*leaves)`` and the gradients of sum(output * upstream) with respect to the inputs
    marked in ``wrt`` (zeros where an input does not reach the outputs)."""
    leaves = [t.clone().requires_grad_(w) for t, w in zip(tensors, wrt)]
    outs = run(*leaves)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    gen = torch.Generator().manual_seed(upstream_seed)
    upstream = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
    wanted = [x for x, w in zip(leaves, wrt) if w]
    live = [(o, u) for o, u in zip(outs, upstream) if o.requires_grad]
    grads: list[Any] = [None] * len(wanted)
    if wanted and live:
        grads = list(torch.autograd.grad([o for o, _ in live], wanted, [u for _, u in live], allow_unused=True))
    grads = [torch.zeros_like(x) if d is None else d for x, d in zip(wanted, grads)]
    return [o.detach() for o in outs], [d.detach() for d in grads]


def assert_matches(ours: list[torch.Tensor], expected: list[torch.Tensor], what: str,
                   names: list[str] | None = None) -> None:
    """Equal counts and shapes, and values to TOLERANCE relative to the largest expected one."""
    assert len(ours) == len(expected), f"{what}: {len(ours)} values, expected {len(expected)}"
    for i, (a, b) in enumerate(zip(ours, expected)):
        label = f"{what} {names[i] if names else i}"
        assert a.shape == b.shape, f"{label}: shape {list(a.shape)}, expected {list(b.shape)}"
        scale = max(b.abs().max().item(), 1.0) if b.numel() else 1.0
        torch.testing.assert_close(a.double(), b, rtol=TOLERANCE, atol=TOLERANCE * scale,
                                   msg=lambda m: f"{label}: {m}")


class Stats:
    """What a fuzzing run did, for its report."""

    pairs = 0
    programs = 0
    gradchecks = 0
    harness_runs = 0
    skipped_nonfinite = 0


def check_pair(program: FuzzProgram, fn: pigeon.CompiledFunction, g: pigeon.Graph, seed: int,
               wrt: list[bool], gradcheck: bool = False) -> None:
    """Every back end against the naive interpreter of the traced program, forward and backward."""
    tensors = make_inputs(program, g, seed)
    traced = fn.program(g, *tensors)
    expected_out, expected_grad = outputs_and_grads(lambda *xs: naive.run(traced, g, *xs), tensors, wrt, seed + 1)
    if not all(torch.isfinite(t).all() for t in expected_out + expected_grad):
        Stats.skipped_nonfinite += 1  # the grammar's bounds keep this rare
        return
    for backend in BACKENDS:
        with pigeon.use_backend(backend), pigeon.disable_passes(*program.disabled):
            out, grad = outputs_and_grads(lambda *xs: fn(g, *xs), tensors, wrt, seed + 1)
        assert_matches(out, expected_out, f"{backend} output")
        names = [i.name for i, w in zip(program.inputs, wrt) if w]
        assert_matches(grad, expected_grad, f"{backend} gradient of", names)
    if gradcheck and "cpp" in BACKENDS and any(wrt):
        leaves = [t.clone().requires_grad_(w) for t, w in zip(tensors, wrt)]
        with pigeon.use_backend("cpp"), pigeon.disable_passes(*program.disabled), one_thread():
            assert torch.autograd.gradcheck(lambda *xs: fn(g, *xs), leaves, atol=1e-6, rtol=1e-5)
        Stats.gradchecks += 1
    Stats.pairs += 1


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """C++ kernels on one thread: gradcheck calls them hundreds of times on tiny graphs, where
    waking a team of threads on a busy machine costs more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def small(g: pigeon.Graph, tensors_numel: int) -> bool:
    return g.num_edges <= 12 and tensors_numel <= 48


class DrawnGraph:
    """A drawn graph that Hypothesis reports as the call that builds it."""

    def __init__(self, g: pigeon.Graph):
        self.g = g

    def __repr__(self) -> str:
        g = self.g
        return (f"pigeon.Graph.from_edges({g.src.tolist()}, {g.dst.tolist()}, {g.etype.tolist()}, {g.num_nodes}, "
                f"{g.ntype.tolist()}, num_etypes={g.num_etypes}, num_ntypes={g.num_ntypes}, "
                f"num_dst_nodes={g.num_dst_nodes})")


@st.composite
def cases(draw: Callable[[Any], Any], num_inputs: int) -> tuple[DrawnGraph, int, list[bool]]:
    """A graph, an input seed and which inputs need a gradient (mostly all)."""
    g = DrawnGraph(draw(graphs()))
    seed = draw(st.integers(0, 2**31 - 1))
    if draw(st.integers(0, 3)) == 0:
        wrt = draw(st.lists(st.booleans(), min_size=num_inputs, max_size=num_inputs))
    else:
        wrt = [True] * num_inputs
    return g, seed, wrt


def check_program(data: st.DataObject, graphs_per_program: int, harness_share: float) -> None:
    program = data.draw(programs(), label="program")
    fn = program.compiled()
    Stats.programs += 1
    for i in range(graphs_per_program):
        drawn, seed, wrt = data.draw(cases(len(program.inputs)), label=f"case {i}")
        g = drawn.g
        numel = sum(t.numel() for t in make_inputs(program, g, seed))
        check_pair(program, fn, g, seed, wrt, gradcheck=small(g, numel) and i % 2 == 0)
    if harness_share and zlib.crc32(program.source.encode()) % round(1 / harness_share) == 0:
        check_harness(program, fn, data.draw(graphs().map(DrawnGraph), label="harness graph").g)


# ----------------------------------------------------------------------------------------
# the CUDA-on-CPU harness (a share of the programs: each costs a g++ build)


def check_harness(program: FuzzProgram, fn: pigeon.CompiledFunction, g: pigeon.Graph, seed: int = 0) -> None:
    """The generated CUDA kernels of the program's forward and backward, run on the CPU,
    against the reference executor of the same optimised programs."""
    if shutil.which("g++") is None:
        return
    from cuda_cpu.runner import HarnessProgram
    from pigeon.ir.lower import lower
    from pigeon.runtime.reference import execute

    tensors = make_inputs(program, g, seed)
    with pigeon.use_backend("reference"), pigeon.disable_passes(*program.disabled):
        exe = fn.executable(g, *tensors)
    names = [n.name for n in exe.forward.inputs]
    grad = exe.gradient(tuple(names))
    ordered = [tensors[[i.name for i in program.inputs].index(n)] for n in names]
    forward = HarnessProgram(lower(grad.forward))(g, *ordered)
    assert_matches(list(forward), list(execute(grad.forward, g, *ordered)), "harness forward")
    gen = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in forward[: grad.num_outputs]]
    backward_inputs = [*forward[grad.num_outputs:], *upstream]
    backward = HarnessProgram(lower(grad.backward))(g, *backward_inputs)
    assert_matches(list(backward), list(execute(grad.backward, g, *backward_inputs)), "harness backward")
    Stats.harness_runs += 1


# ----------------------------------------------------------------------------------------
# profiles

COMMON = dict(deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
SHORT = settings(max_examples=15, derandomize=True, **COMMON)  # CI: a fixed seed, 45 pairs in about 90 s here
LONG_PAIRS = 2000
LONG_GRAPHS_PER_PROGRAM = 20  # compiling a program's kernels costs more than checking it on a graph
LONG = settings(max_examples=LONG_PAIRS // LONG_GRAPHS_PER_PROGRAM + 10, **COMMON)


@SHORT
@given(data=st.data())
def test_random_programs_match_the_naive_interpreter(data):
    check_program(data, graphs_per_program=3, harness_share=0.0)


@pytest.mark.fuzz
def test_long_fuzzing_profile():
    """``pytest -m fuzz``: at least 2,000 (program, graph) pairs, about one program in five also
    through the CUDA-on-CPU harness."""
    start, pairs = time.time(), Stats.pairs

    @LONG
    @given(data=st.data())
    def run(data):
        check_program(data, graphs_per_program=LONG_GRAPHS_PER_PROGRAM, harness_share=0.2)
        if Stats.programs % 10 == 0:
            print(f"fuzzing: {Stats.pairs - pairs} pairs so far, {time.time() - start:.0f} s", flush=True)

    run()
    print(f"\nfuzzing: {Stats.pairs - pairs} pairs, {Stats.programs} programs, {Stats.gradchecks} gradchecks, "
          f"{Stats.harness_runs} harness runs, {Stats.skipped_nonfinite} non-finite cases skipped, "
          f"{time.time() - start:.0f} s")
    assert Stats.pairs - pairs >= LONG_PAIRS


# ----------------------------------------------------------------------------------------
# the naive interpreter itself, against the plain-PyTorch formulas

def test_naive_interpreter_matches_the_model_formulas():
    """The oracle is checked too: RGCN, RGAT and HGT traced, run row by row, against
    tests/formulas.py."""
    import formulas
    from pigeon.examples import hgt, rgat, rgcn
    from random_graphs import random_graph

    g = random_graph(num_nodes=12, num_edges=40, num_etypes=5, seed=3)
    torch.manual_seed(0)
    for model, formula in ((rgcn.rgcn, formulas.rgcn), (rgat.rgat, formulas.rgat), (hgt.hgt, formulas.hgt)):
        args = model.example_inputs(g, dtype=torch.float64)
        program = model.program(g, *args)
        params = dict(model._bind(g, args, {}))
        out = naive.run(program, g, *[params[n.name] for n in program.inputs])[0]
        expected = formula(g, *args)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10, msg=model.name)


# ----------------------------------------------------------------------------------------
# regressions: failing examples as Hypothesis shrank them


def _tiny_graph() -> pigeon.Graph:
    """Three nodes of two types, four edges of two types (one self loop)."""
    return pigeon.Graph.from_edges([0, 1, 2, 2], [1, 2, 0, 2], [0, 1, 1, 0], 3, [0, 1, 0], num_etypes=2, num_ntypes=2)


REGRESSIONS = [
    pytest.param(
        FuzzProgram(
            "def fuzzed(g, h0, c0):\n"
            "    for e in g.edges():\n"
            "        e.m00 = dot(h0[e.src], c0)\n"
            "    for n in g.dst_nodes():\n"
            "        n.o00 = sum(e.m00 for e in n.incoming_edges())\n"
            "    return n.o00\n",
            (InputSpec("h0", "node", (1,)), InputSpec("c0", "global", (3,)))),
        _tiny_graph, True,
        id="dot_broadcasts_its_last_axis"),  # the backward raised ShapeError (fixed in autodiff)
    pytest.param(
        FuzzProgram(
            "def fuzzed(g, c0):\n"
            "    for n in g.dst_nodes():\n"
            "        n.o00 = sigmoid(c0)\n"
            "    return n.o00\n",
            (InputSpec("c0", "global", (2,)),)),
        _tiny_graph, False,  # inference: the row kernel (with gradients, it only happens at times)
        id="global_value_stored_as_a_row_value"),  # only row 0 of the output was written (fixed)
    pytest.param(
        FuzzProgram(
            "def fuzzed(g, h0):\n"
            "    for e in g.edges():\n"
            "        e.m00 = tanh(h0[e.src])\n"
            "    return e.m00\n",
            (InputSpec("h0", "node", (2,)),)),
        lambda: edge_case_graph("empty_relations", 0), False,
        id="compact_value_returned_per_edge"),  # edge rows held other edges' values (fixed)
    pytest.param(
        FuzzProgram(
            "def fuzzed(g, w0):\n"
            "    for n in g.dst_nodes():\n"
            "        n.o10 = sum(w0[e] * 2.0 for e in n.incoming_edges())\n"
            "    return n.o10\n",
            (InputSpec("w0", "edge", (2,)),)),
        lambda: pigeon.Graph.from_edges([0, 0], [0, 0], [0, 0], 1, [0], num_etypes=2), True,
        id="edge_gradient_through_compact_dst"),  # a row of the gradient was never written (fixed)
    pytest.param(
        FuzzProgram(
            "def fuzzed(g, t0, h0, h1, h2, c0, h3):\n"
            "    for e in g.edges():\n"
            "        e.m00 = (t0[e.dst.ntype] * 0.5)\n"
            "        e.m01 = (where((e.src == e.dst), h0[e.src], h0[e.src]) * 0.5)\n"
            "    for n in g.dst_nodes():\n"
            "        n.o00 = h1[n]\n"
            "    for e in g.edges():\n"
            "        e.m10 = softmax(h2[e.src])\n"
            "    for n in g.dst_nodes():\n"
            "        n.o10 = tanh((c0 * h3[n]))\n"
            "    return n.o10, e.m00\n",
            (InputSpec("t0", "ntype", (1, 2)), InputSpec("h0", "node", (2,)), InputSpec("h1", "node", (2, 2)),
             InputSpec("h2", "node", (1, 2)), InputSpec("c0", "global", (1, 3)), InputSpec("h3", "node", (2, 1))),
            ("cse", "dce", "linear_reorder", "horizontal_fusion", "aggregation_order", "compact")),
        lambda: pigeon.Graph.from_edges([0], [0], [1], 1, [0], num_etypes=2), False,
        id="edge_output_of_a_dst_traversal_not_stored"),  # the edge output was never stored (fixed)
    pytest.param(
        FuzzProgram(
            "def fuzzed(g, h0, h1):\n"
            "    for e in g.edges():\n"
            "        e.m00 = h0[e.dst]\n"
            "    for n in g.dst_nodes():\n"
            "        n.o00 = leaky_relu(h1[n], 0.2)\n"
            "    return n.o00\n",
            (InputSpec("h0", "node", (2,)), InputSpec("h1", "node", (2,)))),
        _tiny_graph, [True, False],
        id="no_gradient_reaches_an_output"),  # the empty backward program failed verify() (fixed)
    pytest.param(
        FuzzProgram(
            "def fuzzed(g, h0, c0):\n"
            "    for e in g.edges():\n"
            "        e.m00 = where(h0[e.src] > c0, 1.0, h0[e.dst])\n"
            "    for n in g.dst_nodes():\n"
            "        n.o00 = sum(e.m00 for e in n.incoming_edges())\n"
            "    return n.o00\n",
            (InputSpec("h0", "node", (2,)), InputSpec("c0", "global", (2,)))),
        _tiny_graph, [False, True],
        id="gradient_only_through_a_comparison"),  # the empty backward program failed verify() (fixed)
]


@pytest.mark.parametrize("program, graph, with_gradients", REGRESSIONS)
def test_regression(program, graph, with_gradients):
    wrt = with_gradients if isinstance(with_gradients, list) else [with_gradients] * len(program.inputs)
    check_pair(program, program.compiled(), graph(), seed=0, wrt=wrt, gradcheck=any(wrt))
