"""The ONNX graphs as TensorRT builds them: the classifier's uint8 input cast first, and for
strongly typed networks (TensorRT 11, and 10.12+) the whole graph in FP16 with the backend's
output types; float-input graphs (the YuNet face detector) in FP16 with float32 in and out.

Plain Python over the ``onnx`` package (no TensorRT), tested on the CPU: the rewritten graphs run
in ONNX Runtime and are compared with the original.
"""

from __future__ import annotations

import os
from typing import Any

from maskrt.graph.export import INPUT_NAME, OUTPUT_NAMES

#: What the backend hands out from an FP16 engine: logits float32 (decisions, probabilities),
#: features float16 (the CUDA CAM kernel reads them as they are: half the bytes).
FP16_OUTPUT_TYPES = {OUTPUT_NAMES[0]: "float32", OUTPUT_NAMES[1]: "float16"}
CLASSIFIER_FLOAT32_OUTPUTS = tuple(k for k, v in FP16_OUTPUT_TYPES.items() if v == "float32")


def tensorrt_onnx_bytes(onnx_path: str | os.PathLike[str], *, fp16: bool = False) -> bytes:
    """The graph as TensorRT can take it: the uint8 input feeds a Cast first; with ``fp16``, also
    converted to FP16 for a strongly typed network (see :func:`convert_to_fp16`).

    TensorRT accepts uint8 only as a network input that goes straight into a Cast
    (NVIDIA/TensorRT#3985: even a Transpose on uint8 breaks the build), while the exported graph
    transposes NHWC->NCHW before casting. Casting first and transposing the float tensor is the
    same arithmetic. Consumers of ``images`` that only read its shape (Shape nodes) are moved to
    the cast tensor too. Returns the serialized rewritten model (the file is not changed).
    Raises ValueError for a graph whose input is used in any other way.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    cast_name = f"{INPUT_NAME}_as_float"
    consumers = [n for n in graph.node if INPUT_NAME in n.input]
    for node in consumers:
        if node.op_type == "Cast" and _cast_to(node) == onnx.TensorProto.FLOAT:
            continue  # already legal
        if node.op_type == "Shape":
            _replace_input(node, INPUT_NAME, cast_name)
        elif node.op_type == "Transpose":
            _cast_before_transpose(graph, node, cast_name)
        else:
            raise ValueError(f"{onnx_path}: expected the uint8 input '{INPUT_NAME}' to feed only "
                             f"Transpose/Cast/Shape nodes, found {node.op_type} ({node.name})")
    if any(cast_name in n.input for n in graph.node):
        cast = onnx.helper.make_node("Cast", [INPUT_NAME], [cast_name], to=onnx.TensorProto.FLOAT,
                                     name="maskrt_tensorrt_input_cast")
        graph.node.insert(0, cast)
    if fp16:
        convert_to_fp16(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def float_graph_onnx_bytes(onnx_path: str | os.PathLike[str], *, fp16: bool = False) -> bytes:
    """A graph with float32 inputs and outputs (the YuNet face detector) as TensorRT takes it:
    as it is, or with ``fp16`` converted for a strongly typed network - float32 inputs cast to
    float16 first, every output cast back to float32 (decoding boxes takes ``exp`` of them)."""
    import onnx

    model = onnx.load(str(onnx_path))
    if fp16:
        convert_to_fp16(model, float32_outputs=tuple(o.name for o in model.graph.output))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _cast_to(node: Any) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _replace_input(node: Any, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new


def _cast_before_transpose(graph: Any, transpose: Any, cast_name: str) -> None:
    """Transpose(uint8) -> Cast(float)  becomes  Cast(float) -> Transpose, same output name."""
    import onnx

    readers = [n for n in graph.node if transpose.output[0] in n.input]
    if len(readers) != 1 or readers[0].op_type != "Cast" \
            or _cast_to(readers[0]) != onnx.TensorProto.FLOAT:
        raise ValueError(f"expected the Transpose of '{INPUT_NAME}' to feed one Cast to float, "
                         f"found {[(n.op_type, n.name) for n in readers]}")
    old_cast = readers[0]
    dead_tensor = transpose.output[0]  # the uint8 NCHW tensor, gone after the swap
    _replace_input(transpose, INPUT_NAME, cast_name)
    transpose.output[0] = old_cast.output[0]
    graph.node.remove(old_cast)
    kept = [v for v in graph.value_info if v.name != dead_tensor]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def convert_to_fp16(model: Any, float32_outputs: tuple[str, ...] = CLASSIFIER_FLOAT32_OUTPUTS) -> None:
    """In place: every float32 tensor of ``model`` becomes float16 - initializers, Constant and
    ConstantOfShape values, Cast targets, value_info - except the outputs ``float32_outputs``
    (default: the classifier's logits), which get a Cast back from float16 at the end. Inputs keep
    their type: the uint8 ``images`` input and its cast are kept (the cast now produces float16),
    and a float32 input is cast to float16 before its first use.
    """
    import onnx

    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    graph = model.graph
    inputs = [v.name for v in graph.input if v.type.tensor_type.elem_type == float32]
    # Resize's scales are float32 by the operator's definition, whatever the data's type.
    scales = {n.input[2] for n in graph.node if n.op_type == "Resize" and len(n.input) > 2}
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == float32 and tensor.name not in scales:
            graph.initializer[i].CopyFrom(_tensor_as_fp16(tensor))
    for node in graph.node:
        if node.op_type == "Cast" and _cast_to(node) == float32:
            _set_int_attribute(node, "to", float16)
        if node.op_type == "Constant" and node.output[0] in scales:
            continue
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == float32:
                attribute.t.CopyFrom(_tensor_as_fp16(attribute.t))
    for value in list(graph.value_info) + list(graph.output):
        if value.type.tensor_type.elem_type == float32 and value.name not in scales:
            value.type.tensor_type.elem_type = float16
    for output in graph.output:
        if output.name in float32_outputs:
            _cast_output_back(graph, output.name)
    for name in inputs:
        _cast_input_to_fp16(graph, name)


def _tensor_as_fp16(tensor: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float16"), tensor.name)


def _set_int_attribute(node: Any, name: str, value: int) -> None:
    for attribute in node.attribute:
        if attribute.name == name:
            attribute.i = value


def _cast_input_to_fp16(graph: Any, name: str) -> None:
    """Readers of the float32 input ``name`` read ``name_fp16``, made by a Cast inserted first."""
    import onnx

    inner = f"{name}_fp16"
    for node in graph.node:
        _replace_input(node, name, inner)
    graph.node.insert(0, onnx.helper.make_node("Cast", [name], [inner], to=onnx.TensorProto.FLOAT16,
                                               name=f"maskrt_{name}_to_float16"))


def _cast_output_back(graph: Any, name: str) -> None:
    """The float16 tensor ``name`` is renamed ``name_fp16``; a Cast to float32 makes ``name``."""
    import onnx

    inner = f"{name}_fp16"
    for node in graph.node:
        node.output[:] = [inner if o == name else o for o in node.output]
        node.input[:] = [inner if i == name else i for i in node.input]
    for value in graph.value_info:
        if value.name == name:
            value.name = inner
    graph.node.append(onnx.helper.make_node("Cast", [inner], [name], to=onnx.TensorProto.FLOAT,
                                            name=f"maskrt_{name}_to_float32"))
    for output in graph.output:
        if output.name == name:
            output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
