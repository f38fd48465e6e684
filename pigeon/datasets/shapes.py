"""The published shapes of the benchmark data sets (see BENCHMARKS.md, "Graphs")."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GraphShape:
    """Node, edge, node-type and edge-type counts of one data set.

    ``ntype_sizes`` and ``relations``/``relation_sizes`` are set only where the real schema is
    known (mag); synthetic graphs of the other shapes invent a skewed schema.
    """

    name: str
    num_nodes: int
    num_edges: int
    num_ntypes: int
    num_etypes: int
    ntype_sizes: dict[str, int] | None = None
    relations: tuple[tuple[str, str, str], ...] | None = None
    relation_sizes: tuple[int, ...] | None = None


_MAG_NTYPES = {"author": 1_134_649, "paper": 736_389, "field_of_study": 59_965, "institution": 8_740}
# Canonical relations of ogbn-mag and their edge counts (OGB documentation); they sum to 21,111,007.
_MAG_RELATIONS = (("author", "writes", "paper"), ("paper", "cites", "paper"),
                  ("paper", "has_topic", "field_of_study"), ("author", "affiliated_with", "institution"))
_MAG_RELATION_SIZES = (7_145_660, 5_416_271, 7_505_078, 1_043_998)

SHAPES: dict[str, GraphShape] = {s.name: s for s in (
    GraphShape("aifb", 8_285, 66_371, 7, 104),
    GraphShape("mutag", 23_644, 172_098, 5, 50),
    GraphShape("bgs", 333_845, 2_166_243, 27, 207),
    GraphShape("am", 881_680, 5_668_682, 7, 133),
    GraphShape("biokg", 93_773, 5_088_434, 5, 51),
    GraphShape("fb15k", 14_541, 620_232, 1, 474),
    GraphShape("wikikg2", 2_500_604, 16_109_182, 1, 535),
    GraphShape("mag", 1_939_743, 21_111_007, 4, 4, ntype_sizes=_MAG_NTYPES,
               relations=_MAG_RELATIONS, relation_sizes=_MAG_RELATION_SIZES),
)}
