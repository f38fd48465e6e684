"""Which schedules a kernel plan can take: the limits of the templates and the hardware."""
from __future__ import annotations

import dataclasses

from pigeon.ir.plans import (CpuGemmSchedule, CpuTraversalSchedule, GemmSchedule, KernelPlan, Schedule,
                             TraversalSchedule, runs_on_blas)

MAX_THREADS = 1024
MAX_STATIC_SHARED = 48 * 1024


def schedule_problem(plan: KernelPlan, schedule: Schedule) -> str | None:
    """Why ``schedule`` cannot run ``plan``, or None if it can."""
    if isinstance(schedule, GemmSchedule):
        s = schedule
        if s.tile_rows % s.thread_rows or s.tile_cols % s.thread_cols:
            return "tiles are not multiples of the thread tiles"
        threads = (s.tile_rows // s.thread_rows) * (s.tile_cols // s.thread_cols)
        if threads > MAX_THREADS:
            return f"{threads} threads per block"
        from .gemm import x_tile_pad
        element = 8 if (plan.reads + plan.ops)[0].type.dtype == "float64" else 4
        shared = element * s.tile_k * (s.tile_rows + x_tile_pad(s) + s.tile_cols)
        if shared > MAX_STATIC_SHARED:
            return f"{shared} bytes of shared memory"
        return None
    if isinstance(schedule, CpuGemmSchedule):
        if min(schedule.tile_rows, schedule.micro_rows, schedule.micro_cols) < 1:
            return "tile and micro-kernel sizes must be positive"
        return None
    if isinstance(schedule, CpuTraversalSchedule):
        return None if schedule.rows_per_task >= 1 else "rows_per_task must be positive"
    if isinstance(schedule, TraversalSchedule):
        tpr = schedule.threads_per_row
        if tpr < 1 or tpr > 32 or tpr & (tpr - 1):
            return "threads_per_row must be a power of two up to 32"
        if max(32, schedule.rows_per_block * tpr) > MAX_THREADS:
            return "too many threads per block"
        return None
    return f"unknown schedule {type(schedule).__name__}"


def schedule_variants(plan: KernelPlan) -> list[KernelPlan]:
    """The plan with each knob set to each of its listed values in turn (the others at their
    defaults), where the result can run and renders other code than the plan and every earlier
    variant (a knob value a kernel cannot use, such as more micro-kernel columns than the
    output has, is no candidate; a C++ GEMM on BLAS is one variant). A plan that no template
    expresses has no variants."""
    from . import CodegenError, render

    def code(p: KernelPlan) -> str | None:
        if runs_on_blas(p):
            return "torch.matmul per type"  # whatever the other knobs say
        try:
            kernel = render(p)
        except CodegenError:
            return None
        return kernel.source.split("level-1 ops:", 1)[1].replace(kernel.name, "")

    base = code(plan)
    if base is None:
        return []
    out, seen = [], {base}
    for knob, values in plan.schedule.CHOICES.items():
        for value in values:
            if value == getattr(plan.schedule, knob):
                continue
            schedule = dataclasses.replace(plan.schedule, **{knob: value})
            if schedule_problem(plan, schedule) is not None:
                continue
            variant = dataclasses.replace(plan, schedule=schedule)
            rendered = code(variant)
            if rendered is not None and rendered not in seen:
                seen.add(rendered)
                out.append(variant)
    return out
