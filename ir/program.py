"""Level-1 programs: immutable SSA nodes in topological order, and a builder to make them."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import networkx as nx

from .ops import Op
from .shape_inference import infer
from .types import ValueType


def freeze_attrs(attrs: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """Attributes as a sorted tuple of pairs, so nodes hash and compare by value."""
    return tuple(sorted((attrs or {}).items()))


@dataclass(frozen=True)
class Node:
    """One value: ``name : type = op[attrs](args)``. ``loc`` is the user's source line."""

    name: str
    op: Op
    args: tuple[str, ...]
    type: ValueType
    attr_items: tuple[tuple[str, Any], ...] = ()
    loc: str = field(default="", compare=False)

    @functools.cached_property
    def attrs(self) -> dict[str, Any]:
        return dict(self.attr_items)

    def replace(self, **changes: Any) -> Node:
        """A copy with some fields changed (``attrs=`` takes a mapping)."""
        if "attrs" in changes:
            changes["attr_items"] = freeze_attrs(changes.pop("attrs"))
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Program:
    """A level-1 program. Inputs are the INPUT nodes, in argument order."""

    name: str
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]

    @functools.cached_property
    def _by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    @property
    def inputs(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op == Op.INPUT)

    @functools.cached_property
    def users(self) -> dict[str, tuple[str, ...]]:
        """For every value, the names of the nodes that read it."""
        users: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for a in dict.fromkeys(n.args):
                users[a].append(n.name)
        return {k: tuple(v) for k, v in users.items()}

    def dag(self) -> nx.DiGraph:
        """The program as a networkx DAG: an edge from each argument to its user."""
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, node=n)
            for a in n.args:
                g.add_edge(a, n.name)
        return g

    def __str__(self) -> str:
        from .printer import format_program

        return format_program(self)


@dataclass
class _Pending:
    op: Op
    args: tuple[int, ...]
    type: ValueType
    attrs: dict[str, Any]
    hint: str
    loc: str
    named: bool = False  # the hint came from the user (e.score = ...), not from the op


class Builder:
    """Appends typed nodes; names are given at ``build`` from hints, unique in the program.

    Values are referred to by integer handles until then, so a hint can still change after a
    value is made (the tracer names a value when the user stores it as ``e.score``).
    """

    def __init__(self, name: str):
        self.name = name
        self._nodes: list[_Pending] = []

    def input(self, name: str, type: ValueType, position: int, loc: str = "") -> int:
        return self._append(_Pending(Op.INPUT, (), type, {"position": position}, name, loc, named=True))

    def add(self, op: Op, args: Iterable[int], attrs: Mapping[str, Any] | None = None,
            hint: str = "", loc: str = "") -> int:
        """Append ``op(args)``; its type is inferred (ShapeError if the arguments do not fit)."""
        args = tuple(args)
        attrs = dict(attrs or {})
        out_type = infer(op, tuple(self._nodes[a].type for a in args), attrs)
        return self._append(_Pending(op, args, out_type, attrs, hint or op.value, loc))

    def type_of(self, handle: int) -> ValueType:
        return self._nodes[handle].type

    def name_value(self, handle: int, name: str) -> None:
        """Name a value after the user's name for it, unless it already has one."""
        pending = self._nodes[handle]
        if not pending.named:
            pending.hint, pending.named = name, True

    def _append(self, pending: _Pending) -> int:
        self._nodes.append(pending)
        return len(self._nodes) - 1

    def build(self, outputs: Iterable[int]) -> Program:
        """The program of every node (inputs first, by position) and these outputs."""
        order = sorted(range(len(self._nodes)), key=lambda i: (self._nodes[i].op != Op.INPUT,
                                                                  self._nodes[i].attrs.get("position", 0), i))
        names: dict[int, str] = {}
        taken: dict[str, int] = {}
        for i in order:
            hint = self._nodes[i].hint
            if hint in taken:
                taken[hint] += 1
                while f"{hint}_{taken[hint]}" in taken:
                    taken[hint] += 1
                name = f"{hint}_{taken[hint]}"
                taken[name] = 0
            else:
                name = hint
                taken[hint] = 0
            names[i] = name
        nodes = tuple(
            Node(names[i], p.op, tuple(names[a] for a in p.args), p.type, freeze_attrs(p.attrs), p.loc)
            for i, p in ((i, self._nodes[i]) for i in order)
        )
        return Program(self.name, nodes, tuple(names[o] for o in outputs))
