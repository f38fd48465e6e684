"""Binding a generated kernel to a graph and to tensors: its arguments, its output buffers and
its grid. Shared by every back end that runs generated kernels (CUDA, C++, and the CUDA-on-CPU
harness of the tests), so they launch exactly the same way."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from pigeon.codegen.kernel import InterpretedKernel, KernelSource
from pigeon.ir.plans import PlanProgram
from pigeon.ir.types import Domain

from . import layouts
from .graph import Graph
from .plan_interpreter import run_kernel
from .reference import TORCH_DTYPES, expected_shape

Argument = Union[torch.Tensor, int]
ALIGNMENT = 16  # bytes: generated kernels load 16-bit pairs and vectors of features as words


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` contiguous and starting at an ``ALIGNMENT``-byte boundary, as the generated
    kernels' word and vector loads need: a view at another offset is copied."""
    t = t.contiguous()
    return t if t.data_ptr() % ALIGNMENT == 0 else t.clone()


def rows(g: Graph, domain: Domain) -> int:
    return 1 if domain == Domain.GLOBAL else layouts.num_rows(g, domain)


@dataclass(frozen=True)
class Slot:
    """An argument filled per call: the value named ``key`` in the program's memory."""

    key: str


@dataclass(frozen=True)
class Scratch:
    """An argument allocated per call: working memory of the kernel (zeroed where it counts)."""

    numel: int
    dtype: torch.dtype
    zeroed: bool


def _fill(kernel: KernelSource, name: str, g: Graph) -> float | torch.Tensor | None:
    """What an output starts from: 0 for atomic sums, none for plain stores, and for atomic
    maxima -inf in the rows that some value reaches but 0 in the others (a row that nothing
    reaches is 0, as in the reference), one value per row where both occur."""
    if name in kernel.max_filled:
        return _max_fill(kernel, name, g)
    return 0.0 if name in kernel.zero_filled else None


def _max_fill(kernel: KernelSource, name: str, g: Graph) -> float | torch.Tensor:
    node = next(n for n in kernel.plan.ops if n.name == name)
    index, source = node.attrs["index"], kernel.plan.value_type(node.args[0]).domain
    if index == "all":
        return float("-inf") if rows(g, source) else 0.0
    counts = torch.bincount(layouts.index_array(g, index, source), minlength=rows(g, node.attrs["to"]))
    if bool((counts > 0).all()):
        return float("-inf")
    return torch.where(counts > 0, float("-inf"), 0.0)


class Launch:
    """One kernel bound to one graph: its grid and the graph's arguments, worked out once, so a
    call only allocates the outputs and fills in the values of the program's memory."""

    def __init__(self, kernel: KernelSource, g: Graph):
        self.kernel = kernel
        self.device = g.device
        self.grid = grid(kernel, g)
        self.args: list[Argument | Slot | Scratch | None] = _graph_arguments(kernel, g)
        self.outputs = [(name, expected_shape(g, t), TORCH_DTYPES[t.dtype], _fill(kernel, name, g))
                        for name in kernel.plan.writes for t in [kernel.plan.value_type(name)]]

    def allocate_outputs(self, memory: dict[str, torch.Tensor]) -> None:
        """Buffers for every value the kernel stores (zeroed where it accumulates with atomics,
        -infinity where it takes a maximum with them)."""
        for name, shape, dtype, fill in self.outputs:
            if fill is None:
                memory[name] = torch.empty(shape, dtype=dtype, device=self.device)
            elif isinstance(fill, torch.Tensor):  # one value per row
                per_row = fill.to(dtype).view((-1,) + (1,) * (len(shape) - 1))
                memory[name] = per_row.expand(shape).contiguous()
            else:
                memory[name] = torch.full(shape, fill, dtype=dtype, device=self.device)

    def arguments(self, memory: dict[str, torch.Tensor]) -> list[Argument]:
        out = []
        for arg in self.args:
            if isinstance(arg, Slot):
                value = memory[arg.key]
                if not value.is_contiguous():
                    raise ValueError(f"{self.kernel.name}: %{arg.key} is not contiguous")
                arg = value
            elif isinstance(arg, Scratch):
                arg = (torch.zeros if arg.zeroed else torch.empty)(max(arg.numel, 1), dtype=arg.dtype,
                                                                     device=self.device)
            out.append(arg)
        return out


class Interpreted:
    """A kernel that no template expresses, bound to a graph: its plan runs with torch ops."""

    grid = None

    def __init__(self, kernel: InterpretedKernel, g: Graph):
        self.kernel = kernel
        self.g = g

    def run(self, memory: dict[str, torch.Tensor]) -> None:
        """Compute the kernel's writes from ``memory`` into it (views of other values copied
        where a generated kernel could not load them as words)."""
        run_kernel(self.kernel.plan, self.g, memory)
        for name in self.kernel.plan.writes:
            memory[name] = aligned(memory[name])


