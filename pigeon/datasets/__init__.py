"""Data sets: seeded synthetic graphs of published shapes, the Debian package graph, and knowledge
graphs for link prediction.

    from pigeon.datasets import load
    ds = load("aifb", scale=0.1)          # synthetic, shape of SHAPES["aifb"]
    ds = load("debian")                   # the apt package index (needs apt lists)
    umls = kg("umls")                     # PyKEEN's UMLS triples (pip install pigeon-rgnn[kg])
"""
from .dataset import Dataset, DatasetError
from .debian import debian
from .kg import KnowledgeGraph, kg
from .loader import KNOWN, load
from .shapes import SHAPES, GraphShape
from .synthetic import synthetic

__all__ = ["Dataset", "DatasetError", "GraphShape", "KNOWN", "KnowledgeGraph", "SHAPES", "debian", "kg", "load", "synthetic"]
