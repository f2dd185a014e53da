"""What the TensorRT builder needs to know about one graph, so that every graph maskrt runs on a
GPU - the classifier and the YuNet face detector - goes through the same builder, engine folder,
sidecar rules and timing cache.

A :class:`GraphSpec` names the graph (the engine file's prefix), its input and the shapes the
engine takes (a batch :class:`Profile`, and a :class:`Spatial` range for graphs whose image size
is dynamic), the outputs an FP16 engine hands out in float16, and how the ONNX file is rewritten
for TensorRT. Plain Python, tested without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from maskrt.backends.tensorrt.onnx_rewrite import FP16_OUTPUT_TYPES, tensorrt_onnx_bytes
from maskrt.graph.export import INPUT_NAME, MAX_EXPORT_BATCH
from maskrt.labels import INPUT_SIZE

DEFAULT_PROFILE = (1, 32, 256)
Shape = tuple[int, ...]
HW = tuple[int, int]


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile over the batch axis: ``min <= opt <= max`` images."""

    min: int = DEFAULT_PROFILE[0]
    opt: int = DEFAULT_PROFILE[1]
    max: int = DEFAULT_PROFILE[2]

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}-batch: expected an integer, got {value!r}")
        if self.min < 1:
            raise ValueError(f"min-batch: expected >= 1, got {self.min}")
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile: expected min <= opt <= max, got min={self.min}, "
                             f"opt={self.opt}, max={self.max}")
        if self.max > MAX_EXPORT_BATCH:
            raise ValueError(f"max-batch: expected <= {MAX_EXPORT_BATCH} (the largest batch the "
                             f"exported ONNX graph declares), got {self.max}")

    def shapes(self) -> tuple[Shape, Shape, Shape]:
        """(min, opt, max) shapes of the classifier's ``images`` input: uint8[N, 224, 224, 3]."""
        return classifier_spec(self).shapes()

    def as_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def from_dict(cls, data: Any) -> "Profile":
        if not isinstance(data, dict) or set(data) != {"min", "opt", "max"}:
            raise ValueError(f"profile: expected {{'min', 'opt', 'max'}}, got {data!r}")
        return cls(data["min"], data["opt"], data["max"])

    def tag(self) -> str:
        return f"b{self.min}-{self.opt}-{self.max}"


@dataclass(frozen=True)
class Spatial:
    """The (height, width) range of an input whose image size is dynamic: ``min <= opt <= max``
    in each dimension."""

    min: HW
    opt: HW
    max: HW

    def __post_init__(self) -> None:
        sizes = (self.min, self.opt, self.max)
        if not all(len(s) == 2 and all(isinstance(v, int) and v >= 1 for v in s) for s in sizes):
            raise ValueError(f"spatial profile: expected (height, width) pairs of positive "
                             f"integers, got {sizes}")
        if not all(a <= b <= c for a, b, c in zip(*sizes)):
            raise ValueError(f"spatial profile: expected min <= opt <= max in height and width, "
                             f"got {sizes}")

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Any) -> "Spatial | None":
        """None for None (a fixed-size graph); ValueError for anything but min/opt/max pairs."""
        if data is None:
            return None
        if not isinstance(data, dict) or set(data) != {"min", "opt", "max"}:
            raise ValueError(f"spatial: expected {{'min', 'opt', 'max'}} or null, got {data!r}")
        pairs = [tuple(data[k]) if isinstance(data[k], list) else data[k] for k in ("min", "opt", "max")]
        return cls(*pairs)  # type: ignore[arg-type]

    def tag(self) -> str:
        return f"hw{self.opt[0]}x{self.opt[1]}-{self.max[0]}x{self.max[1]}"


@dataclass(frozen=True)
class GraphSpec:
    """One graph as the builder sees it.

    name: the engine file's prefix and the sidecar's ``graph`` ("maskrt": the classifier).
    item_shape: the input's shape without the batch axis; -1 marks height and width (in that
    order), which ``spatial`` then bounds. half_outputs: the outputs an FP16 engine hands out in
    float16 (the others stay float32). rewrite: ``rewrite(onnx_path, fp16=...) -> bytes``, the
    graph as TensorRT parses it (``fp16``: converted for a strongly typed network).
    """

    name: str
    input_name: str
    item_shape: Shape
    profile: Profile
    rewrite: Callable[..., bytes] = field(compare=False)
    spatial: Spatial | None = None
    half_outputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.spatial is None) != (-1 not in self.item_shape):
            raise ValueError(f"{self.name}: a spatial profile goes with an input of dynamic "
                             f"height and width, got {self.item_shape} and {self.spatial}")

    def input_shape(self, rows: int, hw: HW | None = None) -> Shape:
        """The input's shape for ``rows`` images (of ``hw`` for a dynamic-size graph)."""
        sizes = iter(hw or ())
        return (rows,) + tuple(next(sizes) if d == -1 else d for d in self.item_shape)

    def shapes(self) -> tuple[Shape, Shape, Shape]:
        """(min, opt, max) input shapes of the optimisation profile."""
        p, s = self.profile, self.spatial
        if s is None:
            return self.input_shape(p.min), self.input_shape(p.opt), self.input_shape(p.max)
        return (self.input_shape(p.min, s.min), self.input_shape(p.opt, s.opt),
                self.input_shape(p.max, s.max))

    def tag(self) -> str:
        """What the engine file name says about the shapes: ``b1-32-256`` (+ ``-hw...``)."""
        return self.profile.tag() + (f"-{self.spatial.tag()}" if self.spatial else "")


def classifier_spec(profile: Profile | None = None) -> GraphSpec:
    """The classifier: uint8[N, 224, 224, 3] in; logits float32, features float16 out."""
    half = tuple(name for name, dtype in FP16_OUTPUT_TYPES.items() if dtype == "float16")
    return GraphSpec("maskrt", INPUT_NAME, (INPUT_SIZE, INPUT_SIZE, 3), profile or Profile(),
                     tensorrt_onnx_bytes, half_outputs=half)


def as_spec(spec: GraphSpec | Profile) -> GraphSpec:
    """A spec as it is; a :class:`Profile` alone means the classifier with that batch profile."""
    return spec if isinstance(spec, GraphSpec) else classifier_spec(spec)
