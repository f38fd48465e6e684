"""Code for traversal plans (per destination over the CSR, per edge, per row of a domain).

Python decides everything about indices and names here; ``traversal.cu.j2`` holds the kernel's
structure. ``threads_per_row`` lanes share each row: a value of many features is *distributed*
(lane ``l`` holds elements ``l, l + T, ...``, chunked by ``vector_width``); a small value, or one
read at other indices (broadcast, concat, slice), is *replicated* (every lane holds all of it).
Control flow is the same for every lane of a warp (edge loops run to the warp's largest
degree), so the lanes of a row can combine partial sums with shuffles.

For the C++ target (``target="cpp"``) one thread owns each row: every value is held whole by
that thread, lane arithmetic and shuffles disappear, and feature loops carry ``omp simd``.
"""
from __future__ import annotations

import re
from math import prod

from pigeon.ir.indices import GATHER_INDICES
from pigeon.ir.ops import ELEMENTWISE, Op
from pigeon.ir.plans import SMALL_DOMAINS, CpuTraversalSchedule, KernelPlan, Strategy, TraversalSchedule, cpu_walk_order
from pigeon.ir.printer import format_node
from pigeon.ir.program import Node
from pigeon.ir.types import Domain

from .builder import VIEWS, Code, CodegenError, KernelBuilder
from .expressions import broadcast_index
from .kernel import Launch

REPLICATE_UP_TO = 8  # values of at most this many features, with every input readable anywhere, are replicated


def array_size(n: int) -> int:
    """The length of a register array of ``n`` elements: C++ and CUDA have no empty arrays
    (a value of zero-width features keeps one unused slot)."""
    return max(n, 1)


