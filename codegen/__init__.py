"""Lowering of level-2 kernel plans to source, by rendering the Jinja templates: CUDA for plans
with CUDA schedules, C++/OpenMP for plans with CPU schedules (``lower(..., target="cpp")``).

    source = render(plan)            # a KernelSource: source, kernel name, arguments, launch
    module = render_module(plans)    # every kernel of a plan program, one source text
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import warnings
from importlib import resources

import jinja2

from pigeon.ir.plans import KernelPlan, PlanProgram, Strategy, default_schedule, runs_on_blas, schedule_target

from .builder import CodegenError
from .cpu_gemm import CpuGemmKernel
from .gemm import GemmKernel
from .kernel import FallbackWarning, InterpretedKernel, KernelArg, KernelSource, Launch
from .schedules import schedule_problem, schedule_variants
from .traversal import TraversalKernel

__all__ = ["CodegenError", "FallbackWarning", "InterpretedKernel", "KernelArg", "KernelSource", "Launch",
           "common_source", "kernel_name", "render", "render_module", "schedule_problem", "schedule_variants"]

# per target: the helpers every module starts with, the GEMM and the traversal templates
TEMPLATES = {"cuda": ("common.cuh", "gemm.cu.j2", "traversal.cu.j2"),
             "cpp": ("cpu_common.h", "cpu_gemm.cpp.j2", "cpu_traversal.cpp.j2")}


@functools.lru_cache(maxsize=None)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FunctionLoader(_template_text), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _template_text(name: str) -> str:
    return resources.files("pigeon.templates").joinpath(name).read_text()


def common_source(target: str = "cuda") -> str:
    """The helpers every kernel source of ``target`` starts with (templates/common.cuh or cpu_common.h)."""
    return _template_text(TEMPLATES[target][0])


def kernel_name(plan: KernelPlan) -> str:
    """A C name that changes whenever the plan does (so cached modules never mix kernels)."""
    digest = hashlib.sha256(repr(plan).encode()).hexdigest()[:10]
    return f"pigeon_{plan.name}_{digest}"


def render(plan: KernelPlan, with_common: bool = True) -> KernelSource:
    """The source of one kernel plan, CUDA or C++ as its schedule says; the same plan always
    gives the same bytes."""
    if runs_on_blas(plan):
        raise CodegenError(f"{plan.name}: scheduled to run as torch.matmul per type (blas=True): no generated code")
    problem = schedule_problem(plan, plan.schedule)
    if problem:
        raise CodegenError(f"{plan.name}: schedule {plan.schedule} cannot run: {problem}")
    name = kernel_name(plan)
    target = schedule_target(plan.schedule)
    common, gemm_template, traversal_template = TEMPLATES[target]
    if plan.strategy in (Strategy.GEMM, Strategy.WGRAD):
        builder = CpuGemmKernel(plan, name) if target == "cpp" else GemmKernel(plan, name)
        template = gemm_template
    else:
        builder = TraversalKernel(plan, name, target)
        template = traversal_template
    context = builder.build()
    text = _environment().get_template(template).render(**context)
    source = (common_source(target) + "\n" + text) if with_common else text
    return KernelSource(name, source, tuple(context["args"]), context["launch"], plan,
                        tuple(dict.fromkeys(builder.zero_filled)), tuple(dict.fromkeys(builder.max_filled)))


def render_module(plans: PlanProgram | list[KernelPlan], fallback: bool = False
                  ) -> tuple[str, list[KernelSource | InterpretedKernel]]:
    """One source holding every kernel of ``plans`` (common helpers once), and the kernels.

    With ``fallback``, a kernel that cannot be rendered as planned (``CodegenError``) is
    rendered with its target's default schedule, else comes back as an ``InterpretedKernel``
    that the runtime runs with torch ops; one ``FallbackWarning`` per call names those kernels
    and why. Without it the error propagates (tests, and tools that show the code).
    """
    kernel_plans = plans.kernels if isinstance(plans, PlanProgram) else plans
    targets = {schedule_target(k.schedule) for k in kernel_plans}
    if len(targets) > 1:
        raise CodegenError("a module holds kernels of one target; these plans mix CUDA and C++ schedules")
    kernels, notes = [], []
    for plan in kernel_plans:
        if runs_on_blas(plan):
            kernels.append(InterpretedKernel(plan, "torch.matmul per type (schedule blas=True)"))
            continue
        if not fallback:
            kernels.append(render(plan, with_common=False))
            continue
        kernel, note = _render_or_fall_back(plan)
        kernels.append(kernel)
        if note:
            notes.append(note)
    if notes:
        name = plans.name if isinstance(plans, PlanProgram) else "a program"
        warnings.warn(f"{name}: kernels that no template expresses as planned: " + "; ".join(notes),
                      FallbackWarning, stacklevel=2)
    target = targets.pop() if targets else "cuda"
    source = common_source(target) + "".join("\n" + k.source for k in kernels if isinstance(k, KernelSource))
    return source, kernels


def _render_or_fall_back(plan: KernelPlan) -> tuple[KernelSource | InterpretedKernel, str | None]:
    """The kernel of ``plan``, else of the plan with its target's default schedule, else the plan
    to interpret; and what was done instead of the plan, with the reason."""
    try:
        return render(plan, with_common=False), None
    except CodegenError as err:
        reason = str(err)
    default = default_schedule(plan.strategy, schedule_target(plan.schedule))
    if plan.schedule != default:
        try:
            kernel = render(dataclasses.replace(plan, schedule=default), with_common=False)
            return kernel, f"{plan.name} runs with its default schedule ({reason})"
        except CodegenError:
            pass
    return InterpretedKernel(plan, reason), f"{plan.name} runs with torch ops ({reason})"
