"""Lowering of an optimised level-1 program to level 2: fusion into kernels, then kernel plans.

Fusion is greedy, in program order. Views (gathers, reshapes, slices, degrees) are never kernels:
every kernel that uses one reads its source through the index instead. Every other op joins
the kernel of one of its producers when their iteration spaces combine (an elementwise edge op
joins a per-destination traversal; an elementwise op on a GEMM's rows joins it as an epilogue)
and the kernel graph stays acyclic; then the kernels of its other producers try to join too.
Last, independent kernels of combinable spaces merge (horizontal fusion). A value is stored to
memory only when another kernel or the program's caller needs it.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Mapping

import networkx as nx

from .ops import ELEMENTWISE, Op
from .passes import decompose_softmax
from .plans import (GemmSchedule, KernelPlan, PlanProgram, Schedule, Strategy, cpu_atomic_reductions, default_schedule,
                    fit_gemm_tile, read_node)
from .program import Node, Program
from .types import Domain

VIEW_OPS = frozenset({Op.GATHER, Op.RESHAPE, Op.SLICE, Op.DEGREE, Op.CONST, Op.SIZE, Op.MATCH})


DST_REDUCTIONS = ("segmented", "atomic")


def node_space(node: Node, program: Program, atomic_dst: frozenset[str] = frozenset()) -> str:
    """The iteration space of an op: what kind of kernel can compute it. Reductions named in
    ``atomic_dst`` are scattered by an edge-parallel kernel instead of a per-destination one."""
    if node.op == Op.LINEAR:
        return f"gemm:{node.type.domain.value}"
    if node.op == Op.LINEAR_WGRAD:
        return "wgrad"
    if node.op == Op.EDGE_SOFTMAX:
        return "dst"
    if node.op == Op.REDUCE:
        source = program.node(node.args[0]).type.domain
        if node.attrs["index"] == "dst" and source == Domain.EDGE and node.type.domain == Domain.DST:
            return "scatter:edge" if node.name in atomic_dst else "dst"
        return f"scatter:{source.value}"
    return f"map:{node.type.domain.value}"


def combine(a: str, b: str) -> str | None:
    """The space of one kernel doing the work of spaces ``a`` and ``b``, or None if none can."""
    if a == b:
        return None if a.startswith(("gemm", "wgrad")) else a
    pair = {a, b}
    edge_like = {"map:edge", "scatter:edge", "edge"}
    if pair <= edge_like:
        return "edge"
    if "dst" in pair and pair - {"dst"} <= {"map:edge", "map:dst", "edge", "scatter:edge", "scatter:dst"}:
        return "dst"  # a traversal per destination also does the edge work, scattering with atomics
    for s in pair:
        if s.startswith("gemm:") and pair in ({s, "map:" + s[5:]}, {s, "scatter:" + s[5:]}):
            return s  # an elementwise epilogue, or a scatter of the output rows with atomics
        if s.startswith("map:") and pair == {s, "scatter:" + s[4:]}:
            return s
        if s.startswith("scatter:") and pair == {s, "map:" + s[8:]}:
            return "map:" + s[8:]
    return None


@dataclass
class _Group:
    space: str
    members: list[str] = field(default_factory=list)


def atomic_candidates(program: Program) -> frozenset[str]:
    """Sum and mean reductions into destinations that no edge op of the program reads back
    (softmax's are read back): the ones an edge-parallel kernel may scatter with atomics."""
    fusion = _Fusion(program)
    read_by_edges = {src for n in program.nodes if n.type.domain == Domain.EDGE and n.op not in VIEW_OPS
                     for src, _ in fusion.arg_sources(n)}
    return frozenset(n.name for n in program.nodes
                     if n.op == Op.REDUCE and n.attrs["kind"] in ("sum", "mean") and n.attrs["index"] == "dst"
                     and n.type.domain == Domain.DST and n.name not in read_by_edges)


class _Fusion:
    def __init__(self, program: Program, atomic_dst: frozenset[str] = frozenset(), horizontal: bool = True,
                 cpu: bool = False):
        self.p = program
        self.atomic_dst = atomic_dst
        self.horizontal = horizontal
        # C++ kernels: no fusion that makes a reduction a compare-and-swap per element (a GEMM
        # epilogue's scatter, a horizontal merge into a per-destination kernel)
        self.cpu = cpu
        self.group_of: dict[str, int] = {}
        self.groups: dict[int, _Group] = {}

    def sources(self, name: str) -> list[tuple[str, list[Node]]]:
        """The materialisable values ``name`` reads, each with the views on the way."""
        node = self.p.node(name)
        if node.op == Op.INPUT or node.op not in VIEW_OPS:
            return [(name, [])]
        found = []
        for a in node.args:
            found += [(src, views + [node]) for src, views in self.sources(a)]
        return found or [(name, [node])]  # a degree reads the graph only

    def arg_sources(self, node: Node) -> list[tuple[str, list[Node]]]:
        return [s for a in node.args for s in self.sources(a)]

    def producer_groups(self, node: Node) -> list[int]:
        out = []
        for src, _ in self.arg_sources(node):
            g = self.group_of.get(src)
            if g is not None and g not in out:
                out.append(g)
        return out

    def dag(self, group_of: dict[str, int]) -> nx.DiGraph:
        d = nx.DiGraph()
        d.add_nodes_from(set(group_of.values()))
        for name, g in group_of.items():
            for src, _ in self.arg_sources(self.p.node(name)):
                h = group_of.get(src)
                if h is not None and h != g:
                    d.add_edge(h, g)
        return d

    def valid(self, space: str, members: set[str], group_of: dict[str, int]) -> bool:
        if not nx.is_directed_acyclic_graph(self.dag(group_of)):
            return False
        if space.startswith("gemm") or space == "wgrad":
            anchors = [m for m in members if self.p.node(m).op in (Op.LINEAR, Op.LINEAR_WGRAD)]
            if len(anchors) != 1 or self._ancestors_within(anchors[0], members):
                return False
            # an epilogue is per output element: elementwise ops and scatters of the rows only
            if any(self.p.node(m).op not in ELEMENTWISE | {Op.REDUCE} for m in members if m != anchors[0]):
                return False
            # A C++ GEMM's tiles go to any thread, so its scatters would all be atomics, a
            # compare-and-swap per element: a kernel of its own walks the rows in target order.
            if self.cpu and space.startswith("gemm") and any(
                    self.p.node(m).op == Op.REDUCE for m in members):
                return False
            if space != "wgrad" and not self._per_output_element(anchors[0], members):
                return False
        for m in members:
            for src, views in self.arg_sources(self.p.node(m)):
                if src not in members:
                    continue
                if not all(self.row_local(v, space) for v in views):
                    return False  # a value of this kernel, read at another row: needs a global sync
                if self.scattered(src):
                    return False  # a scatter's result is only complete after the kernel
        return True

    def row_local(self, view: Node, space: str) -> bool:
        """Whether a kernel of ``space`` reads ``view`` of its own value at the row it computes it
        (reshapes, slices; a destination's value on its incoming edges, per destination)."""
        return view.op in (Op.RESHAPE, Op.SLICE) or (
            space == "dst" and view.op == Op.GATHER and view.attrs["index"] == "dst"
            and self.p.node(view.args[0]).type.domain == Domain.DST)

    def scattered(self, name: str) -> bool:
        """Whether value ``name`` is accumulated with atomics: complete only after its kernel."""
        node = self.p.node(name)
        return node.op == Op.REDUCE and node_space(node, self.p, self.atomic_dst) != "dst"

    def _per_output_element(self, anchor: str, members: set[str]) -> bool:
        """Whether every epilogue op reads the GEMM's result (and what it computes from it) at
        its own output element: same shape, through reshapes only. A gate of width 1 times a
        wider value, a broadcast [H, 1] x [1, F] or a slice of the result reads it at other
        elements: those ops belong to another kernel."""
        anchor_numel = self.p.node(anchor).type.numel
        dependent = {anchor}
        index = self._index
        for name in sorted(members, key=index.__getitem__):
            node = self.p.node(name)
            if name == anchor:
                continue
            for arg in node.args:
                for src, views in self.sources(arg):
                    if src not in dependent:
                        continue
                    if any(v.op != Op.RESHAPE for v in views) or self.p.node(arg).type.shape != node.type.shape:
                        return False
                    dependent.add(name)
            if node.op == Op.REDUCE and self.p.node(node.args[0]).type.numel != anchor_numel:
                return False  # a scatter adds once per output element
        return True

    def _ancestors_within(self, anchor: str, members: set[str]) -> set[str]:
        """Members the anchor depends on (a GEMM takes no computed prologue)."""
        seen, stack = set(), [anchor]
        while stack:
            for src, _ in self.arg_sources(self.p.node(stack.pop())):
                if src in members and src not in seen:
                    seen.add(src)
                    stack.append(src)
        return seen

    def try_merge(self, into: int, other: int, space: str) -> bool:
        members = set(self.groups[into].members) | set(self.groups[other].members)
        trial = {k: (into if g == other else g) for k, g in self.group_of.items()}
        if not self.valid(space, members, trial):
            return False
        self.groups[into].members += self.groups.pop(other).members
        self.groups[into].space = space
        self.group_of = trial
        return True

    def run(self) -> list[_Group]:
        for node in self.p.nodes:
            if node.op == Op.INPUT or node.op in VIEW_OPS:
                continue
            gid = len(self.groups) + 10 * len(self.p.nodes)  # fresh id
            while gid in self.groups:
                gid += 1
            self.groups[gid] = _Group(node_space(node, self.p, self.atomic_dst), [node.name])
            self.group_of[node.name] = gid
            producers = self.producer_groups(node)
            home = gid
            for g in producers:
                space = combine(self.groups[g].space, self.groups[home].space)
                if space is not None and self.try_merge(g, home, space):
                    home = g
                    break
            for g in producers:
                if g != home and g in self.groups:
                    space = combine(self.groups[home].space, self.groups[g].space)
                    if space is not None:
                        self.try_merge(home, g, space)
        if self.horizontal:
            self.merge_independent()
        order = list(nx.lexicographical_topological_sort(
            self.dag(self.group_of), key=lambda g: min(self._index[m] for m in self.groups[g].members)))
        return [self.groups[g] for g in order]

    def merge_independent(self) -> None:
        """Merge kernels that could run as one (no GEMMs: those keep one weight stream each; in
        C++ none whose merge makes a reduction atomic)."""
        merged = True
        while merged:
            merged = False
            ids = sorted(self.groups)
            for i, a in enumerate(ids):
                for b in ids[i + 1:]:
                    space = combine(self.groups[a].space, self.groups[b].space)
                    if space is None or space.startswith("gemm") or self.adds_atomics(a, b, space):
                        continue
                    if self.try_merge(a, b, space):
                        merged = True
                        break
                if merged:
                    break

    def adds_atomics(self, a: int, b: int, space: str) -> bool:
        """Whether merging groups ``a`` and ``b`` into one C++ kernel over ``space`` makes one of
        their reductions atomic (an edge-parallel kernel's scatter along its walk order, taken
        into a per-destination kernel): an atomic add per element costs more than the kernel
        call the merge saves on any graph worth a kernel."""
        if not self.cpu:
            return False

        def atomic(space: str, members: list[str]) -> set[str]:
            nodes = [self.p.node(m) for m in members]
            return {n.name for n in cpu_atomic_reductions(_strategy(space)[0], nodes,
                                                          lambda n: self.p.node(n.args[0]).type.domain)}
        ga, gb = self.groups[a], self.groups[b]
        before = atomic(ga.space, ga.members) | atomic(gb.space, gb.members)
        return not atomic(space, ga.members + gb.members) <= before

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {n.name: i for i, n in enumerate(self.p.nodes)}


def _strategy(space: str) -> tuple[Strategy, Domain]:
    if space.startswith("gemm:"):
        return Strategy.GEMM, Domain(space[5:])
    if space == "wgrad":
        return Strategy.WGRAD, Domain.EDGE
    if space == "dst":
        return Strategy.DST_PARALLEL, Domain.DST
    if space in ("edge", "map:edge", "scatter:edge"):
        return Strategy.EDGE_PARALLEL, Domain.EDGE
    return Strategy.ROW_MAP, Domain(space.split(":")[1])


def _layout(strategy: Strategy, domain: Domain, anchor: Node | None, program: Program) -> str:
    if anchor is not None:
        by = anchor.attrs["by"]
        rows = program.node(anchor.args[0]).type.domain
        if by == "all":
            return "dense"
        if by == "etype" and rows in (Domain.COMPACT, Domain.COMPACT_DST):
            return rows.value
        return f"{rows.value}_by_{by}"
    return {Strategy.DST_PARALLEL: "csr", Strategy.EDGE_PARALLEL: "coo"}.get(strategy, "rows")


def lower(program: Program, dst_reductions: str = "segmented", horizontal: bool = True,
          schedules: Mapping[str, Schedule] | None = None, target: str = "cuda") -> PlanProgram:
    """The kernel plans of ``program`` (an optimised level-1 program), in launch order.

    ``dst_reductions="atomic"`` scatters the reductions into destinations that allow it with
    atomics from edge-parallel kernels, instead of segmented per-destination traversals;
    ``horizontal=False`` keeps independent kernels apart; ``schedules`` replaces the default
    schedule of the kernels it names.
    """
    if dst_reductions not in DST_REDUCTIONS:
        raise ValueError(f"dst_reductions must be one of {DST_REDUCTIONS}, got {dst_reductions!r}")
    program = decompose_softmax.run(program)
    fusion = _Fusion(program, atomic_candidates(program) if dst_reductions == "atomic" else frozenset(), horizontal,
                     cpu=target == "cpp")
    groups = fusion.run()
    index = {n.name: i for i, n in enumerate(program.nodes)}
    produced = {m: i for i, g in enumerate(groups) for m in g.members}
    needed_outside: dict[int, set[str]] = {i: set() for i in range(len(groups))}
    out_views: dict[int, list[Node]] = {i: [] for i in range(len(groups))}
    for i, g in enumerate(groups):
        for m in g.members:
            for src, _ in fusion.arg_sources(program.node(m)):
                if src in produced and produced[src] != i:
                    needed_outside[produced[src]].add(src)
    extra: list[tuple[str, list[Node]]] = []
    for out in program.outputs:
        for src, views in fusion.sources(out):
            if src in produced and not views:
                needed_outside[produced[src]].add(src)
            elif src in produced and not fusion.scattered(src) and all(
                    fusion.row_local(v, groups[produced[src]].space) for v in views):
                out_views[produced[src]] += views  # a view of a kernel's value at its rows: computed there
                needed_outside[produced[src]].add(out)
            elif views:  # a view of an input, a degree, a scattered value or of other rows: a copy kernel
                if src in produced:
                    needed_outside[produced[src]].add(src)
                extra.append((out, views))
    kernels = []
    for i, g in enumerate(groups):
        kernels.append(_plan(program, fusion, g, needed_outside[i], out_views[i], index, len(kernels), target))
    for out, views in extra:
        space = f"map:{program.node(out).type.domain.value}"
        kernels.append(_plan(program, fusion, _Group(space, []), {out}, views, index, len(kernels), target))
    if schedules:
        kernels = [dataclasses.replace(k, schedule=schedules[k.name]) if k.name in schedules else k for k in kernels]
    return PlanProgram(program.name, program.inputs, tuple(kernels), program.outputs)


def _plan(program: Program, fusion: _Fusion, group: _Group, writes: set[str], out_views: list[Node],
          index: dict[str, int], number: int, target: str = "cuda") -> KernelPlan:
    members = set(group.members)
    ops: dict[str, Node] = {}
    reads: dict[str, Node] = {}
    for m in group.members:
        for src, views in fusion.arg_sources(program.node(m)):
            for v in views:
                ops[v.name] = v
            src_node = program.node(src)
            if src not in members and src_node.op not in VIEW_OPS:
                reads[src] = src_node
        ops[m] = program.node(m)
    for v in out_views:
        ops[v.name] = v
        for src, _ in fusion.sources(v.name):
            if src not in members and program.node(src).op not in VIEW_OPS:
                reads[src] = program.node(src)
    ordered = tuple(sorted(ops.values(), key=lambda n: index[n.name]))
    strategy, domain = _strategy(group.space)
    anchor = next((n for n in ordered if n.op in (Op.LINEAR, Op.LINEAR_WGRAD)), None)
    if anchor is not None:
        domain = program.node(anchor.args[0]).type.domain
    schedule = default_schedule(strategy, target)
    if anchor is not None and isinstance(schedule, GemmSchedule):
        shape = anchor.type.shape
        schedule = fit_gemm_tile(schedule, shape[-1], shape[-2] if anchor.op == Op.LINEAR_WGRAD else None)
    first = (anchor or next((n for n in ordered if n.op not in VIEW_OPS), ordered[-1])).name
    read_nodes = tuple(read_node(n, i) for i, n in enumerate(sorted(reads.values(), key=lambda n: index[n.name])))
    return KernelPlan(f"k{number}_{strategy.value}_{first}", strategy, domain,
                      _layout(strategy, domain, anchor, program), read_nodes, ordered,
                      tuple(sorted(writes, key=lambda w: index[w])), schedule)
