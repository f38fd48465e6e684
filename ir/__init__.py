"""Level-1 IR of Pigeon: typed values in graph domains and the ops between them."""
from .ops import Op
from .printer import format_program
from .program import Builder, Node, Program
from .shape_inference import ShapeError
from .types import Domain, ValueType
from .verify import VerifyError, verify

__all__ = ["Builder", "Domain", "Node", "Op", "Program", "ShapeError", "ValueType", "VerifyError",
           "format_program", "verify"]
