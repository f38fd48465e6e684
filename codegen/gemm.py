"""Code for GEMM plans: typed segment GEMMs (Y = X W_type, or X W_type^T) with their epilogue,
and per-type weight gradients (dW_type = sum over the type's rows of X^T dY).

Rows are grouped by the type that picks their weight; a host-made tile table gives every
block one tile of rows of a single type. Rows and weights are read through their views
(gathers by node, pair or edge ids), so no gathered input is ever stored.
"""
from __future__ import annotations

from math import prod

from pigeon.ir.ops import ELEMENTWISE, Op
from pigeon.ir.plans import GemmSchedule, KernelPlan, Strategy
from pigeon.ir.printer import format_node
from pigeon.ir.program import Node
from pigeon.ir.types import Domain

from .builder import Code, CodegenError, KernelBuilder
from .kernel import Launch

UNSPLIT = 1 << 62  # rows per weight-gradient block: all of a type's rows


class GemmKernel(KernelBuilder):
    exclusive_rows = False  # whether one thread alone computes every element of a row it touches

    def __init__(self, plan: KernelPlan, name: str):
        if not isinstance(plan.schedule, GemmSchedule):
            raise CodegenError(f"{plan.name}: not a GEMM plan")
        super().__init__(plan, name)
        self.s = plan.schedule
        anchor = plan.anchor
        assert anchor is not None
        self.anchor = anchor
        self.by = anchor.attrs["by"]
        self.x, self.w = anchor.args
        self.rows_domain = self.nodes[self.x].type.domain
        threads_rows, threads_cols = self.s.tile_rows // self.s.thread_rows, self.s.tile_cols // self.s.thread_cols
        if threads_rows * self.s.thread_rows != self.s.tile_rows or threads_cols * self.s.thread_cols != self.s.tile_cols:
            raise CodegenError(f"{plan.name}: tiles must be multiples of the thread tiles")
        self.threads_rows, self.threads_cols = threads_rows, threads_cols
        self.block = threads_rows * threads_cols
        if not 1 <= self.block <= 1024:
            raise CodegenError(f"{plan.name}: {self.block} threads per block")
        self.code = Code()

    def row_rows(self, row: str) -> dict[Domain, str]:
        rows = {self.rows_domain: row}
        if self.rows_domain == Domain.DST:
            rows[Domain.NODE] = row
        return rows

    def read_local(self, name: str, flat: str, rows: dict[Domain, str], k: str | None) -> str:
        """In a GEMM only the output tile and its epilogue are local: inlined per element."""
        node = self.nodes[name]
        if name == self.anchor.name:
            if k is None:
                raise CodegenError(f"{self.plan.name}: the GEMM result is read at another element")
            return "acc[i][j]"
        if node.op not in ELEMENTWISE:
            raise CodegenError(f"{self.plan.name}: {node.op.value} cannot be a GEMM epilogue")
        return self.elementwise(node, flat, rows, k)

    def layout_args(self) -> tuple[str, str | None]:
        """The tile table and the order grouping the rows by type (None: rows are grouped)."""
        tiles = self._arg("p_tiles", "const long long* __restrict__", "tiles",
                          ("rows", self.by, self.rows_domain, self.s.tile_rows))
        return tiles, self.order_arg()

    def order_arg(self) -> str | None:
        """The array that lists the rows grouped by type; pairs are stored grouped already."""
        if self.by == "all" or (self.by == "etype" and self.rows_domain in (Domain.COMPACT, Domain.COMPACT_DST)):
            return None
        return self._arg("p_order", "const long long* __restrict__", "perm", (self.by, self.rows_domain))

    # ---- Y = X W -------------------------------------------------------------------------

    def linear(self) -> dict:
        x_type, w_type, y_type = self.nodes[self.x].type, self.nodes[self.w].type, self.anchor.type
        transpose = bool(self.anchor.attrs.get("transpose"))
        k_size = x_type.shape[-1]
        n_size = y_type.shape[-1]
        batch = prod(x_type.shape[:-1])
        w_batch = prod(w_type.shape[:-2]) > 1 or len(w_type.shape) > 2
        tiles, perm = self.layout_args()
        pos_row = lambda pos: f"{perm}[{pos}]" if perm else pos  # noqa: E731
        w_rows = {w_type.domain: "type_id"} if w_type.domain != Domain.GLOBAL else {}
        batch_term = f"b * {k_size * n_size} + " if w_batch else ""
        w_flat = (lambda k, o: f"{batch_term}({o}) * {k_size} + ({k})" if transpose
                  else f"{batch_term}({k}) * {n_size} + ({o})")
        c = self.code
        c.add("// load the row tile (through its gathers) and the weight tile of this type")
        c.open(f"for (int t = threadIdx.x; t < {self.s.tile_rows * self.s.tile_k}; t += {self.block})")
        c.add(f"const int r = t / {self.s.tile_k}, kk = t % {self.s.tile_k};")
        c.add("const long long pos = begin + r;")
        c.add("const int k = k0 + kk;")
        c.add(f"const long long row = pos < end ? {pos_row('pos')} : 0;")
        x_elem = self.read(self.x, f"b * {k_size} + k", self.row_rows("row"), None)
        c.add(f"x_tile[kk][r] = (pos < end && k < {k_size}) ? {x_elem} : ({self.acc})0;")
        c.close()
        c.open(f"for (int t = threadIdx.x; t < {self.s.tile_k * self.s.tile_cols}; t += {self.block})")
        c.add(f"const int kk = t / {self.s.tile_cols}, cc = t % {self.s.tile_cols};")
        c.add("const int k = k0 + kk, o = col0 + cc;")
        w_elem = self.read(self.w, w_flat("k", "o"), w_rows, None)
        c.add(f"w_tile[kk][cc] = (k < {k_size} && o < {n_size}) ? {w_elem} : ({self.acc})0;")
        c.close()
        load = c.lines
        self.code = Code(depth=2)
        self._epilogue(y_type.shape, n_size, pos_row)
        return {
            "kind": "linear", "k_size": k_size, "tiles": tiles, "load": load, "epilogue": self.code.lines,
            "launch": Launch("tiles", self.block, self._shared_bytes(), self.rows_domain,
                             col_tiles=-(-n_size // self.s.tile_cols), batch=batch),
        }

    def _epilogue(self, out_shape: tuple[int, ...], n_size: int, pos_row,
                  pos: str = "begin + ty * THREAD_ROWS + i", col: str = "col0 + tx * THREAD_COLS + j") -> None:
        """Per output element (``acc[i][j]``, at row position ``pos`` and column ``col``): the
        epilogue ops, the stores and the scatters."""
        c = self.code
        c.add(f"const long long pos = {pos};")
        c.add(f"const int o = {col};")
        c.add(f"if (pos >= end || o >= {n_size}) continue;")
        c.add(f"const long long row = {pos_row('pos')};")
        c.add(f"const int f = b * {n_size} + o;")
        self._element_writes(out_shape)

    def _element_writes(self, out_shape: tuple[int, ...]) -> None:
        """The epilogue ops, stores and scatters of output element ``f`` of row ``row``."""
        c = self.code
        rows = self.row_rows("row")
        for node in self.plan.ops:
            if node.op in ELEMENTWISE or node.op == Op.REDUCE:
                c.add(f"// {format_node(node)}")
        for w in self.plan.writes:
            node = self.nodes[w]
            if node.op == Op.REDUCE:
                self._scatter(node, rows)
            elif node.type.numel == prod(out_shape):
                c.add(f"pg_store(p_{w} + row * {node.type.numel} + f, {self.read(w, 'f', rows, 'own')});")
            elif not self.depends_on_result(w):  # a value of the row alone (a gate, say): stored once per row
                c.open(f"if (f == 0) for (int g = 0; g < {node.type.numel}; ++g)")
                c.add(f"pg_store(p_{w} + row * {node.type.numel} + g, {self.read(w, 'g', rows, None)});")
                c.close()
            else:
                raise CodegenError(f"{self.plan.name}: epilogue value %{w} is not per output element")

    def depends_on_result(self, name: str) -> bool:
        """Whether value ``name`` of this kernel is computed from the GEMM's result."""
        if name == self.anchor.name:
            return True
        node = self.nodes[name]
        return node.op != Op.INPUT and any(self.depends_on_result(a) for a in node.args)

    def _scatter(self, node: Node, rows: dict[Domain, str]) -> None:
        index, source = node.attrs["index"], self.nodes[node.args[0]].type.domain
        mean_per_dst = node.attrs["kind"] == "mean" and index == "dst" and source == Domain.EDGE
        maximum = node.attrs["kind"] == "max" and index != "to_dst"  # empty rows: see the launcher
        if node.attrs["kind"] != "sum" and not mean_per_dst and not maximum:
            raise CodegenError(f"{self.plan.name}: only sums, means into destinations and maxima are "
                               f"scattered, not a {node.attrs['kind']} along {index}")
        if maximum and self.storage != self.acc:
            raise CodegenError(f"{self.plan.name}: no atomic maximum of 16-bit values")
        if index == "all":
            row = None
        elif index == "to_dst":
            row = "row"
        else:
            row = f"{self.index_arg(index, source)}[row]"
        (self.max_filled if maximum else self.zero_filled).append(node.name)
        offset = "f" if row is None else f"{row} * {node.type.numel} + f"
        value = self.read(node.args[0], 'f', rows, 'own')
        if mean_per_dst:  # each edge adds its share of its destination's mean
            degree = self._arg("p_degree_dst", "const long long* __restrict__", "degree", "dst")
            value = f"{value} / ({self.acc}){degree}[row]"
        if index == "to_dst" and self.exclusive_rows:  # one destination, one node: no other task adds there
            self.code.add(f"pg_add(p_{node.name} + {offset}, {value});")
        else:
            self.code.add(f"pg_atomic_{'max' if maximum else 'add'}(p_{node.name} + {offset}, {value});")

    def _shared_bytes(self) -> int:
        size = 8 if self.acc == "double" else 4
        return size * self.s.tile_k * (self.s.tile_rows + self.s.tile_cols)

    # ---- dW = X^T dY per type -------------------------------------------------------------

    def weight_gradient(self) -> dict:
        x_type, dy_type, dw_type = self.nodes[self.x].type, self.nodes[self.w].type, self.anchor.type
        batched = bool(self.anchor.attrs["batched"])
        in_size, out_size = x_type.shape[-1], dy_type.shape[-1]
        batch = prod(x_type.shape[:-1])
        # 16-bit gradients are not split: partial sums added in 16-bit storage would lose precision
        split = self.s.split_rows if self.storage in ("float", "double") else UNSPLIT
        tiles = self._arg("p_tiles", "const long long* __restrict__", "tiles", ("rows", self.by, self.rows_domain, split))
        perm = self.order_arg()
        pos_row = lambda pos: f"{perm}[{pos}]" if perm else pos  # noqa: E731
        steps_per_row = 1 if batched else batch  # unbatched weights sum over the batch axes too
        c = self.code
        c.add("// load a step of rows of this type: inputs (x) and output gradients (dy)")
        c.open(f"for (int t = threadIdx.x; t < {self.s.tile_k * self.s.tile_rows}; t += {self.block})")
        c.add(f"const int kk = t / {self.s.tile_rows}, ii = t % {self.s.tile_rows};")
        c.add(f"const long long step = k0 + kk, pos = begin + step / {steps_per_row};")
        c.add(f"const int bb = {'b' if batched else f'(int)(step % {steps_per_row})'};")
        c.add("const int i = row0 + ii;")
        c.add(f"const long long row = pos < end ? {pos_row('pos')} : 0;")
        x_elem = self.read(self.x, f"bb * {in_size} + i", self.row_rows("row"), None)
        c.add(f"x_tile[kk][ii] = (pos < end && i < {in_size}) ? {x_elem} : ({self.acc})0;")
        c.close()
        c.open(f"for (int t = threadIdx.x; t < {self.s.tile_k * self.s.tile_cols}; t += {self.block})")
        c.add(f"const int kk = t / {self.s.tile_cols}, cc = t % {self.s.tile_cols};")
        c.add(f"const long long step = k0 + kk, pos = begin + step / {steps_per_row};")
        c.add(f"const int bb = {'b' if batched else f'(int)(step % {steps_per_row})'};")
        c.add("const int o = col0 + cc;")
        c.add(f"const long long row = pos < end ? {pos_row('pos')} : 0;")
        dy_elem = self.read(self.w, f"bb * {out_size} + o", self.row_rows("row"), None)
        c.add(f"dy_tile[kk][cc] = (pos < end && o < {out_size}) ? {dy_elem} : ({self.acc})0;")
        c.close()
        if self.plan.writes != (self.anchor.name,):
            raise CodegenError(f"{self.plan.name}: a weight gradient kernel stores only its gradient")
        per_type = dw_type.numel
        self.zero_filled.append(self.anchor.name)
        store = (f"pg_atomic_add(p_{self.anchor.name} + type_id * {per_type} + "
                 f"{'b * ' + str(in_size * out_size) + ' + ' if batched else ''}i * {out_size} + o, acc[ii][jj]);")
        return {
            "kind": "wgrad", "in_size": in_size, "out_size": out_size, "steps_per_row": steps_per_row,
            "tiles": tiles, "load": c.lines, "store": store, "split_rows": None if split == UNSPLIT else split,
            "launch": Launch("split", self.block, self._shared_bytes(), self.rows_domain,
                             col_tiles=-(-out_size // self.s.tile_cols), row_tiles=-(-in_size // self.s.tile_rows),
                             batch=batch if batched else 1),
        }

    def build(self) -> dict:
        body = self.linear() if self.plan.strategy == Strategy.GEMM else self.weight_gradient()
        return {
            **body,
            "name": self.name,
            "plan": self.plan,
            "ops": [format_node(n) for n in self.plan.ops],
            "args": list(self.args.values()),
            "s": self.s,
            "acc": self.acc,
            **self.target_context(),
        }

    def target_context(self) -> dict:
        """What only this target's template needs."""
        return {"threads_cols": self.threads_cols}
