"""What code generation produces for one kernel plan: source, name, arguments, launch shape."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pigeon.ir.plans import KernelPlan
from pigeon.ir.types import Domain

STORAGE = {"float32": "float", "float64": "double", "float16": "pg_half", "bfloat16": "pg_bf16"}
ACCUMULATE = {"float32": "float", "float64": "double", "float16": "float", "bfloat16": "float"}


@dataclass(frozen=True)
class KernelArg:
    """One kernel parameter and what the runtime binds to it.

    kind: "read"/"write" (a value, key = its name), "index" (key = (index, target domain)),
    "degree" (key = by), "indptr"/"eids" (the CSR), "rows" (key = a domain: its row count),
    "tiles" (key = ("rows"|"segment", by, domain): a GEMM's tile table), "perm" (key = (by,
    domain): the order that groups a GEMM's rows by type), "offsets" (key = (by, domain): where
    each type's rows start in that order), "tile_count" (key as "tiles": its number of tiles),
    "type_count" (key as "offsets": the number of types), "index_order" (key = (index, domain):
    the rows of the domain sorted by the row the index sends them to), "work" (key =
    (rows_per_block, hub_degree): the destinations each block takes, see
    ``runtime.layouts.dst_work``).
    """

    name: str
    ctype: str
    kind: str
    key: Any = None


@dataclass(frozen=True)
class Launch:
    """Grid and block of a launch; the grid depends on the graph, so it is a rule here.

    grid "rows": ceil(rows(domain) / rows_per_block) blocks; "tiles": (number of row tiles,
    column tiles, batch) for a GEMM; "segments": (column tiles, row tiles per type, types)
    for a weight gradient (C++); "split": (row chunks of at most ``split_rows`` of one type times
    batch, row tiles, column tiles) for a CUDA weight gradient; "work": one block per ``rows_per_block`` entries of the "work" list.
    """

    grid: str
    block: int
    shared_bytes: int = 0
    domain: Domain | None = None
    rows_per_block: int = 1
    col_tiles: int = 1
    row_tiles: int = 1
    batch: int = 1


@dataclass(frozen=True)
class KernelSource:
    name: str
    source: str
    args: tuple[KernelArg, ...]
    launch: Launch
    plan: KernelPlan
    zero_filled: tuple[str, ...] = ()  # outputs accumulated into with atomics: cleared before launch
    max_filled: tuple[str, ...] = ()  # outputs maximised into with atomics: -infinity before launch


@dataclass(frozen=True)
class InterpretedKernel:
    """A kernel plan that no template could express (``reason``): the runtime runs its ops with
    torch (``runtime.plan_interpreter``) between the generated kernels."""

    plan: KernelPlan
    reason: str

    @property
    def name(self) -> str:
        return self.plan.name


class FallbackWarning(UserWarning):
    """Some kernels of a program run with torch ops, as no template could express them."""
