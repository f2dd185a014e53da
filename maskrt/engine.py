"""The embedding API: :class:`Engine` classifies and explains frames the host already has."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Iterator, Sequence, Union

import numpy as np

from maskrt.backends import DEFAULT_BACKEND, Backend, create_backend
from maskrt.cam.explainer import Explainer
from maskrt.devices import is_cuda, is_tensor, refuse_float_tensor, to_host
from maskrt.graph import Graph
from maskrt.image import ImageError, decode_image, resize_to_input, to_bgr8
from maskrt.labels import CLASSES, INPUT_SIZE

#: What classify/explain accept: one image, a path, or a sequence / [N, H, W, 3] batch of them;
#: images are NumPy uint8 BGR arrays or torch uint8 BGR tensors (CUDA tensors stay on the GPU).
Frames = Union[np.ndarray, Any, str, os.PathLike, Sequence[Union[np.ndarray, Any, str, os.PathLike]]]


@dataclass
class Result:
    """The decision for one frame; ``overlay``/``heatmap`` are set by :meth:`Engine.explain`.

    probabilities: float32[2], in :data:`maskrt.labels.CLASSES` order.
    overlay: uint8[H, W, 3] BGR at the frame's own size. heatmap: float32[H, W] in [0, 1].
    (Torch CUDA tensors when the frames were CUDA tensors.)
    """

    label: str
    class_index: int
    probabilities: np.ndarray
    overlay: Any = field(default=None, repr=False)
    heatmap: Any = field(default=None, repr=False)
    #: set by :meth:`Engine.faces`: the face box [x0, y0, x1, y1] in frame pixels, the detector's
    #: score, the five landmarks float32[5, 2], and the widened box that was classified
    box: list[int] | None = None
    face_score: float | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)
    crop_box: list[int] | None = None

    @property
    def p_with_mask(self) -> float:
        return float(self.probabilities[0])

    @property
    def p_without_mask(self) -> float:
        return float(self.probabilities[1])


class Engine:
    """Classify face images as with_mask / without_mask and explain each decision with a CAM.

    model: None (the weights shipped with maskrt), a checkpoint or ONNX path, a MaskNet, or a
        :class:`~maskrt.graph.Graph`.
    backend: "onnxruntime" (default, CPU), "torch" or "tensorrt" (see
        :mod:`maskrt.backends.registry`), or a ready :class:`Backend`.
    chunk_size: most images sent to the backend in one call (longer inputs run in chunks).
    alpha: overlay blend weight of the image.
    preset, detector, face_options: the face detection :meth:`faces` uses ("default" or "fast",
        or your own :class:`~maskrt.detect.base.Detector`; options as ``Pipeline``'s);
        classify/explain take what they are given.
    Extra keyword arguments are backend options (``threads``, ``device``, ``half``, ...).
    """

    def __init__(self, model: Any = None, backend: str | Backend = DEFAULT_BACKEND, *,
                 chunk_size: int = 64, alpha: float = 0.5, max_batch: int | None = None,
                 preset: str = "default", detector: Any = None,
                 face_options: dict[str, Any] | None = None, **backend_options: Any) -> None:
        if max_batch is not None:
            warnings.warn("Engine(max_batch=) is now chunk_size=", DeprecationWarning, stacklevel=2)
            chunk_size = max_batch
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = create_backend(backend, Graph.of(model), **backend_options)
        self.chunk_size = chunk_size
        self.explainer = Explainer(self.backend.cam_weights, alpha)
        self.preset = preset
        self.detector = detector
        self.face_options = dict(face_options or {})
        self._faces: Any = None  # the face stage, made on the first call of faces()

    @property
    def alpha(self) -> float:
        return self.explainer.alpha

    @property
    def input_device(self) -> Any:
        """The torch device of a backend that takes torch tensors (torch, TensorRT): batches
        moved there come back as outputs on it, and overlays are drawn there. None for host-only
        backends (ONNX Runtime)."""
        return getattr(self.backend, "device", None)

    def classify(self, frames: Frames) -> Result | list[Result]:
        """frames: one BGR uint8 image [H, W, 3] (or a path) -> Result; a list or
        [N, H, W, 3] batch of them -> list[Result]. Any size; gray/BGRA are converted."""
        images, single = self._images(frames)
        results = []
        for _, chunk in self._chunks(images):
            results.extend(self.results_from(self.infer(chunk)[0]))
        return results[0] if single else results

    def explain(self, frames: Frames, *, classes: Sequence[int] | None = None) -> Result | list[Result]:
        """Like :meth:`classify`, plus the CAM overlay and heat map at each frame's own size.

        classes: explain these class indices instead of the predicted ones (one per frame).
        """
        images, single = self._images(frames)
        if classes is not None and len(classes) != len(images):
            raise ValueError(f"classes: expected {len(images)} class indices, got {len(classes)}")
        results = []
        for start, batch in self._chunks(images):
            chunk = images[start:start + len(batch)]
            chunk_classes = None if classes is None else classes[start:start + len(batch)]
            results.extend(self.results_from(*self.infer(batch), chunk, classes=chunk_classes))
        return results[0] if single else results

    def faces(self, frames: Frames, *, explain: bool = False,
              report_threshold: float | None = None) -> list[Result] | list[list[Result]]:
        """Detect the faces of each frame and decide for each: per frame, the list of face
        Results (best detector score first) with ``box``, ``face_score``, ``landmarks`` and
        ``crop_box``; with ``explain``, every face of a frame shares one ``overlay``: the frame
        with each face's CAM (drawn into its crop box by one kernel call per batch), box and
        label. A frame without faces gives an empty list; one frame gives one list.
        report_threshold: only faces scored at least this are found (default: the preset's,
        :attr:`report_threshold`; 0 gives every candidate, as ``maskrt eval`` ranks them)."""
        from maskrt.stream.annotate import annotate_faces

        images, single = self._images(frames)
        images = [to_bgr8(to_host(image)) if is_tensor(image) else image for image in images]
        stage = self._face_stage()
        images = [stage.sharpened(image) for image in images]
        regions = [stage.reported(stage.regions(found, image.shape)[0], report_threshold)
                   for found, image in zip(stage.detect(images), images)]
        owners = [k for k, rs in enumerate(regions) for _ in rs]
        areas = [region.area for rs in regions for region in rs]
        crops = [region.crop(image) for image, rs in zip(images, regions) for region in rs]
        canvases = list(images)
        decided: list[Result] = []
        for start, batch in (self._chunks(crops) if crops else ()):
            logits, features = self.infer(batch)
            chunk = self.results_from(logits)
            decided.extend(chunk)
            if explain:
                self._draw_faces(features, chunk, owners[start:start + len(chunk)],
                                 areas[start:start + len(chunk)], canvases)
        per_frame = [[] for _ in images]  # type: list[list[Result]]
        for result, owner, region in zip(decided, owners, (r for rs in regions for r in rs)):
            result.box, result.crop_box = list(region.box), list(region.area)
            result.face_score, result.landmarks = region.score, region.landmarks
            per_frame[owner].append(result)
        if explain:
            for canvas, results in zip(canvases, per_frame):
                overlay = annotate_faces(canvas, results)
                for result in results:
                    result.overlay = overlay
        return per_frame[0] if single else per_frame

    def _draw_faces(self, features: Any, results: list[Result], owners: list[int],
                    areas: list[Any], canvases: list[np.ndarray]) -> None:
        """Draw the CAMs of one chunk of faces into their frames (``canvases``, updated)."""
        frames = sorted(set(owners))
        slot = {frame: k for k, frame in enumerate(frames)}
        drawn = self.explainer.draw_into_frames(
            features, np.array([r.class_index for r in results], np.int64),
            [slot[o] for o in owners], areas, [canvases[f] for f in frames])
        for frame, image in zip(frames, drawn):
            canvases[frame] = image

    @property
    def report_threshold(self) -> float:
        """The least face score of a face :meth:`faces` reports (the preset's
        ``report_threshold``, or the one of ``face_options``)."""
        from maskrt.detect import preset_settings
        from maskrt.detect.regions import check_report_threshold

        value = preset_settings(self.preset, **self.face_options)["report_threshold"]
        return check_report_threshold(value)

    def _face_stage(self) -> Any:
        if self._faces is None:
            from maskrt.detect import face_stage

            self._faces = face_stage(self.preset, self.detector, self.input_device,
                                     **self.face_options)
        return self._faces

    def infer(self, batch: Any) -> tuple[Any, Any]:
        """batch: uint8[N, 224, 224, 3] BGR -> (logits float32[N, 2], features [N, 512, 7, 7]);
        a torch CUDA batch gives outputs on the device (GPU backends)."""
        return self.backend.infer(batch)

    def results_from(self, logits: Any, features: Any = None, frames: Sequence[Any] | None = None,
                     *, classes: Sequence[int] | None = None, heatmaps: bool = True) -> list[Result]:
        """Turn one :meth:`infer` output into Results; with ``features`` and ``frames`` (the
        uint8[H, W, 3] BGR frames the batch was made from) also draw overlays (and heat maps).

        This is the building block for callers that batch and preprocess themselves (the
        streaming pipeline): ``results_from(*engine.infer(batch), frames)``.
        """
        # Logits are tiny ([N, 2]): bring them to the host even when the backend left the
        # features on the GPU, where the overlay kernel reads them in place.
        results = [decide(row) for row in to_host(logits)]
        if frames is None:
            return results
        if features is None or len(frames) != len(results):
            raise ValueError(f"frames: expected {len(results)} frames and the features of the "
                             f"batch, got {len(frames)} frames, features={features is not None}")
        targets = (np.asarray(classes, dtype=np.int64) if classes is not None
                   else np.array([r.class_index for r in results], dtype=np.int64))
        overlays, heat = self.explainer.draw(features, targets, list(frames), heatmaps=heatmaps)
        for i, result in enumerate(results):
            result.overlay = overlays[i]
            result.heatmap = heat[i] if heat is not None else None
        return results

    def _images(self, frames: Frames) -> tuple[list[Any], bool]:
        """The frames as images; CUDA frames come to the host when the backend runs there."""
        images, single = _as_image_list(frames)
        device = self.input_device
        if images and is_cuda(images[0]) and getattr(device, "type", None) != "cuda":
            images = [to_bgr8(to_host(image), what=f"frame {i}") for i, image in enumerate(images)]
        return images, single

    def _chunks(self, images: list[Any]) -> Iterator[tuple[int, Any]]:
        """(start index, uint8[n, 224, 224, 3] batch) for each run of up to chunk_size images."""
        for start in range(0, len(images), self.chunk_size):
            chunk = images[start:start + self.chunk_size]
            if is_cuda(chunk[0]):
                yield start, _device_batch(chunk)
            else:
                yield start, np.stack([resize_to_input(im) for im in chunk])

    def close(self) -> None:
        self.backend.close()
        if self._faces is not None:
            self._faces.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def decide(logits: np.ndarray) -> Result:
    """The decision rule: softmax, then the most probable class."""
    probabilities = softmax(np.asarray(logits, dtype=np.float64)).astype(np.float32)
    index = int(np.argmax(probabilities))
    return Result(label=CLASSES[index], class_index=index, probabilities=probabilities)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _device_batch(frames: list[Any]) -> Any:
    """CUDA uint8 [H, W, 3] frames -> uint8[n, 224, 224, 3] on their device: the host path's
    squash-resize (area averaging when shrinking, bilinear when enlarging), done by torch."""
    import torch
    import torch.nn.functional as F

    out = torch.empty((len(frames), INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.uint8,
                      device=frames[0].device)
    for i, frame in enumerate(frames):
        h, w = frame.shape[:2]
        if (h, w) == (INPUT_SIZE, INPUT_SIZE):
            out[i] = frame
            continue
        mode = "area" if h >= INPUT_SIZE and w >= INPUT_SIZE else "bilinear"
        chw = frame.permute(2, 0, 1).unsqueeze(0).float()
        resized = F.interpolate(chw, size=(INPUT_SIZE, INPUT_SIZE), mode=mode,
                                **({} if mode == "area" else {"align_corners": False}))
        out[i] = resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
    return out


def _as_image_list(frames: Frames) -> tuple[list[Any], bool]:
    """Normalise the ``frames`` argument to a list of [H, W, 3] BGR uint8 images: NumPy arrays,
    or torch CUDA tensors (kept on their device). CPU tensors become NumPy arrays."""
    if isinstance(frames, (str, os.PathLike)):
        return [decode_image(frames)], True
    if is_tensor(frames) or isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            return [_as_image(f, f"frame {i}") for i, f in enumerate(frames)], False
        return [_as_image(frames, "frame")], True
    if not isinstance(frames, Sequence) or isinstance(frames, (bytes, bytearray)):
        raise ImageError(f"frames: expected an image array or tensor, a path, or a list of them, "
                         f"got {type(frames).__name__}")
    if len(frames) == 0:
        raise ImageError("frames: expected at least one image, got an empty list")
    images = [decode_image(frame) if isinstance(frame, (str, os.PathLike))
              else _as_image(frame, f"frame {i}") for i, frame in enumerate(frames)]
    if len({is_cuda(image) for image in images}) > 1:
        raise ImageError("frames: expected all frames on the host or all on one GPU, got a mix")
    return images, False


def _as_image(frame: Any, what: str) -> Any:
    refuse_float_tensor(frame, what)
    if is_cuda(frame):
        if str(frame.dtype) != "torch.uint8" or frame.dim() != 3 or frame.shape[2] != 3:
            raise ImageError(f"{what}: expected a CUDA uint8 tensor [H, W, 3] (BGR), got "
                             f"{frame.dtype}{list(frame.shape)}")
        return frame.contiguous()
    return to_bgr8(to_host(frame) if is_tensor(frame) else frame, what=what)
