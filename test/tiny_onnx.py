"""ONNX models the tests write: IR version and opset pinned, so any recent ONNX Runtime loads them.

``helper.make_model`` stamps the installed onnx package's newest IR version (14 with onnx 1.23),
which an older ONNX Runtime refuses (1.31: at most 13); opset 17 needs IR 8.
"""
import onnx
from onnx import helper

OPSET = 17
IR_VERSION = 8


def tiny_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """Return ``graph`` as a model of opset 17, IR version 8."""
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                             ir_version=IR_VERSION)
