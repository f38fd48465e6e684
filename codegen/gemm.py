"""Code for GEMM plans: typed segment GEMMs (Y = X W_type, or X W_type^T) with their epilogue,
and per-type weight gradients (dW_type = sum over the type's rows of X^T dY).

Rows are grouped by the type that picks their weight; a host-made tile table gives every
block one tile of rows of a single type. Rows and weights are read through their views
(gathers by node, pair or edge ids), so no gathered input is ever stored.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from pigeon.ir.ops import ELEMENTWISE, Op
from pigeon.ir.plans import GemmSchedule, KernelPlan, Strategy
from pigeon.ir.printer import format_node
from pigeon.ir.program import Node
from pigeon.ir.types import Domain

from .builder import Code, CodegenError, KernelBuilder
from .kernel import Launch

UNSPLIT = 1 << 62  # rows per weight-gradient block: all of a type's rows
MMA_ROWS, MMA_COLS = 16, 8  # the accumulator tile of one mma.sync
# a float as a shared tile's element: 16-bit bits; tf32 tiles hold float bits, rounded as loaded
TO_BITS = {"pg_half": "pg_from_float_half({}).bits", "pg_bf16": "pg_from_float_bf16({}).bits",
           "tf32": "(unsigned int)__float_as_int({})"}
STATIC_SHARED = 48 * 1024  # bytes of static shared memory a block may declare


def tf32_allowed() -> bool:
    """Whether float32 GEMMs may round their inputs to TF32: torch's own switch for CUDA matmuls
    (off by default, so float32 results stay exact unless the user asks)."""
    import torch
    return bool(torch.backends.cuda.matmul.allow_tf32)


@dataclass(frozen=True)
class TensorCoreTile:
    """How a block's output tile is shared by its warps, each holding a grid of 16 x 8
    accumulators of mma.sync, and how the shared tiles of the mma's inputs are laid out so that
    neither their stores nor the fragment loads have bank conflicts.

    A (x_tile) is row-major in a typed GEMM (a gathered row's k values are loaded together) and
    k-major in a weight gradient (whose k runs over rows); B (w_tile, dy_tile) is k-major.
    Strides are padded; TF32 tiles, 32-bit, are also swizzled where a warp's stores would meet
    twice in a bank (``row_slot``, ``k_slot``): any order within 4 or 8 rows keeps the fragment
    loads, which read all of them, conflict-free."""

    kind: str  # "pg_half", "pg_bf16" (m16n8k16) or "tf32" (m16n8k8)
    wgrad: bool  # a weight gradient (A k-major) rather than a typed GEMM (A row-major)
    warps_cols: int  # warps side by side across the tile's columns
    warp_rows: int  # rows of the tile one warp computes
    warp_cols: int  # columns of the tile one warp computes
    tile_rows: int
    tile_cols: int
    tile_k: int

    @property
    def k_step(self) -> int:
        return 8 if self.kind == "tf32" else 16

    @property
    def element(self) -> str:
        return "uint32_t" if self.kind == "tf32" else "uint16_t"

    @property
    def x_stride(self) -> int:
        if self.wgrad:
            return self.tile_rows + 8
        return self.tile_k + (4 if self.kind == "tf32" else 8)

    @property
    def w_stride(self) -> int:
        return self.tile_cols + 8

    @property
    def swizzled(self) -> bool:
        return any(self.row_slot(r) != r or self.k_slot(r, "x") != r or self.k_slot(r, "w") != r for r in range(32))

    def row_slot(self, row: int) -> int:
        """Where row ``row`` of a row-major A tile is stored: TF32 rows 12 or 20 words apart
        that one warp stores together (8 or 16 k of each) are moved 8 or 16 banks apart."""
        if self.kind != "tf32" or self.wgrad or self.tile_k == 32:
            return row
        if self.tile_k == 8:
            return (row & ~7) | ((row & 3) << 1) | ((row >> 2) & 1)
        return (row & ~7) | ((row & 1) << 2) | ((row >> 1) & 3)

    def row_slot_code(self, row: str) -> str:
        """``row_slot`` in C."""
        if self.row_slot(1) == 1 and self.row_slot(2) == 2:
            return row
        if self.tile_k == 8:
            return f"(({row}) & ~7) | ((({row}) & 3) << 1) | ((({row}) >> 2) & 1)"
        return f"(({row}) & ~7) | ((({row}) & 1) << 2) | ((({row}) >> 1) & 3)"

    def k_slot(self, k: int, tile: str) -> int:
        """Where step ``k`` of a k-major tile ("x" or "w") is stored: in a 16-wide TF32 tile a
        warp stores two k at once, 24 words apart; k and k + 1 are stored 2 apart (16 banks)."""
        width = (self.tile_rows if self.wgrad else 0) if tile == "x" else self.tile_cols
        if self.kind != "tf32" or width != 16:
            return k
        return (k & ~3) | ((k & 1) << 1) | ((k >> 1) & 1)

    def k_slot_code(self, k: str, tile: str) -> str:
        """``k_slot`` in C."""
        if self.k_slot(1, tile) == 1:
            return k
        return f"(({k}) & ~3) | ((({k}) & 1) << 1) | ((({k}) >> 1) & 1)"

    def a_fragment(self) -> list[str]:
        """C lines that load register r of tile mt's A fragment (``row`` is its tile row)."""
        if self.kind == "tf32":
            k = "ks + quad + 4 * (r >> 1)"
            at = (f"({self.k_slot_code(k, 'x')}) * X_STRIDE + row" if self.wgrad
                  else f"({self.row_slot_code('row')}) * X_STRIDE + {k}")
            return [f"a[mt][r] = pg_tf32_bits(__int_as_float((int)a_tile[{at}]));"]
        first, second = ("k * X_STRIDE + row", "(k + 1) * X_STRIDE + row") if self.wgrad else \
            ("row * X_STRIDE + k", "row * X_STRIDE + k + 1")
        return ["const int k = ks + 2 * quad + 8 * (r >> 1);",
                f"a[mt][r] = a_tile[{first}] | ((unsigned int)a_tile[{second}] << 16);"]

    def b_fragment(self) -> list[str]:
        """C lines that load register r of tile nt's B fragment (``col`` is its tile column)."""
        if self.kind == "tf32":
            return [f"w[nt][r] = pg_tf32_bits(__int_as_float((int)b_tile[({self.k_slot_code('ks + quad + 4 * r', 'w')}) * W_STRIDE + col]));"]
        return ["const int k = ks + 2 * quad + 8 * r;",
                "w[nt][r] = b_tile[k * W_STRIDE + col] | ((unsigned int)b_tile[(k + 1) * W_STRIDE + col] << 16);"]

    def stage_bytes(self) -> int:
        """Shared memory of one stage: a k-tile of both inputs."""
        a_rows = self.tile_k if self.wgrad else self.tile_rows
        return (4 if self.kind == "tf32" else 2) * (a_rows * self.x_stride + self.tile_k * self.w_stride)

    @property
    def stages(self) -> int:
        """Shared tiles per input: two (the next k-tile is copied in while this one is
        multiplied) where both fit in static shared memory, else one."""
        return 2 if 2 * self.stage_bytes() <= STATIC_SHARED else 1

    def shared_bytes(self) -> int:
        return self.stages * self.stage_bytes()


def x_tile_pad(schedule: GemmSchedule) -> int:
    """Extra rows of the CUDA-core x_tile (k-major) so that the threads of a warp, storing
    consecutive k of 32 / tile_k rows, hit 32 different banks."""
    return (32 // min(schedule.tile_k, 32) - schedule.tile_rows) % 32


def tensor_core_tile(schedule: GemmSchedule, block: int, storage: str, wgrad: bool = False) -> TensorCoreTile | None:
    """The warp layout for mma.sync, or None where the dtype, the tile or the switches rule
    tensor cores out (the CUDA-core tile runs then: always for float64)."""
    if not schedule.tensor_cores:
        return None
    kind = storage if storage in ("pg_half", "pg_bf16") else "tf32" if storage == "float" and tf32_allowed() else None
    if kind is None:
        return None
    k_step = 8 if kind == "tf32" else 16
    if schedule.tile_k % k_step or schedule.tile_rows % MMA_ROWS or schedule.tile_cols % MMA_COLS or block % 32:
        return None
    row_tiles, col_tiles, warps = schedule.tile_rows // MMA_ROWS, schedule.tile_cols // MMA_COLS, block // 32
    layouts = [(row_tiles // r + col_tiles // (warps // r), r) for r in range(1, warps + 1)
               if warps % r == 0 and row_tiles % r == 0 and col_tiles % (warps // r) == 0]
    if not layouts:
        return None
    _, warps_rows = min(layouts)  # the fewest fragment loads per mma
    warps_cols = warps // warps_rows
    return TensorCoreTile(kind, wgrad, warps_cols, schedule.tile_rows // warps_rows, schedule.tile_cols // warps_cols,
                          schedule.tile_rows, schedule.tile_cols, schedule.tile_k)


class GemmKernel(KernelBuilder):
    exclusive_rows = False  # whether one thread alone computes every element of a row it touches
    result = "acc[i][j]"  # the GEMM's result at the element the epilogue writes

    def __init__(self, plan: KernelPlan, name: str):
        if not isinstance(plan.schedule, GemmSchedule):
            raise CodegenError(f"{plan.name}: not a GEMM plan")
        super().__init__(plan, name)
        self._read_anchor(plan)
        threads_rows, threads_cols = self.s.tile_rows // self.s.thread_rows, self.s.tile_cols // self.s.thread_cols
        if threads_rows * self.s.thread_rows != self.s.tile_rows or threads_cols * self.s.thread_cols != self.s.tile_cols:
            raise CodegenError(f"{plan.name}: tiles must be multiples of the thread tiles")
        self.threads_rows, self.threads_cols = threads_rows, threads_cols
        self.block = threads_rows * threads_cols
        if not 1 <= self.block <= 1024:
            raise CodegenError(f"{plan.name}: {self.block} threads per block")
        self.code = Code()

    def _read_anchor(self, plan: KernelPlan) -> None:
        """The schedule and the GEMM the plan is built around: its rows' input, weight and type index."""
        self.s = plan.schedule
        anchor = plan.anchor
        assert anchor is not None
        self.anchor = anchor
        self.by = anchor.attrs["by"]
        self.x, self.w = anchor.args
        self.rows_domain = self.nodes[self.x].type.domain

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
            return self.result
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
        mma = tensor_core_tile(self.s, self.block, self.storage)
        c = self.code
        if mma:
            c.add("// copy k-tile k0 of the row tile (through its gathers) and of this type's weight tile into this stage")
            pairs = lambda name, width: width % 2 == 0 and self.views_keep_pairs(name)  # noqa: E731
            self._mma_tile_load(
                mma, "x", ("r", self.s.tile_rows), ("kk", self.s.tile_k), "X_STRIDE", mma.row_slot_code("r"),
                ["const long long pos = begin + r;", "const int k = k0 + kk;",
                 f"const long long row = pos < end ? {pos_row('pos')} : 0;"],
                f"pos < end && k < {k_size}", lambda: self.read(self.x, f"b * {k_size} + k", self.row_rows("row"), None),
                lambda: self.address(self.x, f"b * {k_size} + k", self.row_rows("row")), pairs(self.x, k_size))
            self._mma_tile_load(
                mma, "w", ("kk", self.s.tile_k), ("cc", self.s.tile_cols), "W_STRIDE", mma.k_slot_code("kk", "w"),
                ["const int k = k0 + kk, o = col0 + cc;"], f"k < {k_size} && o < {n_size}",
                lambda: self.read(self.w, w_flat("k", "o"), w_rows, None),
                lambda: self.address(self.w, w_flat("k", "o"), w_rows), not transpose and pairs(self.w, n_size))
        else:
            self._cuda_core_linear_loads(k_size, n_size, pos_row, w_flat, w_rows)
        load = c.lines
        self.code = Code(depth=2)
        if mma:  # each lane's accumulators: see the template
            self.result = "d[mt][nt][q]"
            self._epilogue(y_type.shape, n_size, pos_row, pos="begin + warp_row0 + mt * 16 + group + 8 * (q >> 1)",
                           col="col0 + warp_col0 + nt * 8 + 2 * quad + (q & 1)")
        else:
            self._epilogue(y_type.shape, n_size, pos_row)
        return {
            "kind": "linear", "b_tile": "w", "k_size": k_size, "tiles": tiles, "load": load, "epilogue": self.code.lines,
            "mma": mma, "a_fragment": mma.a_fragment() if mma else [], "b_fragment": mma.b_fragment() if mma else [],
            "launch": Launch("tiles", self.block, mma.shared_bytes() if mma else self._shared_bytes(), self.rows_domain,
                             col_tiles=-(-n_size // self.s.tile_cols), batch=batch),
        }

    def _mma_tile_load(self, mma: TensorCoreTile, tile: str, outer: tuple[str, int], inner: tuple[str, int],
                       stride: str, slot: str, preamble: list[str], valid: str, value, address, pairs: bool) -> None:
        """Code that fills one stage of shared tile ``tile`` (``x``, ``w`` or ``dy``: rows
        ``outer``, contiguous ``inner``, stored at row ``slot``) for k-tile ``k0``. Where its
        elements are inputs as stored, they are copied with cp.async: float32 one by one (the
        same stores as below), 16-bit ones in pairs (4-byte words), 8 rows by 4 pairs per warp,
        which with strides of 4 mod 8 words hit 32 banks. Else the values are computed, converted
        and stored. ``value`` and ``address`` make the element's expression and address;
        ``pairs``: a 16-bit pair at an even inner index is one aligned word of memory."""
        (o_var, o_n), (i_var, i_n) = outer, inner
        c = self.code
        sixteen = mma.kind != "tf32"
        in_pairs = sixteen and pairs and o_n % 8 == 0 and i_n % 8 == 0
        copy = address() if in_pairs or not sixteen else None
        if copy is not None and in_pairs:
            c.open(f"for (int t = threadIdx.x; t < {o_n * i_n // 2}; t += {self.block})")
            c.add(f"const int {o_var} = (t / {4 * i_n}) * 8 + (t / 4) % 8, {i_var} = ((t / 32) % {i_n // 8}) * 8 + 2 * (t % 4);")
        else:
            c.open(f"for (int t = threadIdx.x; t < {o_n * i_n}; t += {self.block})")
            c.add(f"const int {o_var} = t / {i_n}, {i_var} = t % {i_n};")
        for line in preamble:
            c.add(line)
        at = f"{tile}_stage[({slot}) * {stride} + {i_var}]"
        if copy is not None:
            c.add(f"pg_cp_async<4>(&{at}, {copy}, {valid});")
        else:
            c.add(f"{at} = {TO_BITS[mma.kind].format(f'({valid}) ? {value()} : 0.0f')};")
        c.close()

    def _cuda_core_linear_loads(self, k_size: int, n_size: int, pos_row, w_flat, w_rows) -> None:
        """The loads of the CUDA-core tile: k-major row tile, weight tile."""
        c = self.code
        c.add("// load the row tile (through its gathers) and the weight tile of this type")
        c.open(f"for (int t = threadIdx.x; t < {self.s.tile_rows * self.s.tile_k}; t += {self.block})")
        c.add(f"const int r = t / {self.s.tile_k}, kk = t % {self.s.tile_k};")
        c.add("const long long pos = begin + r;")
        c.add("const int k = k0 + kk;")
        c.add(f"const long long row = pos < end ? {pos_row('pos')} : 0;")
        x_elem = self.read(self.x, f"b * {k_size} + k", self.row_rows("row"), None)
        c.add(f"x_tile[kk][r] = (pos < end && k < {k_size}) ? {x_elem} : ({self.acc})0;")  # rows padded: no bank conflicts
        c.close()
        c.open(f"for (int t = threadIdx.x; t < {self.s.tile_k * self.s.tile_cols}; t += {self.block})")
        c.add(f"const int kk = t / {self.s.tile_cols}, cc = t % {self.s.tile_cols};")
        c.add("const int k = k0 + kk, o = col0 + cc;")
        w_elem = self.read(self.w, w_flat("k", "o"), w_rows, None)
        c.add(f"w_tile[kk][cc] = (k < {k_size} && o < {n_size}) ? {w_elem} : ({self.acc})0;")
        c.close()

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
        pad = x_tile_pad(self.s) if self.plan.strategy == Strategy.GEMM else 0
        return size * self.s.tile_k * (self.s.tile_rows + pad + self.s.tile_cols)

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
        mma = tensor_core_tile(self.s, self.block, self.storage, wgrad=True)
        c = self.code
        step_lines = [f"const long long step = k0 + kk, pos = begin + step / {steps_per_row};",
                      f"const int bb = {'b' if batched else f'(int)(step % {steps_per_row})'};"]
        row_line = f"const long long row = pos < end ? {pos_row('pos')} : 0;"
        x_flat, dy_flat, rows = f"bb * {in_size} + i", f"bb * {out_size} + o", self.row_rows("row")
        if mma:
            c.add("// copy a k-tile of this type's rows into this stage: inputs (x) and output gradients (dy)")
            self._mma_tile_load(
                mma, "x", ("kk", self.s.tile_k), ("ii", self.s.tile_rows), "X_STRIDE", mma.k_slot_code("kk", "x"),
                step_lines + ["const int i = row0 + ii;", row_line], f"pos < end && i < {in_size}",
                lambda: self.read(self.x, x_flat, rows, None), lambda: self.address(self.x, x_flat, rows),
                in_size % 2 == 0 and self.views_keep_pairs(self.x))
            self._mma_tile_load(
                mma, "dy", ("kk", self.s.tile_k), ("cc", self.s.tile_cols), "W_STRIDE", mma.k_slot_code("kk", "w"),
                step_lines + ["const int o = col0 + cc;", row_line], f"pos < end && o < {out_size}",
                lambda: self.read(self.w, dy_flat, rows, None), lambda: self.address(self.w, dy_flat, rows),
                out_size % 2 == 0 and self.views_keep_pairs(self.w))
        else:
            c.add("// load a step of rows of this type: inputs (x) and output gradients (dy)")
            c.open(f"for (int t = threadIdx.x; t < {self.s.tile_k * self.s.tile_rows}; t += {self.block})")
            c.add(f"const int kk = t / {self.s.tile_rows}, ii = t % {self.s.tile_rows};")
            for line in step_lines + ["const int i = row0 + ii;", row_line]:
                c.add(line)
            c.add(f"x_tile[kk][ii] = (pos < end && i < {in_size}) ? {self.read(self.x, x_flat, rows, None)} : ({self.acc})0;")
            c.close()
            c.open(f"for (int t = threadIdx.x; t < {self.s.tile_k * self.s.tile_cols}; t += {self.block})")
            c.add(f"const int kk = t / {self.s.tile_cols}, cc = t % {self.s.tile_cols};")
            for line in step_lines + ["const int o = col0 + cc;", row_line]:
                c.add(line)
            c.add(f"dy_tile[kk][cc] = (pos < end && o < {out_size}) ? {self.read(self.w, dy_flat, rows, None)} : ({self.acc})0;")
            c.close()
        if self.plan.writes != (self.anchor.name,):
            raise CodegenError(f"{self.plan.name}: a weight gradient kernel stores only its gradient")
        per_type = dw_type.numel
        self.zero_filled.append(self.anchor.name)
        store = (f"pg_atomic_add(p_{self.anchor.name} + type_id * {per_type} + "
                 f"{'b * ' + str(in_size * out_size) + ' + ' if batched else ''}i * {out_size} + o, "
                 f"{'d[mt][nt][q]' if mma else 'acc[ii][jj]'});")
        return {
            "kind": "wgrad", "b_tile": "dy", "in_size": in_size, "out_size": out_size, "steps_per_row": steps_per_row,
            "tiles": tiles, "load": c.lines, "store": store, "split_rows": None if split == UNSPLIT else split,
            "mma": mma, "a_fragment": mma.a_fragment() if mma else [], "b_fragment": mma.b_fragment() if mma else [],
            "launch": Launch("split", self.block, mma.shared_bytes() if mma else self._shared_bytes(), self.rows_domain,
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
        return {"threads_cols": self.threads_cols, "x_pad": x_tile_pad(self.s) if self.plan.strategy == Strategy.GEMM else 0}
