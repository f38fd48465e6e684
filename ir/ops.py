"""The level-1 operations, in one enum grouped by kind."""
from __future__ import annotations

import enum


class Op(enum.Enum):
    # sources
    INPUT = "input"  # attrs: name
    DEGREE = "degree"  # attrs: by ("dst" | "dst_etype"), dtype; per edge, incoming edges of its dst
    CONST = "const"  # attrs: value, dtype; one global number
    SIZE = "size"  # attrs: of (a domain), dtype; one global number: the graph's row count of that domain
    MATCH = "match"  # attrs: lhs, rhs (an index, or None), value, cmp, to, dtype; 1 where lhs cmp rhs else 0
    # movement between domains (see ir.indices)
    GATHER = "gather"  # attrs: index, to
    REDUCE = "reduce"  # attrs: index, to, kind ("sum" | "mean" | "max")
    EDGE_SOFTMAX = "edge_softmax"  # softmax over the incoming edges of each destination
    # typed linear algebra
    LINEAR = "linear"  # attrs: by, transpose; x @ W[type of row] (W^T with transpose)
    LINEAR_WGRAD = "linear_wgrad"  # attrs: by, batched; per weight row: sum over its rows of x^T dy
    DOT = "dot"  # broadcast, then sum over the last axis (kept as size 1)
    # elementwise, one input
    NEG = "neg"
    EXP = "exp"
    LOG = "log"
    RECIP = "recip"
    SQRT = "sqrt"
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"  # attrs: slope
    SIGMOID = "sigmoid"
    TANH = "tanh"
    GELU = "gelu"
    ABS = "abs"
    ELU = "elu"  # attrs: alpha
    SOFTPLUS = "softplus"  # attrs: beta, threshold (as torch.nn.functional.softplus)
    STEP = "step"  # 1 where x > 0 else 0
    GELU_GRAD = "gelu_grad"  # d gelu(x) / dx
    SCALE = "scale"  # attrs: c; x * c
    SHIFT = "shift"  # attrs: c; x + c
    POW = "pow"  # attrs: c; x ** c
    # elementwise, two inputs (numpy broadcasting over the feature shape)
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    MINIMUM = "minimum"  # NaN wins, as in torch
    MAXIMUM = "maximum"
    EQ = "eq"  # 1 where x == y else 0
    NE = "ne"  # the comparisons: 1 where true else 0
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    # elementwise, three inputs
    SELECT = "select"  # cond, a, b: a where cond != 0 else b
    # feature shape
    RESHAPE = "reshape"  # attrs: shape
    CONCAT = "concat"  # along the last feature axis
    SLICE = "slice"  # attrs: start, stop; a range of the last feature axis (concat's transpose)
    SUM_TO = "sum_to"  # attrs: shape; sums broadcast axes away (the transpose of broadcasting)


UNARY = frozenset({
    Op.NEG, Op.EXP, Op.LOG, Op.RECIP, Op.SQRT, Op.RELU, Op.LEAKY_RELU, Op.SIGMOID, Op.TANH,
    Op.GELU, Op.STEP, Op.GELU_GRAD, Op.SCALE, Op.SHIFT, Op.POW, Op.ABS, Op.ELU, Op.SOFTPLUS,
})
COMPARISONS = frozenset({Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE})
BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MINIMUM, Op.MAXIMUM}) | COMPARISONS
TERNARY = frozenset({Op.SELECT})
ELEMENTWISE = UNARY | BINARY | TERNARY
SOURCES = frozenset({Op.DEGREE, Op.CONST, Op.SIZE, Op.MATCH})  # values read from the graph or the program, no memory

REDUCE_KINDS = ("sum", "mean", "max")
