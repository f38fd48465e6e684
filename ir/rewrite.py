"""A helper for passes: build a new program from an old one, keeping names stable."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from .ops import Op
from .program import Node, Program, freeze_attrs
from .shape_inference import infer
from .types import ValueType


class Rewriter:
    """Copies nodes of ``program`` (renaming their arguments as told) and emits new ones.

    Kept nodes keep their names; emitted nodes get fresh names from their hints. Arguments of
    ``emit`` are names in the new program.
    """

    def __init__(self, program: Program):
        self.program = program
        self.nodes: list[Node] = []
        self.types: dict[str, ValueType] = {}
        self.taken = {n.name for n in program.nodes}
        self.renamed: dict[str, str] = {}

    def new_name(self, old: str) -> str:
        """The name in the new program of the old program's value ``old``."""
        return self.renamed.get(old, old)

    def replace(self, old: str, new: str) -> None:
        """From now on, users of old value ``old`` read new value ``new``."""
        self.renamed[old] = new

    def keep(self, node: Node) -> str:
        """Copy an old node, its arguments renamed, with its type re-derived."""
        args = tuple(self.new_name(a) for a in node.args)
        if node.op != Op.INPUT:
            node = node.replace(args=args, type=infer(node.op, tuple(self.types[a] for a in args), node.attrs))
        return self._append(node)

    def emit(self, op: Op, args: Iterable[str], attrs: Mapping[str, Any] | None = None,
             hint: str = "", loc: str = "", replacing: str = "") -> str:
        """Append a new node; returns its (fresh) name. A node ``replacing`` an old value that
        is not kept takes that value's name."""
        args = tuple(args)
        attrs = dict(attrs or {})
        vtype = infer(op, tuple(self.types[a] for a in args), attrs)
        if replacing and replacing not in self.types:
            name = replacing
            self.replace(replacing, name)
        else:
            name = self._fresh(hint or op.value)
        return self._append(Node(name, op, args, vtype, freeze_attrs(attrs), loc))

    def type_of(self, name: str) -> ValueType:
        return self.types[name]

    def _fresh(self, hint: str) -> str:
        name, i = hint, 0
        while name in self.taken:
            i += 1
            name = f"{hint}_{i}"
        self.taken.add(name)
        return name

    def add_node(self, node: Node) -> str:
        """Append a ready node under its own name (the caller keeps names unique)."""
        self.taken.add(node.name)
        return self._append(node)

    def _append(self, node: Node) -> str:
        self.nodes.append(node)
        self.types[node.name] = node.type
        return node.name

    def finish(self, outputs: Iterable[str] | None = None, name: str | None = None) -> Program:
        outs = tuple(self.new_name(o) for o in (self.program.outputs if outputs is None else outputs))
        return Program(name or self.program.name, tuple(self.nodes), outs)


def rewrite_where_cheaper(program: Program, stats: Any, op: Op,
                          rewrite: Callable[[Program, str], Program | None],
                          cheaper: Callable[[Program, Program, Any], bool] | None = None) -> Program:
    """Try ``rewrite(program, name)`` at every ``op`` node in turn; keep each result the cost
    model finds cheaper on graphs of ``stats``' sizes (no stats: no rewrite). ``cheaper``
    (candidate, current, stats) replaces the cost model's comparison of the two programs."""
    if cheaper is None:
        from .cost import cheaper

    if stats is None:
        return program
    for name in [n.name for n in program.nodes if n.op == op]:
        if name not in program:
            continue
        candidate = rewrite(program, name)
        if candidate is not None and cheaper(candidate, program, stats):
            program = candidate
    return program
