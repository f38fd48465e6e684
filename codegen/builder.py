"""What every kernel builder shares: its arguments, and reading an element of any value
through the chain of views (gathers, reshapes, slices) that leads to memory."""
from __future__ import annotations

from dataclasses import dataclass, field

from pigeon.ir.ops import Op
from pigeon.ir.plans import KernelPlan, Strategy
from pigeon.ir.program import Node
from pigeon.ir.types import Domain

from .expressions import C_COMPARE
from .expressions import ELEMENTWISE as C_EXPR
from .expressions import broadcast_index, c_number, slice_index
from .kernel import ACCUMULATE, STORAGE, KernelArg

VIEWS = (Op.GATHER, Op.RESHAPE, Op.SLICE, Op.DEGREE, Op.CONST, Op.SIZE, Op.MATCH)
SOURCES = (Op.INPUT, Op.DEGREE, Op.CONST, Op.SIZE, Op.MATCH)  # views end at these


class CodegenError(ValueError):
    """A plan that the kernel templates cannot express."""


@dataclass
class Code:
    """Lines of C, indented as they are opened and closed."""

    lines: list[str] = field(default_factory=list)
    depth: int = 1

    def add(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def open(self, line: str) -> None:
        self.add(line + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self.add("}")

    def block(self) -> None:
        """Open a bare block (a scope for names)."""
        self.add("{")
        self.depth += 1

    def otherwise(self) -> None:
        """Close an ``if`` block and open its ``else``."""
        self.depth -= 1
        self.add("} else {")
        self.depth += 1


class KernelBuilder:
    """Arguments and element reads of one kernel; subclasses keep computed values in registers."""

    def __init__(self, plan: KernelPlan, name: str):
        self.plan, self.name = plan, name
        self.program = plan.program()
        self.nodes = {n.name: n for n in plan.reads + plan.ops}
        self.users = self.program.users
        self.dtype = (plan.reads + plan.ops)[0].type.dtype
        self.acc = ACCUMULATE[self.dtype]
        self.storage = STORAGE[self.dtype]
        self.args: dict[str, KernelArg] = {}
        self.zero_filled: list[str] = []  # outputs accumulated into with atomics
        self.max_filled: list[str] = []  # outputs maximised into with atomics
        for r in plan.reads:
            self._arg(f"p_{r.name}", f"const {self.storage}* __restrict__", "read", r.name)
        for w in plan.writes:
            self._arg(f"p_{w}", f"{self.storage}* __restrict__", "write", w)

    # ---- arguments ----------------------------------------------------------------------

    def _arg(self, name: str, ctype: str, kind: str, key: object = None) -> str:
        if name not in self.args:
            self.args[name] = KernelArg(name, ctype, kind, key)
        return name

    def index_arg(self, index: str, target: Domain) -> str:
        return self._arg(f"p_index_{index}_{target.value}", "const long long* __restrict__", "index", (index, target))

    def index_at(self, index: str, target: Domain, row: str) -> str:
        """The row that ``index`` sends row ``row`` of ``target`` to (a read of a graph array)."""
        return f"{self.index_arg(index, target)}[{row}]"

    def degree_at(self, by: str, edge: str) -> str:
        """The degree ``by`` of edge ``edge``'s node (a read of a graph array)."""
        return f"{self._arg(f'p_degree_{by}', 'const long long* __restrict__', 'degree', by)}[{edge}]"

    def numel(self, name: str) -> int:
        return self.nodes[name].type.numel

    def shape(self, name: str) -> tuple[int, ...]:
        return self.nodes[name].type.shape

    def local_source(self, name: str) -> str | None:
        """The computed value a view of ``name`` reads in registers, or None if from memory."""
        node = self.nodes[name]
        if node.op in SOURCES:
            return None
        if node.op in VIEWS:
            return self.local_source(node.args[0])
        return name

    def read_local(self, name: str, flat: str, rows: dict[Domain, str], k: str | None) -> str:
        """Element ``flat`` of a value computed in this kernel (subclasses keep them)."""
        raise NotImplementedError

    def row_of(self, name: str, rows: dict[Domain, str]) -> str | None:
        """The row of memory value ``name``'s source read for the current rows (None: global)."""
        node = self.nodes[name]
        if node.op == Op.INPUT:
            if node.type.domain == Domain.GLOBAL:
                return None
            if node.type.domain not in rows:
                raise CodegenError(f"{self.plan.name}: %{name} ({node.type.domain.value}) read outside its rows")
            return rows[node.type.domain]
        if node.op == Op.MATCH:
            return rows[node.type.domain]
        if node.op == Op.RESHAPE or node.op == Op.SLICE:
            return self.row_of(node.args[0], rows)
        assert node.op == Op.GATHER
        index, target = node.attrs["index"], node.attrs["to"]
        if index == "all":
            return None
        here = rows[target]
        if index == "to_dst" or (index == "dst" and self.plan.strategy == Strategy.DST_PARALLEL):
            inner = {**rows, self.nodes[node.args[0]].type.domain: rows.get(Domain.DST, here)}
            if index == "to_dst":
                inner[Domain.NODE] = here
            return self.row_of(node.args[0], inner)
        source_domain = self.nodes[node.args[0]].type.domain
        return self.row_of(node.args[0], {**rows, source_domain: self.index_at(index, target, here)})

    def read(self, name: str, flat: str, rows: dict[Domain, str], k: str | None) -> str:
        """Element ``flat`` of value ``name``; ``k`` is this lane's slot if ``flat`` is its own element."""
        node = self.nodes[name]
        local = self.local_source(name)
        if local is not None:
            if node.op == Op.SLICE:
                src = node.args[0]
                return self.read(src, slice_index(flat, node.type.shape[-1], node.attrs["start"],
                                                  self.shape(src)[-1]), rows, None)
            if node.op in VIEWS:  # reshape, or a destination's own value gathered onto its edges
                return self.read(node.args[0], flat, rows, k)
            return self.read_local(name, flat, rows, k)
        if node.op == Op.DEGREE:
            return f"(({self.acc}){self.degree_at(node.attrs['by'], rows[Domain.EDGE])})"
        source = self.view_source(name)
        if source.op == Op.CONST:
            return c_number(source.attrs["value"], self.acc)
        if source.op == Op.SIZE:
            domain = source.attrs["of"]
            return f"(({self.acc}){self._arg(f'rows_{domain.value}', 'const long long', 'rows', domain)})"
        if source.op == Op.MATCH:
            return self.match(source, self.row_of(name, rows))
        memory, flat, row = self._memory_row(name, flat, rows)
        vector = self.vector_element(memory, flat, row)
        if vector is not None:
            return vector
        return f"pg_load<{self.acc}>({self._pointer(memory, flat, row)})"

    def _memory_row(self, name: str, flat: str, rows: dict[Domain, str]) -> tuple[str, str, str | None]:
        """The input that view ``name`` reads, the element of its row, and that row (noted as read)."""
        memory, flat = self._memory_element(name, flat)
        row = self.row_of(name, rows)
        if row is not None:
            self.row_read(memory, row)
        return memory, flat, row

    def _pointer(self, memory: str, flat: str, row: str | None) -> str:
        return f"p_{memory} + {flat if row is None else f'{row} * {self.numel(memory)} + {flat}'}"

    def vector_element(self, memory: str, flat: str, row: str | None) -> str | None:
        """Element ``flat`` of row ``row`` of input ``memory`` taken from a vector load, where the
        kernel makes one there (subclasses); None: a load of its own."""
        return None

    def address(self, name: str, flat: str, rows: dict[Domain, str]) -> str | None:
        """The address of element ``flat`` of ``name`` where that element is one of an input in
        memory as stored (read through gathers, reshapes and slices only), else None."""
        if self.local_source(name) is not None or self.view_source(name).op != Op.INPUT:
            return None
        return self._pointer(*self._memory_row(name, flat, rows))

    def views_keep_pairs(self, name: str) -> bool:
        """Whether every even element of view ``name`` lies at an even offset of its input's
        rows (no slice starts or cuts at an odd column): 16-bit pairs stay 4-byte words."""
        node = self.nodes[name]
        while node.op != Op.INPUT:
            if node.op in SOURCES:  # a constant, a degree, a size or a comparison: not in memory
                return False
            if node.op == Op.SLICE and (node.attrs["start"] % 2 or node.type.shape[-1] % 2
                                        or self.shape(node.args[0])[-1] % 2):
                return False
            node = self.nodes[node.args[0]]
        return node.type.numel % 2 == 0

    def view_source(self, name: str) -> Node:
        """The node that a chain of views starting at ``name`` reads."""
        node = self.nodes[name]
        while node.op not in SOURCES:
            node = self.nodes[node.args[0]]
        return node

    def match(self, node: Node, row: str | None) -> str:
        """The 0/1 value of comparison ``node`` of two ids (or an id and a number) at ``row``."""
        if row is None:
            raise CodegenError(f"{self.plan.name}: %{node.name} read outside its rows")
        to = node.type.domain
        lhs = self.index_at(node.attrs["lhs"], to, row)
        rhs = str(int(node.attrs["value"])) if node.attrs.get("rhs") is None else self.index_at(node.attrs["rhs"], to, row)
        return f"({lhs} {C_COMPARE[node.attrs['cmp']]} {rhs} ? ({self.acc})1 : ({self.acc})0)"

    def row_read(self, memory: str, row: str) -> None:
        """Called for every read of a row of input ``memory`` (subclasses may prefetch them)."""

    def elementwise(self, node: Node, flat: str, rows: dict[Domain, str], k: str | None) -> str:
        """The expression of element ``flat`` of elementwise op ``node``, its arguments read
        at their broadcast elements (``k``: this lane's slot when that is the same element)."""
        args = []
        for a in node.args:
            same = self.shape(a) == node.type.shape
            args.append(self.read(a, flat if same else broadcast_index(flat, node.type.shape, self.shape(a)),
                                  rows, k if same else None))
        return C_EXPR[node.op](args, node.attrs, self.acc)

    def _memory_element(self, name: str, flat: str) -> tuple[str, str]:
        """The input that view ``name`` reads, and the element of one of its rows that element
        ``flat`` of the view is: gathers and reshapes keep it, slices (at any depth) shift it."""
        node = self.nodes[name]
        if node.op == Op.INPUT:
            return name, flat
        if node.op == Op.SLICE:
            src = node.args[0]
            flat = slice_index(flat, node.type.shape[-1], node.attrs["start"], self.shape(src)[-1])
        return self._memory_element(node.args[0], flat)