def dead_after(plans: PlanProgram) -> list[tuple[str, ...]]:
    """For each kernel of ``plans``, the values no later kernel reads or writes and the program
    does not return: a back end drops them from its memory once that kernel has run, so that a
    program holds only its live intermediates, not all of them until it returns."""
    last: dict[str, int] = {}
    for i, kernel in enumerate(plans.kernels):
        for name in [r.name for r in kernel.reads] + list(kernel.writes):
            last[name] = i
    dead: list[list[str]] = [[] for _ in plans.kernels]
    kept = set(plans.outputs)
    for name, i in last.items():
        if name not in kept:
            dead[i].append(name)
    return [tuple(names) for names in dead]


def bind(kernels: Sequence[KernelSource | InterpretedKernel], g: Graph) -> list[Launch | Interpreted]:
    """The launches of a program's kernels on ``g``."""
    launches = [Interpreted(k, g) if isinstance(k, InterpretedKernel) else Launch(k, g) for k in kernels]
    g.release_scratch()
    return launches


def _graph_arguments(kernel: KernelSource, g: Graph) -> list[Argument | Slot | Scratch | None]:
    out: list[Argument | Slot | Scratch | None] = []
    for arg in kernel.args:
        if arg.kind in ("read", "write"):
            out.append(Slot(arg.key))
        elif arg.kind == "index":
            out.append(layouts.index_array(g, *arg.key))
        elif arg.kind == "degree":
            out.append(layouts.degree(g, arg.key))
        elif arg.kind == "indptr":
            out.append(layouts.csr(g).indptr)
        elif arg.kind == "eids":
            out.append(layouts.csr(g).eids)
        elif arg.kind == "rows":
            out.append(rows(g, arg.key))
        elif arg.kind == "tiles":
            _, by, domain, tile_rows = arg.key
            out.append(layouts.gemm_tiles(g, by, domain, tile_rows))
        elif arg.kind == "perm":
            out.append(layouts.order(g, *arg.key))
        elif arg.kind == "offsets":
            out.append(layouts.type_offsets(g, *arg.key))
        elif arg.kind == "tile_count":
            _, by, domain, tile_rows = arg.key
            out.append(layouts.gemm_tiles(g, by, domain, tile_rows).shape[0])
        elif arg.kind == "index_order":
            out.append(layouts.index_order(g, *arg.key))
        elif arg.kind == "index_in_order":
            out.append(layouts.in_order(g, *arg.key))
        elif arg.kind == "work":
            out.append(layouts.dst_work(g, *arg.key).rows)
        elif arg.kind == "work_chunks":
            out.append(layouts.dst_work(g, *arg.key).chunks)
        elif arg.kind == "hub_partials":
            *work, per_block, dtype = arg.key
            out.append(Scratch(layouts.dst_work(g, *work).split_blocks * per_block, TORCH_DTYPES[dtype], False))
        elif arg.kind == "hub_counters":
            out.append(Scratch(layouts.dst_work(g, *arg.key).split_hubs, torch.int32, True))
        elif arg.kind == "type_count":
            out.append(layouts.type_offsets(g, *arg.key).numel() - 1)
        else:
            raise ValueError(f"{kernel.name}: unknown argument kind {arg.kind}")
    return out


def grid(kernel: KernelSource, g: Graph) -> tuple[int, int, int] | None:
    """The grid for graph ``g``, or None when the kernel has no work (zero rows, tiles, or
    columns: a value of zero-width features)."""
    shape = _grid(kernel, g)
    return shape if shape is not None and min(shape) > 0 else None


def _grid(kernel: KernelSource, g: Graph) -> tuple[int, int, int] | None:
    launch = kernel.launch
    if launch.grid == "rows":
        n = rows(g, launch.domain)
        return ((n + launch.rows_per_block - 1) // launch.rows_per_block, 1, 1) if n else None
    if launch.grid == "work":
        work_arg = next(a for a in kernel.args if a.kind == "work")
        entries = layouts.dst_work(g, *work_arg.key).rows.numel()
        return (entries // launch.rows_per_block, 1, 1) if entries else None
    if launch.grid == "tiles":
        tiles_arg = next(a for a in kernel.args if a.kind == "tiles")
        _, by, domain, tile_rows = tiles_arg.key
        tiles = layouts.gemm_tiles(g, by, domain, tile_rows).shape[0]
        return (tiles, launch.col_tiles, launch.batch) if tiles else None
    if launch.grid == "split":
        tiles_arg = next(a for a in kernel.args if a.kind == "tiles")
        _, by, domain, tile_rows = tiles_arg.key
        chunks = layouts.gemm_tiles(g, by, domain, tile_rows).shape[0]
        return (chunks * launch.batch, launch.row_tiles, launch.col_tiles) if chunks else None
    if launch.grid == "segments":
        offsets_arg = next(a for a in kernel.args if a.kind == "offsets")
        types = layouts.type_offsets(g, *offsets_arg.key).numel() - 1
        return (launch.col_tiles, launch.row_tiles, types * launch.batch) if types else None
    raise ValueError(f"{kernel.name}: unknown grid rule {launch.grid}")
