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
from pigeon.runtime.graph import Graph, GraphChangedError, GraphError
from pigeon.runtime.reference import InputError

from . import lang
from .compiler import CompiledFunction, compile
from .config import PASS_NAMES, disable_passes, use_backend
from pigeon.runtime.tuner import tune
from .tracer import TraceError

__version__ = "0.1.0"

__all__ = ["CompiledFunction", "Graph", "PASS_NAMES", "disable_passes", "tune", "use_backend", "GraphChangedError", "GraphError", "InputError",
           "TraceError", "compile", "lang", "__version__"]
