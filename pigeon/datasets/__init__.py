"""Benchmark data sets: seeded synthetic graphs of published shapes, and the Debian package graph.

    from pigeon.datasets import load
    ds = load("aifb", scale=0.1)          # synthetic, shape of SHAPES["aifb"]
    ds = load("debian")                   # the apt package index (needs apt lists)
"""
from .dataset import Dataset, DatasetError
from .debian import debian
from .loader import KNOWN, load
from .shapes import SHAPES, GraphShape
from .synthetic import synthetic

__all__ = ["Dataset", "DatasetError", "GraphShape", "KNOWN", "SHAPES", "debian", "load", "synthetic"]
