"""The autotuner: candidate configurations of one compiled program on one graph, ranked by the
cost model, timed on the device (each one's output checked against the reference first), and
the fastest stored in the tuning cache.

Program-level choices (passes, which values are compacted) matter on every back end; where
generated kernels run (CUDA, C++) the lowering (destination reductions, horizontal fusion) and
the kernels' schedule knobs of that target join them. The reference executor has only the former.
Candidates are built from the programs the runtime runs (in training, the gradient programs of
the inputs that get gradients), and configurations that run the same code are one candidate.
The rank is the modelled time of the kernel plans on the C++ back end (``ir.cost.plans_seconds``),
their roofline floor on CUDA, the level-1 cost on the reference executor.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import torch

from pigeon.ir.cost import plans_seconds, program_cost, score
from pigeon.ir.lower import lower
from pigeon.ir.passes import optimize
from pigeon.ir.plans import CpuGemmSchedule, KernelPlan, PlanProgram, runs_on_blas
from pigeon.ir.printer import format_program
from pigeon.ir.program import Program
from pigeon.ir.roofline import floor_seconds, kernel_cost

from .graph import Graph
from .layouts import graph_stats
from .tuning import CACHE, DEFAULT, Config, TuningCache, device_name, schedule_knobs, tuning_key

REWRITES = ("linear_reorder", "horizontal_fusion", "aggregation_order", "compact")
LAUNCH_SECONDS = 5e-6  # a CUDA kernel launch, for the GPU's modelled time
MIN_GAIN = 1.03  # a candidate replaces the defaults only when this much faster, twice
Timer = Callable[[Callable[[], Any]], float]


@dataclass
class Trial:
    config: Config
    label: str
    rank: float  # modelled cost (lower first)
    seconds: float | None = None
    status: str = "not run"  # "ok", "wrong output: ...", "failed: ..."


@dataclass
class TuneResult:
    key: str
    default: Trial
    best: Trial
    trials: list[Trial] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return (self.default.seconds or 0.0) / self.best.seconds if self.best.seconds else 1.0

    def table(self) -> str:
        lines = [f"{'configuration':<60} {'modelled':>10} {'time ms':>9}  status"]
        for t in self.trials:
            ms = f"{t.seconds * 1e3:9.2f}" if t.seconds is not None else f"{'-':>9}"
            lines.append(f"{t.label[:60]:<60} {t.rank:>10.3g} {ms}  {t.status}")
        lines.append(f"default {self.default.seconds * 1e3:.2f} ms, best {self.best.seconds * 1e3:.2f} ms "
                     f"({self.best.label}): {self.speedup:.2f}x")
        return "\n".join(lines)


def _plans(program: Program, config: Config, target: str) -> PlanProgram:
    """The kernel plans the runtime of ``target`` runs for ``program`` under ``config``."""
    plans = lower(program, config.dst_reductions, config.horizontal, target=target)
    overrides = config.schedules_for(program.name, {k.name: k.schedule for k in plans.kernels})
    return lower(program, config.dst_reductions, config.horizontal, overrides, target=target) if overrides else plans


@functools.lru_cache(maxsize=4096)
def _kernel_code(plan: KernelPlan) -> str:
    """The code of one kernel without its comments and name, and how it is launched; a plan no
    template renders runs as torch ops: its plan stands for its code."""
    from pigeon.codegen import CodegenError, render

    if runs_on_blas(plan):  # its other knobs change nothing
        return "torch.matmul per type: " + str(dataclasses.replace(plan, schedule=CpuGemmSchedule(blas=True)))
    try:
        kernel = render(plan, with_common=False)
    except CodegenError:
        return "torch ops: " + str(plan)
    lines = [line for line in kernel.source.replace(kernel.name, "KERNEL").splitlines()
             if not line.lstrip().startswith("//")]
    return "\n".join(lines) + "\n" + str(kernel.launch).replace(kernel.name, "KERNEL")


def median_timer(repeat: int = 5, warmup: int = 1) -> Timer:
    """Median seconds of ``repeat`` calls after ``warmup`` (synchronising CUDA)."""
    def timer(step: Callable[[], Any]) -> float:
        def once() -> float:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return time.perf_counter() - start
        for _ in range(warmup):
            once()
        return statistics.median(once() for _ in range(repeat))
    return timer


class Tuner:
    """Tunes ``fn(g, *args, **kwargs)`` for ``mode`` ("infer" or "train")."""

    def __init__(self, fn: Any, g: Graph, args: tuple, kwargs: dict | None = None, mode: str = "train",
                 timer: Timer | None = None, budget: float | None = 60.0, max_trials: int | None = None,
                 cache: TuningCache = CACHE):
        if mode not in ("infer", "train"):
            raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
        self.fn, self.g, self.kwargs, self.mode = fn, g, dict(kwargs or {}), mode
        self.args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        self.timer = timer or median_timer()
        self.budget, self.max_trials, self.cache = budget, max_trials, cache
        self.program = fn.program(g, *self.args, **self.kwargs)
        self.stats = graph_stats(g)
        dtype = self.program.inputs[0].type.dtype if self.program.inputs else "float32"
        exe = fn.executable(g, *self.args, config=DEFAULT, **self.kwargs)
        self.backend = exe.backend
        self.key = tuning_key(self.program, g, dtype, mode, exe.backend,
                              self._trained_inputs(exe) if mode == "train" else ())

    # ---- candidates ---------------------------------------------------------------------------

    def _programs(self, config: Config) -> list[Program]:
        """The level-1 programs the runtime runs under ``config``: the forward program, or in
        training the gradient programs of the inputs that get gradients (as ``_step`` trains)."""
        exe = self.fn.executable(self.g, *self.args, config=config, **self.kwargs)
        if self.mode == "infer":
            return [exe.forward]
        grad = exe.gradient(self._wrt(exe))
        return [grad.forward, grad.backward]

    def _modelled(self, config: Config) -> float:
        """The cost model's figure for ``config`` (lower: cheaper) on the programs it runs."""
        programs = self._programs(config)
        if self.backend == "cpp":  # seconds, from weights fitted to measured times
            return sum(plans_seconds(_plans(p, config, "cpp"), self.stats) for p in programs)
        if self.backend == "cuda":  # seconds: each kernel's roofline floor and a launch
            return sum(floor_seconds(kernel_cost(k, self.stats), k.value_type(k.writes[0]).dtype if k.writes
                                     else "float32") + LAUNCH_SECONDS
                       for p in programs for k in _plans(p, config, "cuda").kernels)
        return sum(score(program_cost(p, self.stats).total) for p in programs)

    def code(self, config: Config) -> tuple[str, ...]:
        """What runs under ``config``: the generated code of every kernel of every program the
        runtime runs (comments and kernel names left out), or the programs' text on the
        reference executor. Two configurations with the same code are one candidate."""
        programs = self._programs(config)
        if self.backend not in ("cuda", "cpp"):
            return tuple(format_program(p) for p in programs)
        target = "cuda" if self.backend == "cuda" else "cpp"
        return tuple(_kernel_code(k) for p in programs for k in _plans(p, config, target).kernels)

    def candidates(self) -> list[Trial]:
        """Configurations that run different code, the default first, the rest by modelled cost.
        ``merged`` lists the configurations left out, with the candidate whose code they share."""
        configs: list[tuple[str, Config]] = [("defaults", DEFAULT)]
        for k in range(1, len(REWRITES) + 1):
            for off in itertools.combinations(REWRITES, k):
                configs.append(("without " + ", ".join(off), Config(disabled=frozenset(off))))
        default_forward = optimize(self.program, self.stats)
        compacted = [n.name for n in default_forward.nodes
                     if n.op.value == "gather" and n.attrs.get("index") in ("compact", "compact_dst")]
        for name in compacted:
            configs.append((f"{name} per edge", Config(keep_on_edges=frozenset({name}))))
        if self.backend in ("cuda", "cpp"):
            configs += self._kernel_candidates(self.backend)
        trials: list[Trial] = []
        first_with: dict[tuple[str, ...], str] = {}
        self.merged: list[tuple[str, str]] = []
        for label, config in configs:
            code = self.code(config)
            if code in first_with:
                self.merged.append((label, first_with[code]))
                continue
            first_with[code] = label
            trials.append(Trial(config, label, self._modelled(config)))
        return trials[:1] + sorted(trials[1:], key=lambda t: t.rank)

    def _kernel_candidates(self, backend: str) -> list[tuple[str, Config]]:
        """Lowering choices, and every schedule knob value of every kernel that the runtime runs
        (the programs of the executable itself, differentiated as ``_step`` trains)."""
        from pigeon.codegen import schedule_variants

        out = [("atomic destination reductions", Config(dst_reductions="atomic")),
               ("no horizontal fusion", Config(horizontal=False))]
        target = "cuda" if backend == "cuda" else "cpp"
        for program in self._programs(DEFAULT):
            for kernel in lower(program, target=target).kernels:
                for variant in schedule_variants(kernel):
                    knobs = schedule_knobs(variant.schedule)
                    label = f"{kernel.name}: " + " ".join(f"{k}={v}" for k, v in knobs)
                    out.append((label, Config(schedules=((program.name, kernel.name, knobs),))))
        return out

    # ---- trials -------------------------------------------------------------------------------

    def _trained_inputs(self, exe: Any) -> tuple[str, ...]:
        """The inputs training differentiates: every floating tensor argument but the first (the
        node features)."""
        params = dict(self.fn._bind(self.g, self.args, self.kwargs))
        first = next(iter(params), None)
        return tuple(n.name for n in exe.forward.inputs if n.name != first and params[n.name].dtype.is_floating_point)

    def _wrt(self, exe: Any) -> tuple[str, ...]:
        """The inputs the runtime differentiates when ``_step`` trains: the trained inputs that
        have elements and that an output depends on (as ``Executable.__call__`` chooses them)."""
        params = dict(self.fn._bind(self.g, self.args, self.kwargs))
        trained = set(self._trained_inputs(exe))
        return tuple(n.name for n in exe.forward.inputs
                     if n.name in trained and params[n.name].numel() and n.name in exe.reaching)

    def _step(self, config: Config) -> Callable[[], list[torch.Tensor]]:
        exe = self.fn.executable(self.g, *self.args, config=config, **self.kwargs)
        names = [n.name for n in exe.forward.inputs]
        params = dict(self.fn._bind(self.g, self.args, self.kwargs))
        tensors = [params[n] for n in names]
        trained = set(self._trained_inputs(exe))
        if self.mode == "infer":
            def infer() -> list[torch.Tensor]:
                with torch.no_grad():
                    out = exe(self.g, tensors)
                return list(out) if isinstance(out, tuple) else [out]
            return infer
        # training: gradients of every tensor argument but the first (the node features)
        leaves = [t.detach().requires_grad_(n in trained) for n, t in zip(names, tensors)]
        upstream: list[torch.Tensor] = []

        def train() -> list[torch.Tensor]:
            for t in leaves:
                t.grad = None
            out = exe(self.g, leaves)
            outs = list(out) if isinstance(out, tuple) else [out]
            if not upstream:
                upstream.extend(torch.randn_like(o) for o in outs)
            torch.autograd.backward(outs, upstream)
            return [o.detach() for o in outs] + [t.grad for t in leaves if t.requires_grad and t.grad is not None]
        return train

    def _reference(self) -> list[torch.Tensor]:
        torch.manual_seed(0)
        return self._step(Config(disabled=frozenset(REWRITES)))()

    @staticmethod
    def _agrees(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> str | None:
        if len(ours) != len(reference):
            return f"{len(ours)} results instead of {len(reference)}"
        for a, b in zip(ours, reference):
            scale = max(b.abs().max().item(), 1.0) if b.numel() else 1.0
            tol = 1e-9 if b.dtype == torch.float64 else 1e-3
            if a.shape != b.shape or (a.numel() and (a - b).abs().max().item() > tol * scale):
                return f"differs from the reference by {(a - b).abs().max().item():.3g}" if a.shape == b.shape \
                    else "wrong shape"
        return None

    def _confirmed(self, default: Trial, best: Trial) -> Trial:
        """The best candidate if a second timing of it and of the defaults agrees that it wins by
        ``MIN_GAIN``; the defaults otherwise. One noisy timing must not store a slower choice."""
        if best is default or best.seconds * MIN_GAIN > default.seconds:
            return default
        for trial in (default, best):
            torch.manual_seed(0)
            trial.seconds = min(trial.seconds, self.timer(self._step(trial.config)))
        if best.seconds * MIN_GAIN > default.seconds:
            best.status = f"ok (not {MIN_GAIN:.2f}x faster than the defaults when timed again)"
            return default
        return best

    def run(self, progress: Callable[[Iterable], Iterable] | None = None, store: bool = True) -> TuneResult:
        """Time the candidates in rank order within the budget; store the fastest."""
        trials = self.candidates()
        reference = self._reference()
        start = time.perf_counter()
        timed: list[Trial] = []
        for i, trial in enumerate(progress(trials) if progress else trials):
            if i and ((self.max_trials is not None and len(timed) >= self.max_trials)
                      or (self.budget is not None and time.perf_counter() - start > self.budget)):
                trial.status = "not run (budget)"
                continue
            try:
                torch.manual_seed(0)
                step = self._step(trial.config)
                problem = self._agrees(step(), reference)
                if problem:
                    trial.status = f"wrong output: {problem}"
                else:
                    trial.seconds = self.timer(step)
                    trial.status = "ok"
            except Exception as err:  # noqa: BLE001 - a failing candidate is reported, never chosen
                trial.status = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
            timed.append(trial)
        ok = [t for t in trials if t.status == "ok"]
        if not ok or trials[0].status != "ok":
            raise RuntimeError("the default configuration itself failed: " + trials[0].status)
        best = self._confirmed(trials[0], min(ok, key=lambda t: t.seconds))
        result = TuneResult(self.key, trials[0], best, trials)
        if store:
            self.cache.store(self.key, {
                "config": best.config.to_json(), "describe": best.config.describe(), "function": self.fn.name,
                "graph": repr(self.g), "device": device_name(self.g.device), "mode": self.mode,
                "default_ms": trials[0].seconds * 1e3, "best_ms": best.seconds * 1e3, "speedup": result.speedup,
                "trials": len(timed), "dropped": [f"{t.label}: {t.status}" for t in trials
                                                  if t.status.startswith(("wrong", "failed"))],
                "when": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return result


def tune(fn_or_layer: Any, g: Graph, *inputs: Any, budget: float | None = 60.0, mode: str = "train",
         max_trials: int | None = None, timer: Timer | None = None, **kwargs: Any) -> TuneResult:
    """Tune a compiled function (``tune(fn, g, *args)``) or a ``pigeon.nn`` layer
    (``tune(layer, g, h)``) on graph ``g`` and store the fastest configuration: later calls on
    similar graphs use it."""
    from pigeon.compiler import CompiledFunction, recording_calls

    if isinstance(fn_or_layer, CompiledFunction):
        fn, args, call_kwargs = fn_or_layer, inputs, kwargs
    else:
        with torch.no_grad(), recording_calls() as calls:
            fn_or_layer(g, *inputs, **kwargs)
        if len(calls) != 1:
            raise ValueError(f"tune needs one compiled call to tune; {type(fn_or_layer).__name__} made {len(calls)}")
        fn, g, args, call_kwargs = calls[0]
    return Tuner(fn, g, args, call_kwargs, mode=mode, timer=timer, budget=budget, max_trials=max_trials).run()
