"""Code for GEMM plans on a CPU (C++/OpenMP): typed segment GEMMs and per-type weight gradients.

The same plans as the CUDA GEMMs, and the same element reads, epilogue and scatters (inherited
from ``GemmKernel``); only the loop structure differs:

- ``Y = X W_type``: one OpenMP task per (tile of rows of one type, batch index). A task gathers
  its rows (through their views) into a packed tile, packs the type's weight once per thread
  and type, and runs a register micro-kernel of ``micro_rows`` x ``micro_cols`` outputs, whose
  epilogue stores and scatters each output element.
- ``dW_type = X_type^T dY_type``: the rows, grouped by type, are split evenly between threads.
  A thread accumulates each type it meets in a private buffer; a type only it touches is
  stored directly, a type shared with a neighbouring thread goes to one of its two boundary
  partials, added in thread order after the parallel loop (no atomics; deterministic).
"""
from __future__ import annotations

from math import prod

from pigeon.ir.ops import ELEMENTWISE
from pigeon.ir.plans import CpuGemmSchedule, KernelPlan
from pigeon.ir.types import Domain

from .builder import Code, CodegenError, KernelBuilder
from .gemm import GemmKernel
from .kernel import Launch


class CpuGemmKernel(GemmKernel):
    exclusive_rows = True  # a task owns its tile's rows (for one batch index: its own columns)

    def __init__(self, plan: KernelPlan, name: str):
        if not isinstance(plan.schedule, CpuGemmSchedule):
            raise CodegenError(f"{plan.name}: not a cpp GEMM plan (schedule {type(plan.schedule).__name__})")
        KernelBuilder.__init__(self, plan, name)
        self._read_anchor(plan)
        self.code = Code()
        self.row_values: dict[str, str] = {}  # per-row epilogue value -> its expression

    def read_local(self, name: str, flat: str, rows: dict[Domain, str], k: str | None) -> str:
        """Epilogue values with one element per row (a gate of the row's type, say) are computed
        once per row, before the loop over its columns."""
        node = self.nodes[name]
        if node.op in ELEMENTWISE and node.type.numel == 1 and not self.depends_on_result(name):
            if name not in self.row_values:
                self.row_values[name] = self.elementwise(node, "0", rows, None)  # its arguments first
            return f"e_{name}"
        return super().read_local(name, flat, rows, k)

    def _lines(self) -> list[str]:
        lines, self.code = self.code.lines, Code()
        return lines

    # ---- Y = X W -------------------------------------------------------------------------

    def linear(self) -> dict:
        x_type, w_type, y_type = self.nodes[self.x].type, self.nodes[self.w].type, self.anchor.type
        transpose = bool(self.anchor.attrs.get("transpose"))
        k_size, n_size = x_type.shape[-1], y_type.shape[-1]
        batch = prod(x_type.shape[:-1])
        w_batch = prod(w_type.shape[:-2]) > 1 or len(w_type.shape) > 2
        micro_cols = min(self.s.micro_cols, n_size) or 1
        micro_rows = min(self.s.micro_rows, self.s.tile_rows)
        cols_padded = -(-n_size // micro_cols) * micro_cols
        rows_padded = -(-self.s.tile_rows // micro_rows) * micro_rows
        tiles, perm = self.layout_args()
        pos_row = lambda pos: f"{perm}[{pos}]" if perm else pos  # noqa: E731
        w_rows = {w_type.domain: "type_id"} if w_type.domain != Domain.GLOBAL else {}
        batch_term = f"b * {k_size * n_size} + " if w_batch else ""
        w_flat = (f"{batch_term}o * {k_size} + k" if transpose else f"{batch_term}k * {n_size} + o")
        self.code = Code(depth=0)
        x_elem = self.read(self.x, f"b * {k_size} + k", self.row_rows("row"), None)
        w_elem = self.read(self.w, w_flat, w_rows, None)
        self.code = Code(depth=5)
        self._element_writes(y_type.shape)
        count = self._arg("num_tiles", "const long long", "tile_count", ("rows", self.by, self.rows_domain,
                                                                          self.s.tile_rows))
        return {
            "kind": "linear", "k_size": k_size, "n_size": n_size, "batch": batch, "tiles": tiles,
            "num_tiles": count, "x_elem": x_elem, "w_elem": w_elem,
            "micro_rows": micro_rows, "micro_cols": micro_cols, "cols_padded": cols_padded,
            "rows_padded": rows_padded, "epilogue": self._lines(), "row_of": pos_row("pos"),
            "row_values": list(self.row_values.items()),
            "launch": Launch("tiles", 1, 0, self.rows_domain, batch=batch),
        }

    # ---- dW = X^T dY per type -------------------------------------------------------------

    def weight_gradient(self) -> dict:
        x_type, dy_type, dw_type = self.nodes[self.x].type, self.nodes[self.w].type, self.anchor.type
        batched = bool(self.anchor.attrs["batched"])
        in_size, out_size = x_type.shape[-1], dy_type.shape[-1]
        batch = prod(x_type.shape[:-1])
        offsets = self._arg("p_offsets", "const long long* __restrict__", "offsets", (self.by, self.rows_domain))
        count = self._arg("num_types", "const long long", "type_count", (self.by, self.rows_domain))
        perm = self.order_arg()
        if self.plan.writes != (self.anchor.name,):
            raise CodegenError(f"{self.plan.name}: a weight gradient kernel stores only its gradient")
        if dw_type.numel != (batch if batched else 1) * in_size * out_size:
            raise CodegenError(f"{self.plan.name}: weight gradient of {dw_type} from rows of {batch} x {in_size}")
        self.zero_filled.append(self.anchor.name)  # types without rows keep their zeros
        self.code = Code(depth=0)
        x_elem = self.read(self.x, f"bb * {in_size} + i", self.row_rows("row"), None)
        dy_elem = self.read(self.w, f"bb * {out_size} + o", self.row_rows("row"), None)
        return {
            "kind": "wgrad", "in_size": in_size, "out_size": out_size, "batch": batch,
            "weight_batch": batch if batched else 1, "batched": batched, "offsets": offsets,
            "num_types": count, "row_of": f"{perm}[pos]" if perm else "pos", "x_elem": x_elem,
            "dy_elem": dy_elem, "out": f"p_{self.anchor.name}",
            "launch": Launch("segments", 1, 0, self.rows_domain),
        }

    def target_context(self) -> dict:
        return {}
