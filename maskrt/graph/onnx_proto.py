"""Read the little maskrt needs from an ONNX file without the ``onnx`` package.

The base install (ONNX Runtime, no PyTorch, no ``onnx``) still needs two things from a graph
file: its metadata (the shipped graph records which weights it was made from) and the classifier
weights the CAM uses. ONNX files are protocol buffers; this decodes just the fields named below
(field numbers from onnx/onnx.proto), straight from a memory map, so a 22 MB graph is never
copied and reading it costs milliseconds.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

import numpy as np

# onnx.proto field numbers.
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 4, 5
_ATTR_NAME, _ATTR_INT = 1, 3
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_NAME, _TENSOR_RAW = 1, 2, 4, 8, 9
_TENSOR_DATA_LOCATION = 14
#: TensorProto.DataType values maskrt graphs store weights in.
_NUMPY_DTYPES = {1: np.dtype("<f4"), 10: np.dtype("<f2"), 11: np.dtype("<f8")}

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class OnnxFormatError(ValueError):
    """The file is not an ONNX model this reader can decode."""


@dataclass
class Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    int_attributes: dict[str, int] = field(default_factory=dict)


@dataclass
class Initializer:
    name: str
    data_type: int
    dims: tuple[int, ...]
    data: bytes | memoryview  # raw little-endian bytes, or packed float_data
    external: bool = False

    def array(self) -> np.ndarray:
        """The tensor as a NumPy array (a copy, so it outlives the file's memory map)."""
        if self.external:
            raise OnnxFormatError(f"initializer {self.name!r}: weights stored outside the file "
                                  "(external data) are not supported; export with inline weights")
        dtype = _NUMPY_DTYPES.get(self.data_type)
        if dtype is None:
            raise OnnxFormatError(f"initializer {self.name!r}: unsupported data type "
                                  f"{self.data_type} (expected float, float16 or double)")
        return np.frombuffer(self.data, dtype=dtype).reshape(self.dims).copy()


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The model's ``metadata_props`` (key -> value); skips the graph without decoding it."""
    return {_text(entry, _ENTRY_KEY): _text(entry, _ENTRY_VALUE)
            for number, entry in _fields(_mapped(path)) if number == _MODEL_METADATA}


def gemm_weight(path: str | os.PathLike[str], output: str) -> np.ndarray:
    """float32 ``[out_features, in_features]`` weight of the Gemm that produces ``output``.

    The weight may be an initializer or an initializer behind Cast nodes (the shipped graph
    stores weights as float16 and casts them to float32 inside the graph).
    """
    nodes, initializers = _graph(_mapped(path))
    gemm = next((n for n in nodes if n.op_type == "Gemm" and output in n.outputs), None)
    if gemm is None:
        raise OnnxFormatError(f"{path}: expected a Gemm producing {output!r} (a maskrt graph)")
    producers = {name: node for node in nodes for name in node.outputs}
    name = gemm.inputs[1]
    while name not in initializers and name in producers and producers[name].op_type == "Cast":
        name = producers[name].inputs[0]
    if name not in initializers:
        raise OnnxFormatError(f"{path}: the weight of the Gemm producing {output!r} is "
                              "computed, not stored; expected an initializer (behind Casts)")
    weight = initializers[name].array().astype(np.float32)
    return weight if gemm.int_attributes.get("transB", 0) else weight.T


def _mapped(path: str | os.PathLike[str]) -> memoryview:
    """A read-only memory map of the file. It is unmapped when the last view of it is gone (not
    closed explicitly: views into it, e.g. in a traceback, would make closing fail)."""
    with open(path, "rb") as stream:
        if os.fstat(stream.fileno()).st_size == 0:
            raise OnnxFormatError(f"{path}: empty file, expected an ONNX model")
        return memoryview(mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ))


def _graph(model: memoryview) -> tuple[list[Node], dict[str, Initializer]]:
    graph = next((value for number, value in _fields(model) if number == _MODEL_GRAPH), None)
    if graph is None:
        raise OnnxFormatError("expected an ONNX model with a graph")
    nodes, initializers = [], {}
    for number, value in _fields(graph):
        if number == _GRAPH_NODE:
            nodes.append(_node(value))
        elif number == _GRAPH_INITIALIZER:
            tensor = _tensor(value)
            initializers[tensor.name] = tensor
    return nodes, initializers


def _node(buf: memoryview) -> Node:
    node = Node(op_type="", inputs=[], outputs=[])
    for number, value in _fields(buf):
        if number == _NODE_INPUT:
            node.inputs.append(_decode(value))
        elif number == _NODE_OUTPUT:
            node.outputs.append(_decode(value))
        elif number == _NODE_OP_TYPE:
            node.op_type = _decode(value)
        elif number == _NODE_ATTRIBUTE:
            name, integer = _text(value, _ATTR_NAME), _field(value, _ATTR_INT)
            if isinstance(integer, int):
                node.int_attributes[name] = integer
    return node


def _tensor(buf: memoryview) -> Initializer:
    tensor = Initializer(name="", data_type=0, dims=(), data=b"")
    dims: list[int] = []
    for number, value in _fields(buf):
        if number == _TENSOR_DIMS:
            dims.extend(_varints(value) if isinstance(value, memoryview) else [value])
        elif number == _TENSOR_DATA_TYPE:
            tensor.data_type = int(value)  # type: ignore[arg-type]
        elif number == _TENSOR_NAME:
            tensor.name = _decode(value)
        elif number in (_TENSOR_RAW, _TENSOR_FLOAT_DATA) and isinstance(value, memoryview):
            tensor.data = value  # float_data is packed little-endian float32: the same bytes
        elif number == _TENSOR_DATA_LOCATION:
            tensor.external = value == 1
    tensor.dims = tuple(dims)
    return tensor


def _fields(buf: memoryview):  # -> Iterator[tuple[int, int | memoryview]]
    """(field number, value) of each field of one message: ints for varints and fixed-width
    numbers (their offset is not needed here), memoryviews for length-delimited fields."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _BYTES:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == _FIXED64:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == _FIXED32:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire} (not an ONNX file?)")
        if pos > end:
            raise OnnxFormatError("truncated protobuf message (not an ONNX file?)")
        yield number, value


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint (not an ONNX file?)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _varints(buf: memoryview) -> list[int]:
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


def _field(buf: memoryview, wanted: int) -> int | memoryview | None:
    return next((value for number, value in _fields(buf) if number == wanted), None)


def _text(buf: memoryview, wanted: int) -> str:
    value = _field(buf, wanted)
    return _decode(value) if isinstance(value, memoryview) else ""


def _decode(value: object) -> str:
    if not isinstance(value, memoryview):
        raise OnnxFormatError("expected a string field (not an ONNX file?)")
    return bytes(value).decode("utf-8")
