"""Graphs and their layouts, and the executors that run programs on them."""
from .graph import Graph, GraphChangedError, GraphError
from .reference import InputError, ReferenceExecutor, execute

__all__ = ["Graph", "GraphChangedError", "GraphError", "InputError", "ReferenceExecutor", "execute"]
