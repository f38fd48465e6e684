"""Lowering of level-2 kernel plans to CUDA source, by rendering the Jinja templates.

    source = render(plan)            # a KernelSource: source, kernel name, arguments, launch
    module = render_module(plans)    # every kernel of a plan program, one source text
"""
from __future__ import annotations

import functools
import hashlib
from importlib import resources

import jinja2

from pigeon.ir.plans import KernelPlan, PlanProgram, Strategy

from .builder import CodegenError
from .gemm import GemmKernel
from .kernel import KernelArg, KernelSource, Launch
from .schedules import schedule_problem, schedule_variants
from .traversal import TraversalKernel

__all__ = ["CodegenError", "KernelArg", "KernelSource", "Launch", "common_source", "kernel_name",
           "render", "render_module", "schedule_problem", "schedule_variants"]


@functools.lru_cache(maxsize=None)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FunctionLoader(_template_text), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _template_text(name: str) -> str:
    return resources.files("pigeon.templates").joinpath(name).read_text()


def common_source() -> str:
    """The helpers every kernel source starts with (templates/common.cuh)."""
    return _template_text("common.cuh")


def kernel_name(plan: KernelPlan) -> str:
    """A C name that changes whenever the plan does (so cached modules never mix kernels)."""
    digest = hashlib.sha256(repr(plan).encode()).hexdigest()[:10]
    return f"pigeon_{plan.name}_{digest}"


def render(plan: KernelPlan, with_common: bool = True) -> KernelSource:
    """The CUDA source of one kernel plan; the same plan always gives the same bytes."""
    problem = schedule_problem(plan, plan.schedule)
    if problem:
        raise CodegenError(f"{plan.name}: schedule {plan.schedule} cannot run: {problem}")
    name = kernel_name(plan)
    if plan.strategy in (Strategy.GEMM, Strategy.WGRAD):
        builder = GemmKernel(plan, name)
        template = "gemm.cu.j2"
    else:
        builder = TraversalKernel(plan, name)
        template = "traversal.cu.j2"
    context = builder.build()
    text = _environment().get_template(template).render(**context)
    source = (common_source() + "\n" + text) if with_common else text
    return KernelSource(name, source, tuple(context["args"]), context["launch"], plan,
                        tuple(dict.fromkeys(builder.zero_filled)))


def render_module(plans: PlanProgram | list[KernelPlan]) -> tuple[str, list[KernelSource]]:
    """One source holding every kernel of ``plans`` (common helpers once), and the kernels."""
    kernel_plans = plans.kernels if isinstance(plans, PlanProgram) else plans
    kernels = [render(k, with_common=False) for k in kernel_plans]
    return common_source() + "".join("\n" + k.source for k in kernels), kernels