def _sums_leading_axes(full: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """Whether summing ``full`` down to ``out`` sums over leading axes only (element f adds to
    output f mod numel(out))."""
    out = tuple(out)
    while out and out[0] == 1:
        out = out[1:]
    return not out or tuple(full[len(full) - len(out):]) == out


class TraversalKernel(KernelBuilder):
    """Builds the body of one traversal kernel."""

    def __init__(self, plan: KernelPlan, name: str, target: str = "cuda"):
        expected = CpuTraversalSchedule if target == "cpp" else TraversalSchedule
        if not isinstance(plan.schedule, expected):
            raise CodegenError(f"{plan.name}: not a {target} traversal plan (schedule {type(plan.schedule).__name__})")
        super().__init__(plan, name)
        self.s = plan.schedule
        self.cpu = target == "cpp"
        if self.cpu:
            self.tpr = self.vw = self.block = self.rows_per_block = 1
        else:
            self.tpr, self.vw = self.s.threads_per_row, self.s.vector_width
            self.block = max(32, self.s.rows_per_block * self.tpr)  # schedules are checked by render()
            self.rows_per_block = self.block // self.tpr
        self.layout: dict[str, str] = {}  # computed value -> "dist" | "repl" | "both" | "inline"
        self.code = Code()
        self.ordered_by = cpu_walk_order(self.plan) if self.cpu else None
        self.private: dict[str, str] = {}  # scatter target -> its row count: private copies per thread
        self.private_maxima: set[str] = set()  # the private copies that take a maximum, not a sum
        self._loop_rows: dict[tuple[str, str], None] | None = None  # rows read in the open edge loop
        self._loop_start = 0
        self.split = False  # a hub may be split over several blocks (CUDA, one pass)
        self._vector_loads: dict[tuple[str, str | None], str] | None = None  # in a chunk loop: (input, row) -> array

    # ---- layouts ------------------------------------------------------------------------

    def readable_anywhere(self, name: str) -> bool:
        if self.cpu:  # one thread holds every element of every value
            return True
        src = self.local_source(name)
        return src is None or self.layout.get(src) in ("repl", "both")

    def read_elsewhere(self, name: str) -> bool:
        """Whether a user reads ``name`` (through views) at another index than its own element."""
        for user in self.users.get(name, ()):
            node = self.nodes[user]
            if node.op == Op.RESHAPE or (node.op == Op.GATHER and node.attrs["index"] == "dst"):
                if self.read_elsewhere(user):
                    return True
            elif node.op in (Op.SLICE, Op.CONCAT):
                return True
            elif node.op in ELEMENTWISE and node.type.shape != self.shape(name):
                return True
            elif node.op in (Op.DOT, Op.SUM_TO) and self._dot_shape(node) != self.shape(name):
                return True
        return False

    def _dot_shape(self, node: Node) -> tuple[int, ...]:
        if node.op == Op.SUM_TO:
            return self.shape(node.args[0])
        from pigeon.ir.shape_inference import broadcast_shapes
        return broadcast_shapes(self.shape(node.args[0]), self.shape(node.args[1]))

    # ---- element access -----------------------------------------------------------------

    def read_local(self, name: str, flat: str, rows: dict[Domain, str], k: str | None) -> str:
        if self.layout[name] == "inline":
            return f"({self.elementwise(self.nodes[name], flat, rows, k)})"
        if self.layout[name] in ("repl", "both"):
            return f"r_{name}[{flat}]"
        if self.cpu:
            return f"v_{name}[{flat}]"
        if k is None:
            raise CodegenError(f"{self.plan.name}: %{name} is read at another lane's element")
        return f"v_{name}[{k}]"

    def chunks(self, n: int) -> int:
        """Register slots a lane holds of a distributed value of ``n`` elements."""
        per_round = self.tpr * self.vw
        return ((n + per_round - 1) // per_round) * self.vw

    def dist_index(self, lane: str, k: str) -> str:
        if self.cpu:
            return k
        if self.vw == 1:
            return f"({lane} + {k} * {self.tpr})"
        return f"((({k}) / {self.vw} * {self.tpr} + {lane}) * {self.vw} + ({k}) % {self.vw})"

    # ---- values -------------------------------------------------------------------------

    def compute(self, node: Node, rows: dict[Domain, str]) -> None:
        """Code computing ``node`` in registers."""
        c = self.code
        c.add(f"// {format_node(node)}")
        n = node.type.numel
        if node.op in (Op.DOT, Op.SUM_TO):
            self._reduce_features(node, rows)
            return
        if node.op == Op.CONCAT:
            self.layout[node.name] = "repl"
            c.add(f"{self.acc} r_{node.name}[{array_size(n)}];")
            start = 0
            for a in node.args:
                width, total = self.shape(a)[-1], node.type.shape[-1]
                c.open(f"for (int f = 0; f < {self.numel(a)}; ++f)")
                c.add(f"r_{node.name}[(f / {width}) * {total} + {start} + f % {width}] = {self.read(a, 'f', rows, None)};")
                c.close()
                start += width
            return
        if node.op not in ELEMENTWISE:
            raise CodegenError(f"{self.plan.name}: no traversal code for {node.op.value}")
        anywhere = all(self.readable_anywhere(a) for a in node.args)
        if anywhere and n <= REPLICATE_UP_TO:
            self.layout[node.name] = "repl"
            c.add(f"{self.acc} r_{node.name}[{array_size(n)}];")
            c.add(f"for (int f = 0; f < {n}; ++f) r_{node.name}[f] = {self.elementwise(node, 'f', rows, None)};")
            return
        if self.inlined(node):
            self.layout[node.name] = "inline"
            c.add(f"// (computed where it is read: %{node.name} is read once, at its own elements)")
            return
        self.layout[node.name] = "dist"
        slots = self.chunks(n)
        c.add(f"{self.acc} v_{node.name}[{array_size(slots)}];")

        def element() -> str:
            value = self.elementwise(node, 'f', rows, 'k')
            return f"v_{node.name}[k] = {value};" if self.cpu else f"v_{node.name}[k] = f < {n} ? {value} : ({self.acc})0;"
        self.slot_loop(n, element)
        if self.read_elsewhere(node.name):
            self.gather_lanes(node.name, n)

    def inlined(self, node: Node) -> bool:
        """CUDA row maps: whether distributed value ``node`` is computed where it is read, not
        held in a register array per lane (a row of a relation's weights, thousands of elements,
        would fill the registers and spill to the stack). So is a value read once, at its own
        elements, and one only stored."""
        if self.cpu or self.plan.strategy != Strategy.ROW_MAP:
            return False
        name = node.name
        while True:
            users = self.users.get(name, ())
            if name in self.plan.writes:
                return not users
            if len(users) != 1:
                return False
            user = self.nodes[users[0]]
            if user.args.count(name) != 1:
                return False
            if user.op == Op.RESHAPE:
                name = user.name
                continue
            if user.op in ELEMENTWISE:
                return user.type.shape == self.shape(name)
            if user.op in (Op.DOT, Op.SUM_TO):
                return self._dot_shape(user) == self.shape(name)
            return False

    def slot_loop(self, n: int, element, guard: str = "") -> None:
        """The loop over this lane's slots ``k`` (elements ``f``) of a distributed value of ``n``
        elements; ``element()`` makes the statement for one. With ``vector_width`` > 1 on CUDA
        the loop runs over chunks of that many consecutive features, and the statement's reads
        of inputs at its own elements come from one vector load per chunk (a ``float4``, say),
        made where ``guard`` holds for the lane."""
        c = self.code
        if self.cpu or self.vw == 1 or n % self.vw:
            self.simd()
            c.open(f"for (int k = 0; k < {self.chunks(n)}; ++k)")
            c.add(f"const int f = {self.dist_index('lane', 'k')};")
            c.add(element())
            c.close()
            return
        c.open(f"for (int chunk = 0; chunk < {self.chunks(n) // self.vw}; ++chunk)")
        c.add(f"const int f0 = (chunk * {self.tpr} + lane) * {self.vw};  // this chunk's first feature")
        self._vector_loads = {}
        statement = element()
        loads, self._vector_loads = self._vector_loads, None
        for (memory, row), array in loads.items():
            c.add(f"{self.acc} {array}[{self.vw}];")
            c.add(f"if ({guard}f0 < {n}) pg_load_vector<{self.vw}>({array}, {self._pointer(memory, 'f0', row)});")
        c.open(f"for (int j = 0; j < {self.vw}; ++j)")
        c.add(f"const int k = chunk * {self.vw} + j, f = f0 + j;")
        c.add(statement)
        c.close()
        c.close()

    def vector_element(self, memory: str, flat: str, row: str | None) -> str | None:
        if self._vector_loads is None or flat != "f" or self.numel(memory) % self.vw:
            return None
        key = (memory, row)
        if key not in self._vector_loads:
            self._vector_loads[key] = f"x_{memory}_{len(self._vector_loads)}"
        return f"{self._vector_loads[key]}[j]"

    def gather_lanes(self, name: str, n: int) -> None:
        """Make a distributed value replicated: every lane collects every element (shuffles)."""
        c = self.code
        self.layout[name] = "both"
        if self.cpu:  # one thread holds every element already
            c.add(f"const {self.acc}* r_{name} = v_{name};")
            return
        c.add(f"{self.acc} r_{name}[{array_size(n)}];")
        c.open(f"for (int k = 0; k < {self.chunks(n)}; ++k)")
        c.open(f"for (int source = 0; source < {self.tpr}; ++source)")
        c.add(f"const int f = {self.dist_index('source', 'k')};")
        c.add(f"const {self.acc} element = pg_group_get(v_{name}[k], source, {self.tpr});")
        c.add(f"if (f < {n}) r_{name}[f] = element;")
        c.close()
        c.close()

    def _reduce_features(self, node: Node, rows: dict[Domain, str]) -> None:
        """dot (sum of products over the last axis) or sum_to: a replicated result."""
        c = self.code
        full = self._dot_shape(node)
        n_in, n_out = prod(full), node.type.numel
        self.layout[node.name] = "repl"

        def term(flat: str, k: str | None) -> str:
            if node.op == Op.SUM_TO:
                return self.read(node.args[0], flat, rows, k)
            parts = []
            for a in node.args:
                same = self.shape(a) == full
                parts.append(self.read(a, flat if same else broadcast_index(flat, full, self.shape(a)), rows,
                                       k if same else None))
            return f"{parts[0]} * {parts[1]}"

        target = (lambda flat: f"({flat}) / {full[-1]}") if node.op == Op.DOT else (
            lambda flat: broadcast_index(flat, full, node.type.shape))
        c.add(f"{self.acc} r_{node.name}[{array_size(n_out)}];")
        if self.cpu and node.op == Op.DOT:  # one vectorised sum per output element
            inner = full[-1]
            c.open(f"for (int o = 0; o < {n_out}; ++o)")
            c.add(f"{self.acc} total = ({self.acc})0;")
            c.add("#pragma omp simd reduction(+:total)")
            c.add(f"for (int j = 0; j < {inner}; ++j) total += {term(f'(o * {inner} + j)', None)};")
            c.add(f"r_{node.name}[o] = total;")
            c.close()
            return
        anywhere = all(self.readable_anywhere(a) for a in node.args)
        if anywhere and node.op == Op.DOT and n_out > REPLICATE_UP_TO:
            # many outputs: each lane computes its own, in registers (a replicated array indexed
            # at run time would live in local memory)
            c.lines.pop()
            inner = full[-1]
            self.layout[node.name] = "dist"
            c.add(f"{self.acc} v_{node.name}[{array_size(self.chunks(n_out))}];")
            c.open(f"for (int k = 0; k < {self.chunks(n_out)}; ++k)")
            c.add(f"const int o = {self.dist_index('lane', 'k')};")
            c.add(f"{self.acc} total = ({self.acc})0;")
            c.add(f"if (o < {n_out}) for (int j = 0; j < {inner}; ++j) total += {term(f'(o * {inner} + j)', None)};")
            c.add(f"v_{node.name}[k] = total;")
            c.close()
            if self.read_elsewhere(node.name):
                self.gather_lanes(node.name, n_out)
            return
        memory_only = all(self.local_source(a) is None for a in node.args)
        if anywhere and node.op == Op.DOT and memory_only and self.tpr > 1:
            # operands in memory: the lanes split each output's sum and combine with shuffles
            inner = full[-1]
            c.open(f"for (int o = 0; o < {n_out}; ++o)")
            c.add(f"{self.acc} total = ({self.acc})0;")
            c.add(f"for (int j = lane; j < {inner}; j += {self.tpr}) total += {term(f'(o * {inner} + j)', None)};")
            c.add(f"r_{node.name}[o] = pg_group_sum(total, {self.tpr});")
            c.close()
            return
        if (node.op == Op.SUM_TO and not anywhere and not self.cpu and self.vw == 1 and n_out > REPLICATE_UP_TO
                and n_out % self.tpr == 0 and _sums_leading_axes(full, node.type.shape)):
            # element f = lane + T k adds to output f mod n_out = lane + T (k mod n_out / T): each
            # lane alone sums its own outputs, held in registers (no array indexed at run time)
            c.lines.pop()
            self.layout[node.name] = "dist"
            slots = n_out // self.tpr
            c.add(f"{self.acc} v_{node.name}[{slots}];")
            c.open(f"for (int j = 0; j < {slots}; ++j)")
            c.add(f"{self.acc} total = ({self.acc})0;")
            c.open(f"for (int k = j; k < {self.chunks(n_in)}; k += {slots})")
            c.add(f"const int f = {self.dist_index('lane', 'k')};")
            c.add(f"if (f < {n_in}) total += {term('f', 'k')};")
            c.close()
            c.add(f"v_{node.name}[j] = total;")
            c.close()
            if self.read_elsewhere(node.name):
                self.gather_lanes(node.name, n_out)
            return
        c.add(f"for (int o = 0; o < {n_out}; ++o) r_{node.name}[o] = ({self.acc})0;")
        if anywhere:
            c.add(f"for (int f = 0; f < {n_in}; ++f) r_{node.name}[{target('f')}] += {term('f', None)};")
            return
        c.open(f"for (int k = 0; k < {self.chunks(n_in)}; ++k)")
        c.add(f"const int f = {self.dist_index('lane', 'k')};")
        c.add(f"if (f < {n_in}) r_{node.name}[{target('f')}] += {term('f', 'k')};")
        c.close()
        if not self.cpu:
            c.add(f"for (int o = 0; o < {n_out}; ++o) r_{node.name}[o] = pg_group_sum(r_{node.name}[o], {self.tpr});")

    # ---- memory writes --------------------------------------------------------------------

    def lane_elements(self, name: str) -> tuple[str, str | None]:
        """The loop header over the elements of ``name`` this lane writes, and its slot."""
        n = self.numel(name)
        source = self.local_source(name)
        if self.layout.get(source or "", "repl") in ("dist", "inline") and self._same_elements(name, source):
            return f"for (int k = 0; k < {self.chunks(n)}; ++k)", "k"
        if self.cpu:
            return f"for (int f = 0; f < {n}; ++f)", None
        return f"for (int f = lane; f < {n}; f += {self.tpr})", None

    def _same_elements(self, name: str, source: str) -> bool:
        """Whether element f of ``name`` is element f of ``source`` (reshapes and gathers of
        local values in between keep the element order; slices do not)."""
        while name != source:
            node = self.nodes[name]
            if node.op not in (Op.RESHAPE, Op.GATHER):
                return False
            name = node.args[0]
        return True

    def simd(self) -> None:
        """Vectorise the feature loop that follows (C++ target)."""
        if self.cpu:
            self.code.add("#pragma omp simd")

    def guarded_loop(self, guard: str, loop: str, vector: bool = True) -> None:
        """Open ``loop`` for the rows where ``guard`` holds (on a CPU every row it runs is live)."""
        if self.cpu:
            if vector:
                self.simd()
            self.code.open(loop)
        else:
            self.code.open(f"if ({guard}) " + loop)

    def store(self, name: str, rows: dict[Domain, str], row: str | None, guard: str) -> None:
        c = self.code
        n = self.numel(name)
        loop, k = self.lane_elements(name)
        self.guarded_loop(guard, loop)
        if k is not None:
            c.add(f"const int f = {self.dist_index('lane', 'k')};")
            if not self.cpu:
                c.add(f"if (f >= {n}) continue;")
        offset = "f" if row is None else f"{row} * {n} + f"
        c.add(f"pg_store(p_{name} + {offset}, {self.read(name, 'f', rows, k)});")
        c.close()

    def scatter(self, node: Node, rows: dict[Domain, str], guard: str) -> None:
        """A reduction into another domain's rows, with atomics (target zero-filled first)."""
        c = self.code
        c.add(f"// {format_node(node)}")
        kind = node.attrs["kind"]
        source = self.nodes[node.args[0]]
        index, to = node.attrs["index"], node.attrs["to"]
        mean_per_dst = kind == "mean" and index == "dst" and source.type.domain == Domain.EDGE
        # a maximum starts from -infinity in the rows that values reach and from 0 in the others
        # (the launcher fills them so), as the reference's empty rows are 0
        maximum = kind == "max" and index != "to_dst"
        if kind != "sum" and not mean_per_dst and not maximum:
            raise CodegenError(f"{self.plan.name}: cannot scatter a {kind} along {index} with atomics")
        private = self.cpu and node.type.domain in SMALL_DOMAINS and index != "to_dst"
        if maximum and self.storage != self.acc and not private:
            raise CodegenError(f"{self.plan.name}: no atomic maximum of 16-bit values")
        here = rows[source.type.domain]
        if index == "all":
            row = None
        elif index == "to_dst":
            row = here
        else:
            if (to, source.type.domain) not in GATHER_INDICES[index]:
                raise CodegenError(f"{self.plan.name}: cannot scatter along {index}")
            row = self.index_at(index, source.type.domain, here)
        if node.name not in self.plan.writes:
            raise CodegenError(f"{self.plan.name}: scatter %{node.name} is not stored")
        (self.max_filled if maximum else self.zero_filled).append(node.name)
        n = node.type.numel
        if self.cpu and self.ordered_by == index and row is not None:
            self._ordered_scatter(node, rows, row, mean_per_dst, maximum)
            return
        loop, k = self.lane_elements(node.args[0])
        self.guarded_loop(guard, loop, vector=False)  # atomics do not vectorise
        if k is not None:
            c.add(f"const int f = {self.dist_index('lane', 'k')};")
            if not self.cpu:
                c.add(f"if (f >= {n}) continue;")
        offset = "f" if row is None else f"{row} * {n} + f"
        value = self.read(node.args[0], "f", rows, k)
        if mean_per_dst:  # each edge adds its share of its destination's mean
            value = f"{value} / ({self.acc}){self.degree_at('dst', here)}"
        if self.cpu and index == "to_dst":  # a destination's own node: this thread alone adds there
            c.add(f"pg_add(p_{node.name} + {offset}, {value});")
        elif private:
            if maximum:
                c.add(f"pg_max_into(t_{node.name}.data() + {offset}, {value});")
            else:
                c.add(f"t_{node.name}[{offset}] += {value};")
            self.private[node.name] = self._arg(f"rows_{node.type.domain.value}", "const long long", "rows",
                                                node.type.domain) if node.type.domain != Domain.GLOBAL else "1"
            if maximum:
                self.private_maxima.add(node.name)
        else:
            c.add(f"pg_atomic_{'max' if maximum else 'add'}(p_{node.name} + {offset}, {value});")
        c.close()

    def _ordered_scatter(self, node: Node, rows: dict[Domain, str], target: str, mean_per_dst: bool,
                         maximum: bool = False) -> None:
        """A scatter of a kernel that walks its rows in target order (C++): only the first and
        the last target of a thread's range are shared with other threads and need atomics."""
        c = self.code
        n = node.type.numel
        source = self.nodes[node.args[0]].type.domain
        value = self.read(node.args[0], "f", rows, "f" if self.local_source(node.args[0]) == node.args[0] else None)
        if mean_per_dst:
            value = f"{value} / ({self.acc}){self.degree_at('dst', rows[source])}"
        c.block()
        c.add(f"const long long target = {target};")
        c.open("if (target == first_target || target == last_target)")
        shared, alone = ("pg_atomic_max", "pg_max_into") if maximum else ("pg_atomic_add", "pg_add")
        c.add(f"for (int f = 0; f < {n}; ++f) {shared}(p_{node.name} + target * {n} + f, {value});")
        c.otherwise()
        c.add("#pragma omp simd")
        c.add(f"for (int f = 0; f < {n}; ++f) {alone}(p_{node.name} + target * {n} + f, {value});")
        c.close()
        c.close()

    def index_at(self, index: str, target: Domain, row: str) -> str:
        order = self._walk_order(row)
        if order is None:
            return super().index_at(index, target, row)
        by, domain, at = order
        name = self._arg(f"p_index_{index}_{target.value}_by_{by}", "const long long* __restrict__", "index_in_order",
                         ("index", (index, target), by, domain))
        return f"{name}[{at}]"

    def degree_at(self, by: str, edge: str) -> str:
        order = self._walk_order(edge)
        if order is None:
            return super().degree_at(by, edge)
        walk, domain, at = order
        name = self._arg(f"p_degree_{by}_by_{walk}", "const long long* __restrict__", "index_in_order",
                         ("degree", by, walk, domain))
        return f"{name}[{at}]"

    def _walk_order(self, row: str) -> tuple[str, Domain, str] | None:
        """Where C++ walks rows in an order of their own (a scatter's target order, or a
        destination's edges in CSR order) and ``row`` is the row walked: (that order, the rows'
        domain, the position in it). Graph arrays read there come in that order, read front to
        back instead of at random rows."""
        if not self.cpu:
            return None
        if getattr(self, "ordered_by", None) is not None and row == "row":
            return self.ordered_by, self.plan.domain, "position"
        if self.plan.strategy == Strategy.DST_PARALLEL and row == "e":
            return "csr", Domain.EDGE, "begin + i"
        return None

    # ---- kernel bodies --------------------------------------------------------------------

    def computed(self) -> list[Node]:
        return [n for n in self.plan.ops if n.op not in VIEWS]

    def is_dst_reduce(self, node: Node) -> bool:
        return (node.op == Op.REDUCE and node.attrs["index"] == "dst"
                and self.nodes[node.args[0]].type.domain == Domain.EDGE and node.type.domain == Domain.DST)

    def straight_line(self, domain: Domain) -> None:
        """Every op once per row of ``domain`` (edge-parallel and row-map kernels)."""
        rows = {domain: "row"}
        self._loop_rows = {}
        for node in self.computed():
            if node.op == Op.REDUCE:
                self.scatter(node, rows, "valid")
            else:
                self.compute(node, rows)
        for w in self.plan.writes:
            if self.nodes[w].op != Op.REDUCE:
                self.store(w, rows, None if domain == Domain.GLOBAL else "row", "valid")
        reads, self._loop_rows = self._loop_rows, None
        distance = getattr(self.s, "prefetch", 0)
        if not (self.cpu and distance and reads):
            return
        if self.ordered_by is not None:  # rows in target order: every row read is a random one
            guard, ahead = f"position + {distance} < hi", f"p_order[position + {distance}]"
        else:
            guard, ahead = f"row + {distance} < num_rows", f"row + {distance}"
        prefetches = []
        for memory, row in reads:
            row_ahead = re.sub(r"\bposition\b", f"(position + {distance})", re.sub(r"\brow\b", "row_ahead", row))
            prefetches.append(f"    pg_prefetch(p_{memory} + {row_ahead} * {self.numel(memory)}, {self.numel(memory)});")
        lines = [f"if ({guard}) {{  // rows that the row {distance} ahead reads"]
        if any(re.search(r"\brow_ahead\b", p) for p in prefetches):
            lines.append(f"    const long long row_ahead = {ahead};")
        self.code.lines[0:0] = ["    " * self.code.depth + line for line in lines + prefetches + ["}"]]

    def closure(self, targets: list[str]) -> list[Node]:
        """The edge ops the targets need, in program order."""
        need: set[str] = set()
        stack = list(targets)
        while stack:
            name = stack.pop()
            node = self.nodes[name]
            if name in need or node.op == Op.INPUT:
                continue
            if node.type.domain == Domain.EDGE or node.op in VIEWS:
                need.add(name)
                stack += list(node.args)
        return [n for n in self.plan.ops if n.name in need and n.op not in VIEWS]

    def per_destination(self) -> None:
        """Per destination: one loop over its incoming edges per reduction, then the edge stores."""
        c = self.code
        dst_rows = {Domain.DST: "v", Domain.NODE: "v"}
        edge_rows = {**dst_rows, Domain.EDGE: "e"}
        indptr = self._arg("p_indptr", "const long long* __restrict__", "indptr")
        eids = self._arg("p_eids", "const long long* __restrict__", "eids")
        scatters = [n for n in self.computed() if n.op == Op.REDUCE and not self.is_dst_reduce(n)]
        edge_sinks = [n.name for n in scatters if self.nodes[n.args[0]].type.domain == Domain.EDGE]
        edge_writes = [w for w in self.plan.writes if self.nodes[w].type.domain == Domain.EDGE
                       and self.nodes[w].op != Op.REDUCE]
        edge_targets = [self.nodes[s].args[0] for s in edge_sinks] + edge_writes
        reductions = [n for n in self.computed() if self.is_dst_reduce(n)]
        online = self.online_softmax_pairs()
        weighted = self.softmax_aggregates(online)
        in_online_pass = set(online.values()) | {agg for agg, _, _ in weighted.values()}
        passes = len([r for r in reductions if r.name not in in_online_pass])
        # one pass over the edges and nothing stored per edge: a hub may be split over several
        # blocks, whose results the last one to finish combines
        self.split = not self.cpu and passes == 1 and not edge_targets
        c.add(f"const long long begin = {indptr}[v];")
        if self.cpu:
            c.add(f"const long long degree = {indptr}[v + 1] - begin;")
        else:
            c.add(f"const long long degree = valid ? {indptr}[v + 1] - begin : 0;")
            c.add("long long edge_lo = 0, edge_hi = degree;  // the edges this group's block takes")
            if self.split:
                chunks = self._arg("p_chunks", "const long long* __restrict__", "work_chunks", self.work_key())
                c.add(f"const long long* chunk_row = {chunks} + 4 * (long long)blockIdx.x;")
                c.add("const long long chunk = chunk_row[0], chunks = chunk_row[1];")
                c.add("// a hub split over several blocks: this block takes one of equal ranges of its edges")
                c.open("if (chunks > 1)")
                c.add("const long long share = (degree + chunks - 1) / chunks;")
                c.add("edge_lo = chunk * share < degree ? chunk * share : degree;")
                c.add("edge_hi = edge_lo + share < degree ? edge_lo + share : degree;")
                c.close()
            c.add("const long long edge_end = pg_warp_max(edge_hi);  // the same trip count for the whole warp")
            c.add(f"__shared__ {self.acc} pg_parts[{self.block}];  // a hub's partial results, one per thread")

        def edge_loop(body_targets: list[str]) -> None:
            if self.cpu:
                c.open("for (long long i = 0; i < degree; ++i)")
                c.add(f"const long long e = {eids}[begin + i];")
                self._loop_start, self._loop_rows = len(c.lines), {}
            else:  # the same trip count for every group of a block: groups of one warp shuffle together
                c.open("for (long long i0 = edge_lo; i0 < edge_end; i0 += parts)")
                c.add("const long long i = i0 + part;")
                c.add("const bool live = i < edge_hi;")
                c.add(f"const long long e = live ? {eids}[begin + i] : 0;")
            for node in self.closure(body_targets):
                if node.op == Op.REDUCE:
                    continue
                self.compute(node, edge_rows)

        def edge_outputs() -> None:
            for s in edge_sinks:
                self.scatter(self.nodes[s], edge_rows, "live")
            for w in edge_writes:
                self.store(w, edge_rows, "e", "live")

        # On a CPU the edge stores and scatters join the last reduction's pass over the edges
        # when they need nothing that pass computes.
        last = reductions[-1].name if reductions else None
        if not (self.cpu and edge_targets and last and self._independent_of(edge_targets, last)):
            last = None
        if last in in_online_pass:
            last = None  # computed in an online softmax's pass (its edge outputs would need its final sum)
        for node in self.computed():
            if node.name in in_online_pass:
                continue  # computed in one pass with its maximum
            if node.name in online:
                self._online_softmax(node, self.nodes[online[node.name]], edge_loop, edge_rows,
                                     weighted.get(node.name))
            elif self.is_dst_reduce(node):
                merged = (edge_targets, edge_outputs) if node.name == last else None
                self._dst_reduce(node, edge_loop, edge_rows, merged)
            elif node.type.domain == Domain.DST:
                self.compute(node, dst_rows)
        if (edge_sinks or edge_writes) and last is None:
            saved = dict(self.layout)
            edge_loop(edge_targets)
            edge_outputs()
            self.close_edge_loop()
            self.layout = saved
        owner = "valid" if self.cpu else "valid && part == 0"  # a hub's first group stores for all
        for node in scatters:  # reductions of destination values, once per destination
            if node.name not in edge_sinks:
                self.scatter(node, dst_rows, owner)
        for w in self.plan.writes:
            node = self.nodes[w]
            if node.type.domain == Domain.DST and not (node.op == Op.REDUCE and not self.is_dst_reduce(node)):
                self.store(w, dst_rows, "v", owner)

    def row_read(self, memory: str, row: str) -> None:
        """Remember the rows read through an index in the open loop (C++): they are prefetched."""
        if not self.cpu or self._loop_rows is None or self.nodes[memory].type.domain in SMALL_DOMAINS:
            return  # parameters have few rows, in cache anyway
        per_destination = self.plan.strategy == Strategy.DST_PARALLEL
        if (per_destination and ("[e]" in row or "[begin + i]" in row)) or (
                not per_destination and ("[row]" in row or "[position]" in row)) or (
                self.ordered_by is not None and row == "row"):
            self._loop_rows[(memory, row)] = None

    def close_edge_loop(self) -> None:
        """Close a loop over a destination's edges; on a CPU, first prefetch (at its top) the rows
        that the edge ``prefetch`` places ahead reads through indices: the latency of those
        random reads, not arithmetic, bounds such loops."""
        c = self.code
        rows, self._loop_rows = self._loop_rows, None
        distance = getattr(self.s, "prefetch", 0)
        if self.cpu and not any(re.search(r"\be\b", line) for line in c.lines[self._loop_start:]):
            del c.lines[self._loop_start - 1]  # the edge id: every array this loop reads comes in CSR order
            self._loop_start -= 1
        if self.cpu and rows and distance:
            depth = "    " * c.depth
            prefetches = []
            for memory, row in rows:
                ahead = row.replace("[e]", "[e_ahead]").replace("[begin + i]", f"[begin + i + {distance}]")
                prefetches.append(f"{depth}    pg_prefetch(p_{memory} + {ahead} * {self.numel(memory)}, "
                                  f"{self.numel(memory)});")
            lines = [f"{depth}if (i + {distance} < degree) {{  // rows the edge {distance} ahead reads"]
            if any("e_ahead" in p for p in prefetches):
                lines.append(f"{depth}    const long long e_ahead = {self.args['p_eids'].name}[begin + i + {distance}];")
            lines += prefetches + [f"{depth}}}"]
            c.lines[self._loop_start:self._loop_start] = lines
        c.close()

    def _ancestors(self, names: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack += list(self.nodes[name].args)
        return seen

    def _independent_of(self, targets: list[str], reduction: str) -> bool:
        """Whether ``targets`` need neither ``reduction`` nor a destination value computed after it."""
        order = [n.name for n in self.computed()]
        later = set(order[order.index(reduction):])
        return not (self._ancestors(targets) & later)

    def online_softmax_pairs(self) -> dict[str, str]:
        """max reduction -> the sum reduction of ``exp(score - max)`` over the same edges: the two
        are computed in one pass (the running sum rescaled whenever the maximum grows)."""
        pairs = {}
        for total in self.computed():
            if not (self.is_dst_reduce(total) and total.attrs["kind"] == "sum"):
                continue
            exp = self.nodes[total.args[0]]
            if exp.op != Op.EXP or self.nodes[exp.args[0]].op != Op.SUB:
                continue
            score, shifted = self.nodes[exp.args[0]].args
            view = self.nodes[shifted]
            if view.op != Op.GATHER or view.attrs["index"] != "dst":
                continue
            top = self.nodes[view.args[0]]
            if (self.is_dst_reduce(top) and top.attrs["kind"] == "max" and top.args[0] == score
                    and top.type.shape == total.type.shape == self.shape(score)):
                pairs[top.name] = total.name
        return pairs

    def softmax_aggregates(self, online: dict[str, str]) -> dict[str, tuple[str, str, str]]:
        """max reduction (of an online pair) -> (aggregate, softmax, x): the sum over the same
        edges of ``softmax * x``, where softmax = exp(score - max) / sum and x needs none of the
        three. Its pass is theirs: the running aggregate is rescaled with the sum, then divided
        by it once at the end."""
        found: dict[str, tuple[str, str, str]] = {}
        order = [n.name for n in self.computed()]
        for top, total in online.items():
            numerator = self.nodes[total].args[0]
            after = {n for n in order[order.index(top):] if self.nodes[n].type.domain != Domain.EDGE}
            for agg in self.computed():
                product = self.nodes[agg.args[0]]
                if not (self.is_dst_reduce(agg) and agg.attrs["kind"] == "sum" and product.op == Op.MUL
                        and product.type.shape == agg.type.shape):
                    continue
                for softmax, x in (product.args, product.args[::-1]):
                    ratio = self.nodes[softmax]
                    if ratio.op != Op.DIV or ratio.args[0] != numerator:
                        continue
                    denominator = self.nodes[ratio.args[1]]
                    if (denominator.op == Op.GATHER and denominator.attrs["index"] == "dst"
                            and denominator.args[0] == total and not self._ancestors([x]) & after):
                        found[top] = (agg.name, softmax, x)
                        break
                if top in found:
                    break
        return found

    def _online_softmax(self, top: Node, total: Node, edge_loop, edge_rows: dict[Domain, str],
                        weighted: tuple[str, str, str] | None = None) -> None:
        c, acc, n = self.code, self.acc, top.type.numel
        score = top.args[0]
        c.add(f"// {format_node(top)}")
        c.add(f"// {format_node(total)}")
        c.add("// in one pass (online softmax): the running sum is rescaled whenever the maximum grows")
        c.add(f"{acc} a_{top.name}[{array_size(n)}], a_{total.name}[{array_size(n)}];")
        c.add(f"for (int s = 0; s < {n}; ++s) a_{top.name}[s] = -PG_INFINITY, a_{total.name}[s] = ({acc})0;")
        slots = 0
        if weighted:
            agg, softmax, x = weighted
            width = self.numel(agg)
            slots = width if self.cpu else self.chunks(width)
            c.add(f"// {format_node(self.nodes[agg])}: also in this pass, rescaled with the sum")
            c.add(f"{acc} a_{agg}[{array_size(slots)}];")
            c.add(f"for (int s = 0; s < {slots}; ++s) a_{agg}[s] = ({acc})0;")
        saved = dict(self.layout)
        edge_loop([score] + ([x] if weighted else []))
        source = self.local_source(score)
        if not self.readable_anywhere(score) and self.layout.get(source) == "dist":
            self.gather_lanes(source, self.numel(source))  # many heads: every lane needs each score
        if not self.readable_anywhere(score):
            raise CodegenError(f"{self.plan.name}: the score %{score} of an online softmax is not held by every lane")
        if weighted:
            c.add(f"{acc} rescale[{array_size(n)}], weight[{array_size(n)}];  // of the aggregate so far, of this edge")
        c.open(f"for (int f = 0; f < {n}; ++f)")
        if not self.cpu:  # an edge past this destination's last changes nothing
            if weighted:
                c.add(f"rescale[f] = ({acc})1, weight[f] = ({acc})0;")
            c.add("if (!live) continue;")
        c.add(f"const {acc} x = {self.read(score, 'f', edge_rows, None)};")
        c.open(f"if (x > a_{top.name}[f])")
        c.add(f"const {acc} scale = exp(a_{top.name}[f] - x);")
        c.add(f"a_{total.name}[f] = a_{total.name}[f] * scale + ({acc})1;")
        c.add(f"a_{top.name}[f] = x;")
        if weighted:
            c.add(f"rescale[f] = scale, weight[f] = ({acc})1;")
        c.otherwise()
        c.add(f"const {acc} w = exp(x - a_{top.name}[f]);")
        c.add(f"a_{total.name}[f] += w;")
        if weighted:
            c.add(f"rescale[f] = ({acc})1, weight[f] = w;")
        c.close()
        c.close()
        if weighted:
            if self.cpu:
                head = broadcast_index("j", self.shape(agg), self.shape(softmax))
                value = self.read(x, broadcast_index("j", self.shape(agg), self.shape(x)), edge_rows, None)
                c.add("#pragma omp simd")
                c.add(f"for (int j = 0; j < {width}; ++j) a_{agg}[j] = a_{agg}[j] * rescale[{head}] + weight[{head}] * {value};")
            else:
                head = broadcast_index("f", self.shape(agg), self.shape(softmax))
                own = self.shape(x) == self.shape(agg) and self.local_source(x) == x

                def element() -> str:
                    value = self.read(x, "f" if self.shape(x) == self.shape(agg) else
                                      broadcast_index("f", self.shape(agg), self.shape(x)), edge_rows, "k" if own else None)
                    return f"if (live && f < {width}) a_{agg}[k] = a_{agg}[k] * rescale[{head}] + weight[{head}] * {value};"
                self.slot_loop(width, element, guard="live && ")
        self.close_edge_loop()
        self.layout = saved
        if not self.cpu:
            self._combine_online_parts(top.name, total.name, n, weighted, slots)
            self.combine_blocks([(f"a_{top.name}", n), (f"a_{total.name}", n)]
                                + ([(f"a_{weighted[0]}", slots)] if weighted else []), "online",
                                (top.name, total.name, n, weighted, slots))
        c.add(f"{acc} r_{top.name}[{array_size(n)}], r_{total.name}[{array_size(n)}];")
        c.add(f"for (int s = 0; s < {n}; ++s) r_{top.name}[s] = degree > 0 ? a_{top.name}[s] : ({acc})0, "
              f"r_{total.name}[s] = a_{total.name}[s];")
        self.layout[top.name] = self.layout[total.name] = "repl"
        if weighted:
            c.add(f"{acc} v_{agg}[{array_size(slots)}];")
            if self.cpu:
                c.add(f"for (int j = 0; j < {width}; ++j) v_{agg}[j] = degree > 0 ? a_{agg}[j] / r_{total.name}[{head}] : ({acc})0;")
            else:
                c.open(f"for (int k = 0; k < {slots}; ++k)")
                c.add(f"const int f = {self.dist_index('lane', 'k')};")
                c.add(f"v_{agg}[k] = degree > 0 && f < {width} ? a_{agg}[k] / r_{total.name}[{head}] : ({acc})0;")
                c.close()
            self.layout[agg] = "dist"
            if not self.cpu and self.read_elsewhere(agg):
                self.gather_lanes(agg, width)

    def _combine_online_parts(self, top: str, total: str, n: int, weighted, slots: int) -> None:
        """The groups of a hub's block merge their running maxima, sums and aggregates: each
        part's sum and aggregate are rescaled to the common maximum, then added."""
        c, acc = self.code, self.acc
        c.open("if (parts > 1)")
        c.add(f"{acc} factor[{array_size(n)}];  // this group's rescaling to the block's maximum")
        c.open(f"for (int f = 0; f < {n}; ++f)")
        c.add(f"const {acc} top = pg_parts_max(a_{top}[f], pg_parts, {self.tpr});")
        c.add(f"factor[f] = a_{top}[f] == -PG_INFINITY ? ({acc})0 : exp(a_{top}[f] - top);")
        c.add(f"a_{total}[f] = pg_parts_sum(a_{total}[f] * factor[f], pg_parts, {self.tpr});")
        c.add(f"a_{top}[f] = top;")
        c.close()
        if weighted:
            self._aggregate_slots(weighted, slots, "a_{agg}[k] = pg_parts_sum(f < {width} ? a_{agg}[k] * factor[{head}] : "
                                  f"({acc})0, pg_parts, {self.tpr});")
        c.close()

    def _aggregate_slots(self, weighted, slots: int, statement: str) -> None:
        """``statement`` for each of this lane's slots ``k`` (element ``f``) of the softmax-weighted
        aggregate; it may name {agg}, its {width} and {head}, the softmax element of ``f``."""
        agg, softmax, _ = weighted
        head = broadcast_index("f", self.shape(agg), self.shape(softmax))
        self.code.open(f"for (int k = 0; k < {slots}; ++k)")
        self.code.add(f"const int f = {self.dist_index('lane', 'k')};")
        self.code.add(statement.format(agg=agg, width=self.numel(agg), head=head))
        self.code.close()

    def combine_parts(self, array: str, width: int, kind: str) -> None:
        """CUDA: the groups of a hub's block combine their partial ``array`` (every group gets
        the total, or the maximum, of its lane's slots)."""
        if not self.cpu:
            self.code.add(f"if (parts > 1) for (int s = 0; s < {width}; ++s) "
                          f"{array}[s] = pg_parts_{kind}({array}[s], pg_parts, {self.tpr});")

    def work_key(self) -> tuple:
        return (self.rows_per_block, self.s.hub_degree, self.split)

    def combine_blocks(self, arrays: list[tuple[str, int]], kind: str, online=None) -> None:
        """CUDA, a hub split over several blocks: each block stores its (block-combined) partial
        ``arrays``; the last block to finish combines every block's and goes on alone."""
        if self.cpu or not self.split:
            return
        c, acc, tpr = self.code, self.acc, self.tpr
        per_lane = sum(width for _, width in arrays)
        partials = self._arg("p_hub_partials", f"{acc}* __restrict__", "hub_partials",
                             (*self.work_key(), tpr * per_lane, "float64" if acc == "double" else "float32"))
        counters = self._arg("p_hub_counters", "int* __restrict__", "hub_counters", self.work_key())
        c.add("// a hub split over several blocks: the last of them to finish combines their results")
        c.open("if (chunks > 1)")
        c.add("const long long hub = chunk_row[2], first = chunk_row[3];")
        c.add(f"volatile {acc}* partial = {partials} + (first + chunk) * {tpr * per_lane} + lane * {per_lane};")
        offset, offsets = 0, {}
        for array, width in arrays:
            c.add(f"if (part == 0) for (int s = 0; s < {width}; ++s) partial[{offset} + s] = {array}[s];")
            offsets[array] = offset
            offset += width
        c.add(f"if (!pg_last_block({counters} + hub, (int)chunks)) return;")
        def at(array: str, slot: str) -> str:  # block b's partial, read past the caches
            return (f"((volatile {acc}*){partials})[(first + b) * {tpr * per_lane} + lane * {per_lane} "
                    f"+ {offsets[array]} + {slot}]")
        if kind != "online":
            for array, width in arrays:
                c.open(f"for (int s = 0; s < {width}; ++s)")
                c.add(f"{acc} total = {'-PG_INFINITY' if kind == 'max' else f'({acc})0'};")
                op = "total = pg_max(total, {v})" if kind == "max" else "total += {v}"
                c.add("for (long long b = 0; b < chunks; ++b) " + op.format(v=at(array, "s")) + ";")
                c.add(f"{array}[s] = total;")
                c.close()
        else:
            top, total, n, weighted, slots = online
            c.add(f"for (int f = 0; f < {n}; ++f) a_{top}[f] = -PG_INFINITY, a_{total}[f] = ({acc})0;")
            if weighted:
                c.add(f"for (int k = 0; k < {slots}; ++k) a_{weighted[0]}[k] = ({acc})0;")
            c.add(f"for (long long b = 0; b < chunks; ++b) for (int f = 0; f < {n}; ++f) "
                  f"a_{top}[f] = pg_max(a_{top}[f], ({acc}){at(f'a_{top}', 'f')});")
            c.open("for (long long b = 0; b < chunks; ++b)")
            c.add(f"{acc} factor[{array_size(n)}];  // block b's rescaling to the hub's maximum")
            c.open(f"for (int f = 0; f < {n}; ++f)")
            c.add(f"const {acc} top = {at(f'a_{top}', 'f')};")
            c.add(f"factor[f] = top == -PG_INFINITY ? ({acc})0 : exp(top - a_{top}[f]);")
            c.add(f"a_{total}[f] += {at(f'a_{total}', 'f')} * factor[f];")
            c.close()
            if weighted:
                partial = at(f"a_{weighted[0]}", "k")
                self._aggregate_slots(weighted, slots, f"if (f < {{width}}) a_{{agg}}[k] += {partial} * factor[{{head}}];")
            c.close()
        c.close()

    def _dst_reduce(self, node: Node, edge_loop, edge_rows: dict[Domain, str], merged=None) -> None:
        """A reduction over the incoming edges; ``merged`` = (edge values, code emitting their
        stores) done in the same pass."""
        c = self.code
        kind, source = node.attrs["kind"], node.args[0]
        c.add(f"// {format_node(node)}")
        saved = dict(self.layout)
        # the accumulator lives outside the loop; its layout follows the value it sums
        c.add(f"{self.acc} a_{node.name}[{array_size(max(self.chunks(node.type.numel), node.type.numel))}];")
        c.add(f"for (int s = 0; s < {max(self.chunks(node.type.numel), node.type.numel)}; ++s) "
              f"a_{node.name}[s] = {'-PG_INFINITY' if kind == 'max' else f'({self.acc})0'};")
        edge_loop([source] + (merged[0] if merged else []))
        n = node.type.numel
        dist = self.local_source(source) == source and self.layout.get(source) == "dist"
        if not dist and not self.readable_anywhere(source):
            raise CodegenError(f"{self.plan.name}: cannot reduce %{source}")
        if not dist and n > REPLICATE_UP_TO and self.local_source(source) is None:
            dist = True  # a wide value straight from memory: each lane sums its own elements

        def accumulate(slot: str, k: str | None) -> str:
            value = self.read(source, "f", edge_rows, k)
            op = f"pg_max(a_{node.name}[{slot}], {value})" if kind == "max" else f"a_{node.name}[{slot}] + {value}"
            return f"a_{node.name}[{slot}] = {op};" if self.cpu else f"if (live && f < {n}) a_{node.name}[{slot}] = {op};"
        if dist:
            self.slot_loop(n, lambda: accumulate("k", "k" if self.local_source(source) == source else None),
                           guard="" if self.cpu else "live && ")
        else:
            c.open(f"for (int f = 0; f < {n}; ++f)")
            c.add(accumulate("f", None))
            c.close()
        if merged:
            merged[1]()
        self.close_edge_loop()
        self.layout = saved
        width = self.chunks(n) if dist else n
        self.combine_parts(f"a_{node.name}", width, "max" if kind == "max" else "sum")
        self.combine_blocks([(f"a_{node.name}", width)], "max" if kind == "max" else "sum")
        finish = {"max": f"degree > 0 ? a_{node.name}[s] : ({self.acc})0",
                  "mean": f"degree > 0 ? a_{node.name}[s] / ({self.acc})degree : ({self.acc})0",
                  "sum": f"a_{node.name}[s]"}[kind]
        name = "v" if dist else "r"
        c.add(f"{self.acc} {name}_{node.name}[{array_size(width)}];")
        c.add(f"for (int s = 0; s < {width}; ++s) {name}_{node.name}[s] = {finish};")
        self.layout[node.name] = "dist" if dist else "repl"
        if dist and self.read_elsewhere(node.name):
            self.gather_lanes(node.name, n)

    def build(self) -> dict:
        strategy = self.plan.strategy
        if strategy == Strategy.DST_PARALLEL:
            domain = Domain.DST
            self.code.add("const long long v = row;")
            self.per_destination()
        elif strategy in (Strategy.EDGE_PARALLEL, Strategy.ROW_MAP):
            domain = self.plan.domain
            self.straight_line(domain)
        else:
            raise CodegenError(f"{self.plan.name}: {strategy.value} is not a traversal")
        per_work_list = strategy == Strategy.DST_PARALLEL and not self.cpu
        rows_arg = None if per_work_list else self._arg("num_rows", "const long long", "rows", domain)
        if self.cpu:
            order = index = None
            if self.ordered_by is not None:
                index = self.index_at(self.ordered_by, domain, "row").removesuffix("[position]")
                # the row id, only where the body reads something at it (every graph array comes in order)
                if any(re.search(r"\brow\b|\bp_order\b", line.split("//")[0]) for line in self.code.lines):
                    order = self._arg("p_order", "const long long* __restrict__", "index_order",
                                      (self.ordered_by, domain))
            private = [(name, rows, self.numel(name), name in self.private_maxima)
                       for name, rows in self.private.items()]
            return {"name": self.name, "plan": self.plan, "ops": [format_node(n) for n in self.plan.ops],
                    "args": list(self.args.values()), "rows_arg": rows_arg, "s": self.s,
                    "ordered": self.ordered_by is not None, "order": order,
                    "target_index": index, "private": private, "acc": self.acc, "body": self.code.lines,
                    "launch": Launch("rows", 1, 0, domain)}
        edges_per_thread = self.s.edges_per_thread if strategy == Strategy.EDGE_PARALLEL else 1
        work = None
        if per_work_list:
            work = self._arg("p_work", "const long long* __restrict__", "work", self.work_key())
        return {
            "name": self.name,
            "plan": self.plan,
            "ops": [format_node(n) for n in self.plan.ops],
            "args": list(self.args.values()),
            "rows_arg": rows_arg,
            "threads_per_row": self.tpr,
            "rows_per_block": self.rows_per_block,
            "rows_per_thread": edges_per_thread,
            "body": self.code.lines,
            "work": work,
            "hub_degree": self.s.hub_degree,
            "launch": Launch("work" if work else "rows", self.block, 0, domain, self.rows_per_block * edges_per_thread),
        }
