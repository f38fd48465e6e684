"""Pigeon: relational GNN layers written in a loop DSL, compiled to fused kernels.

    import pigeon
    from pigeon.lang import linear, dot, softmax, leaky_relu, sum

    @pigeon.compile
    def rgcn(g, h, W):
        for e in g.edges():
            e.msg = linear(h[e.src], W[e.etype])
        for n in g.dst_nodes():
            n.out = sum(e.msg for e in n.incoming_edges())
        return n.out
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# names are imported on first use, so that `pigeon --help` and `import pigeon` stay quick
_EXPORTS = {
    "Graph": "pigeon.runtime.graph", "GraphChangedError": "pigeon.runtime.graph", "GraphError": "pigeon.runtime.graph",
    "InputError": "pigeon.runtime.reference", "CompiledFunction": "pigeon.compiler", "compile": "pigeon.compiler",
    "PASS_NAMES": "pigeon.config", "disable_passes": "pigeon.config", "use_backend": "pigeon.config",
    "tune": "pigeon.runtime.tuner", "TraceError": "pigeon.tracer",
}
_SUBMODULES = ("lang", "nn", "datasets", "examples", "benchmarks", "ir", "runtime", "codegen")

__all__ = [*_EXPORTS, "lang", "nn", "datasets", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"pigeon.{name}")
    else:
        raise AttributeError(f"module 'pigeon' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
