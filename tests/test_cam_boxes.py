"""cam_overlay_boxes: the CAM of every face drawn into its box of the full-size frames, against the
NumPy/OpenCV reference and against cam_overlay on each box's crop (ARCHITECTURE.md, "CAM and
overlay: the exact arithmetic", with H x W = the box's size; the highest face index wins where
boxes overlap)."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrt.cam import cam_overlay, cam_overlay_boxes, cam_reference, cam_reference_boxes

_C = pytest.importorskip("maskrt._C", reason="maskrt._C is not built (pip install -e . --no-build-isolation)")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "facemask"
HEAT_ATOL = 1e-5  # ARCHITECTURE.md: kernels' heat maps within 1e-5 of the reference
# A JET level step changes a channel by at most 4, so straddling a level boundary moves a blended
# byte by at most 4 * (1 - alpha) + 1 (the rounding).
JUMP_MAX = 5


# ---- inputs ----------------------------------------------------------------------------------------

def random_faces(rng: np.random.Generator, r: int, dtype=np.float32, classes: int = 3):
    """Features ~ N(0.2, 1) (so ~40% negative products and ReLU matters), small random weights."""
    features = rng.normal(0.2, 1.0, size=(r, 512, 7, 7)).astype(dtype)
    weights = (rng.normal(size=(classes, 512)) * 0.05).astype(np.float32)
    labels = rng.integers(0, classes, size=r).astype(np.int64)
    return features, weights, labels


def random_frames(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def special_boxes(h: int, w: int) -> list[list[int]]:
    """Edge cases in an h x w frame (h, w >= 64): 1x1, thin rows and columns, boxes on every
    border, the whole frame, nested and partly overlapping boxes, 7x7 and 8x8."""
    return [
        [0, 0, w, h],                      # the whole frame, drawn first: everything later covers it
        [5, 7, 6, 8],                      # 1x1
        [0, 0, w, 1],                      # one row along the top border, full width
        [w - 1, 0, w, h],                  # one column along the right border, full height
        [0, h - 3, 40, h],                 # thin, bottom-left corner
        [w - 50, h - 60, w, h],            # bottom-right corner
        [20, 20, 60, 55],                  # overlapped by the next two
        [40, 30, w - 10, 60],
        [25, 25, 35, 35],                  # nested inside [20, 20, 60, 55]
        [10, 40, 17, 47],                  # 7x7: the resize is the identity
        [11, 41, 19, 49],                  # 8x8
        [3, 10, 5, 10 + min(h - 10, 57)],  # 2 wide, tall
    ]


def random_boxes(rng: np.random.Generator, count: int, h: int, w: int) -> list[list[int]]:
    """Boxes of log-uniform sizes from 1 pixel to the whole frame, anywhere inside it."""
    boxes = []
    for _ in range(count):
        bh = int(np.clip(np.exp(rng.uniform(0, np.log(h + 1))), 1, h))
        bw = int(np.clip(np.exp(rng.uniform(0, np.log(w + 1))), 1, w))
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    return boxes


def make_case(seed: int, n: int, h: int, w: int, boxes_per_frame: dict[int, int], dtype=np.float32,
              special: bool = True):
    """Frames [n, h, w, 3] and faces: special_boxes in frame 0 (when asked), then
    boxes_per_frame[i] random boxes in frame i, interleaved across frames so that one frame's
    faces are not contiguous in the face index."""
    rng = np.random.default_rng(seed)
    frames = random_frames(rng, n, h, w)
    boxes, frame_index = [], []
    if special:
        boxes += special_boxes(h, w)
        frame_index += [0] * len(boxes)
    per_frame = {i: random_boxes(rng, k, h, w) for i, k in boxes_per_frame.items()}
    for k in range(max(boxes_per_frame.values(), default=0)):
        for i, frame_boxes in per_frame.items():
            if k < len(frame_boxes):
                boxes.append(frame_boxes[k])
                frame_index.append(i)
    features, weights, labels = random_faces(rng, len(boxes), dtype)
    return (features, weights, labels, np.array(frame_index, np.int64).reshape(-1),
            np.array(boxes, np.int64).reshape(-1, 4), frames)


# ---- expectations --------------------------------------------------------------------------------

def coverage(frame_index: np.ndarray, boxes: np.ndarray, shape) -> np.ndarray:
    covered = np.zeros(shape[:3], bool)
    for n, (x0, y0, x1, y1) in zip(frame_index, boxes):
        covered[n, y0:y1, x0:x1] = True
    return covered


def overlay_crops(features, weights, classes, frame_index, boxes, frames, alpha=0.5, rgb=False) -> np.ndarray:
    """What cam_overlay_boxes must return bit for bit: cam_overlay on each box's crop of the input
    frame (same kernel arithmetic), pasted in increasing face index."""
    out = frames.copy()
    for r, (n, (x0, y0, x1, y1)) in enumerate(zip(frame_index, boxes)):
        crop = np.ascontiguousarray(frames[n, y0:y1, x0:x1])
        out[n, y0:y1, x0:x1] = cam_overlay(features[r:r + 1], weights, classes[r:r + 1], crop[None],
                                           alpha=alpha, rgb=rgb)[0]
    return out


def reference_heat(features, weights, classes, frame_index, boxes, shape) -> np.ndarray:
    """The reference heat of the face that owns each pixel (NaN outside every box)."""
    heat = np.full(shape[:3], np.nan, np.float32)
    for r, (n, (x0, y0, x1, y1)) in enumerate(zip(frame_index, boxes)):
        blank = np.full((1, y1 - y0, x1 - x0, 3), 128, np.uint8)
        _, box_heat = cam_reference(features[r:r + 1], weights, classes[r:r + 1], blank, heatmaps=True)
        heat[n, y0:y1, x0:x1] = box_heat[0]
    return heat


def assert_matches_reference(got, features, weights, classes, frame_index, boxes, frames, alpha=0.5,
                             rgb=False) -> None:
    """Outside every box: the input, bit for bit. Inside: within 1 level of the reference, except
    where the reference heat sits within HEAT_ATOL of a JET level boundary (float32 summation
    order can put the kernel on the other side): there within JUMP_MAX, and rare."""
    want = cam_reference_boxes(features, weights, classes, frame_index, boxes, frames, alpha=alpha, rgb=rgb)
    assert got.dtype == np.uint8 and got.shape == frames.shape
    covered = coverage(frame_index, boxes, frames.shape)
    np.testing.assert_array_equal(got[~covered], frames[~covered])
    np.testing.assert_array_equal(want[~covered], frames[~covered])
    diff = np.abs(got.astype(np.int16) - want).max(axis=-1, initial=0)
    scaled = reference_heat(features, weights, classes, frame_index, boxes, frames.shape).astype(np.float64) * 255
    near_jump = np.abs(scaled - np.round(scaled)) <= 255 * HEAT_ATOL
    far = (diff > 1) & covered
    assert not (far & ~near_jump).any(), \
        f"{int((far & ~near_jump).sum())} box pixels differ from the reference by more than 1 away from a level boundary"
    assert diff[far].max(initial=0) <= JUMP_MAX
    assert far.sum() <= max(3, covered.sum() // 1000), f"{int(far.sum())} pixels change JET level"


def run_case(case, alpha=0.5, rgb=False):
    features, weights, labels, frame_index, boxes, frames = case
    got = cam_overlay_boxes(features, weights, labels, frame_index, boxes, frames, alpha=alpha, rgb=rgb)
    np.testing.assert_array_equal(got, overlay_crops(*case, alpha=alpha, rgb=rgb))
    assert_matches_reference(got, *case, alpha=alpha, rgb=rgb)
    return got


# ---- the C++ kernel ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("alpha, rgb", [(0.5, False), (0.3, True), (0.0, False)], ids=["bgr", "rgb-0.3", "alpha-0"])
def test_special_and_random_boxes_match_reference(dtype, alpha, rgb) -> None:
    case = make_case(seed=1, n=3, h=96, w=128, boxes_per_frame={0: 6, 2: 9}, dtype=dtype)
    got = run_case(case, alpha=alpha, rgb=rgb)
    assert not np.array_equal(got, case[-1]), "nothing was drawn"


def test_frames_without_faces_are_copied_exactly() -> None:
    case = make_case(seed=2, n=5, h=72, w=90, boxes_per_frame={1: 4, 3: 7}, special=False)
    got = run_case(case)
    frames = case[-1]
    for n in (0, 2, 4):
        np.testing.assert_array_equal(got[n], frames[n])
    for n in (1, 3):
        assert not np.array_equal(got[n], frames[n])


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (7, 7), (3, 500), (500, 3), (224, 224), (37, 53)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_whole_frame_box_equals_cam_overlay(size) -> None:
    h, w = size
    rng = np.random.default_rng(h * 1000 + w)
    features, weights, labels = random_faces(rng, 3, np.float16 if h == 37 else np.float32)
    frames = random_frames(rng, 3, h, w)
    boxes = np.tile(np.array([[0, 0, w, h]], np.int64), (3, 1))
    for alpha, rgb in ((0.5, False), (0.2, True)):
        got = cam_overlay_boxes(features, weights, labels, np.arange(3), boxes, frames, alpha=alpha, rgb=rgb)
        np.testing.assert_array_equal(got, cam_overlay(features, weights, labels, frames, alpha=alpha, rgb=rgb))


def test_many_random_boxes_in_a_larger_frame() -> None:
    case = make_case(seed=3, n=2, h=240, w=320, boxes_per_frame={0: 40, 1: 40})
    run_case(case)


def test_overlap_highest_index_wins() -> None:
    """Two identical boxes: the second face's CAM (a different class, so a different map) shows."""
    rng = np.random.default_rng(4)
    features, weights, _ = random_faces(rng, 2)
    features[1] = features[0]
    frames = random_frames(rng, 1, 40, 50)
    boxes = np.array([[5, 5, 30, 35], [5, 5, 30, 35]])
    got = cam_overlay_boxes(features, weights, [0, 1], [0, 0], boxes, frames)
    second = cam_overlay_boxes(features[1:], weights, [1], [0], boxes[1:], frames)
    first = cam_overlay_boxes(features[:1], weights, [0], [0], boxes[:1], frames)
    np.testing.assert_array_equal(got, second)
    assert not np.array_equal(got, first)


def test_no_faces_is_a_copy() -> None:
    rng = np.random.default_rng(5)
    frames = random_frames(rng, 2, 30, 40)
    features, weights, _ = random_faces(rng, 0)
    for fn in (cam_overlay_boxes, cam_reference_boxes):
        got = fn(features, weights, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.int64), frames)
        np.testing.assert_array_equal(got, frames)
        assert got is not frames and not np.shares_memory(got, frames)
    empty = cam_overlay_boxes(features, weights, [], [], [], np.zeros((0, 30, 40, 3), np.uint8))
    assert empty.shape == (0, 30, 40, 3)


def test_int32_indices_lists_and_torch_cpu_tensors() -> None:
    torch = pytest.importorskip("torch")
    features, weights, labels, frame_index, boxes, frames = make_case(6, 2, 48, 64, {0: 3, 1: 3}, special=False)
    want = cam_overlay_boxes(features, weights, labels, frame_index, boxes, frames)
    int32 = cam_overlay_boxes(features, weights, labels.astype(np.int32), frame_index.astype(np.int32),
                              boxes.astype(np.int32), frames)
    np.testing.assert_array_equal(int32, want)
    listed = cam_overlay_boxes(features, weights, labels.tolist(), frame_index.tolist(), boxes.tolist(), frames)
    np.testing.assert_array_equal(listed, want)
    tensors = [torch.from_numpy(x) for x in (features, weights, labels, frame_index, boxes, frames)]
    got = cam_overlay_boxes(*tensors)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(cam_reference_boxes(*tensors), cam_reference_boxes(
        features, weights, labels, frame_index, boxes, frames))


def test_binding_accepts_int32_and_rechecks_ranges() -> None:
    """A direct call to the extension cannot make the kernel read or write out of bounds."""
    features, weights, labels, frame_index, boxes, frames = make_case(7, 2, 20, 30, {0: 2, 1: 2}, special=False)
    out = np.empty_like(frames)
    _C.cam_overlay_boxes_cpu(features, weights, labels.astype(np.int32), frame_index, boxes.astype(np.int32),
                             frames, out)
    np.testing.assert_array_equal(out, cam_overlay_boxes(features, weights, labels, frame_index, boxes, frames))
    bad_box = boxes.copy()
    bad_box[1] = [25, 0, 31, 5]
    with pytest.raises(ValueError, match=r"boxes: expected .*<= 30 .*got \[25, 0, 31, 5\] at position 1"):
        _C.cam_overlay_boxes_cpu(features, weights, labels, frame_index, bad_box, frames, out)
    with pytest.raises(ValueError, match=r"frame_index: expected indices in \[0, 2\), got 2 at position 3"):
        _C.cam_overlay_boxes_cpu(features, weights, labels, np.array([0, 1, 1, 2]), boxes, frames, out)
    with pytest.raises(ValueError, match=r"classes: expected indices in \[0, 3\), got -1 at position 0"):
        _C.cam_overlay_boxes_cpu(features, weights, np.array([-1, 0, 0, 0]), frame_index, boxes, frames, out)
    with pytest.raises(ValueError, match=r"overlays: expected shape \[2, 20, 30, 3\], got \[1, 20, 30, 3\]"):
        _C.cam_overlay_boxes_cpu(features, weights, labels, frame_index, boxes, frames, out[:1])
    with pytest.raises(ValueError, match=r"boxes: expected shape \[4, 4\], got \[3, 4\]"):
        _C.cam_overlay_boxes_cpu(features, weights, labels, frame_index, boxes[:3], frames, out)


# ---- real faces pasted into frames -----------------------------------------------------------------

def _real_faces(per_class: int) -> list[np.ndarray]:
    from maskrt.image import decode_image

    if not DATA.is_dir():
        pytest.skip(f"shared face data not found at {DATA}")
    paths = []
    for name in ("with_mask", "without_mask"):
        paths += sorted((DATA / "val" / name).glob("*.jpg"))[:per_class]
    return [decode_image(p) for p in paths]


def _layer4(faces: list[np.ndarray]):
    """(features float32 [R, 512, 7, 7], fc weights, predicted classes) of the face crops."""
    torch = pytest.importorskip("torch")
    from maskrt.graph.model import Preprocess, UntrainedModelWarning, load_model
    from maskrt.image import resize_to_input

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = load_model()
    batch = torch.from_numpy(np.stack([resize_to_input(f) for f in faces]))
    with torch.no_grad():
        logits, features = model(Preprocess()(batch))
    return features.contiguous().numpy(), model.fc_weight.detach().numpy(), logits.argmax(1).numpy()


def _paste(frames: np.ndarray, face: np.ndarray, n: int, box: list[int]) -> None:
    x0, y0, x1, y1 = box
    frames[n, y0:y1, x0:x1] = cv2.resize(face, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)


def test_real_faces_pasted_into_frames() -> None:
    """Real face photos pasted at several sizes (and touching the borders, one overlapping
    another) into two 360x480 frames of a third, face-free frame's noise; the features are the
    network's own layer4 activations of the crops (post-ReLU: many exact zeros)."""
    faces = _real_faces(per_class=3)
    features, weights, classes = _layer4(faces)
    rng = np.random.default_rng(8)
    frames = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in random_frames(rng, 3, 360, 480)])
    boxes = [[0, 0, 120, 140], [300, 200, 480, 360], [100, 100, 212, 212],
             [150, 150, 190, 196], [460, 0, 480, 31], [0, 300, 64, 360]]
    frame_index = [0, 0, 0, 0, 2, 2]
    for face, n, box in zip(faces, frame_index, boxes):
        _paste(frames, face, n, box)
    case = (features, weights, classes, np.array(frame_index), np.array(boxes), frames)
    for dtype in (np.float32, np.float16):
        run_case((features.astype(dtype),) + case[1:])
    run_case(case, alpha=0.4, rgb=True)
    np.testing.assert_array_equal(cam_overlay_boxes(*case)[1], frames[1])


# ---- invalid inputs --------------------------------------------------------------------------------

def _valid(**changes):
    """Valid inputs: R=2 faces in N=2 frames of 8x10 pixels, C=3; some replaced."""
    rng = np.random.default_rng(9)
    features, weights, labels = random_faces(rng, 2)
    args = {"features": features, "weights": weights, "classes": labels, "frame_index": np.array([0, 1]),
            "boxes": np.array([[0, 0, 10, 8], [2, 3, 5, 4]]), "frames": random_frames(rng, 2, 8, 10)}
    args.update({k: v(args) if callable(v) else v for k, v in changes.items()})
    return args


def _box(box):
    return np.array([[0, 0, 10, 8], box])


INVALID = {
    "features dtype": (dict(features=lambda a: a["features"].astype(np.float64)),
                       r"features: expected dtype float32 or float16, got float64"),
    "features shape": (dict(features=np.ones((2, 512, 8, 8), np.float32)),
                       r"features: expected shape \[R, 512, 7, 7\], got \[2, 512, 8, 8\]"),
    "weights shape": (dict(weights=np.ones((3, 256), np.float32)),
                      r"weights: expected shape \[C, 512\] with C >= 1, got \[3, 256\]"),
    "classes dtype": (dict(classes=np.ones(2, np.float32)), r"classes: expected dtype int64 or int32, got float32"),
    "frame_index dtype": (dict(frame_index=np.ones(2, np.uint8)),
                          r"frame_index: expected dtype int64 or int32, got uint8"),
    "frame_index rank": (dict(frame_index=np.zeros((2, 1), np.int64)),
                         r"frame_index: expected 1 dimensions \[R\], got 2"),
    "boxes dtype": (dict(boxes=lambda a: a["boxes"].astype(np.float32)),
                    r"boxes: expected dtype int64 or int32, got float32"),
    "boxes rank": (dict(boxes=np.array([0, 0, 4, 4, 1, 1, 2, 2])), r"boxes: expected 2 dimensions \[R, 4\], got 1"),
    "boxes columns": (dict(boxes=np.array([[0, 0, 4], [1, 1, 2]])),
                      r"boxes: expected shape \[R, 4\] \(x0, y0, x1, y1\), got \[2, 3\]"),
    "boxes non-contiguous": (dict(boxes=lambda a: np.asfortranarray(a["boxes"])),
                             r"boxes: expected a C-contiguous array \[R, 4\], got strides"),
    "face count": (dict(frame_index=np.array([0, 1, 1])),
                   r"face count mismatch: .*classes \[2\], frame_index \[3\], boxes \[2, 4\]"),
    "frames dtype": (dict(frames=lambda a: a["frames"].astype(np.float32)),
                     r"frames: expected dtype uint8, got float32"),
    "frames channels": (dict(frames=np.ones((2, 8, 10, 4), np.uint8)),
                        r"frames: expected 3 channels \(shape \[N, H, W, 3\]\), got 4"),
    "frames non-contiguous": (dict(frames=lambda a: a["frames"][:, :, ::-1]),
                              r"frames: expected a C-contiguous array \[N, H, W, 3\], got strides"),
    "class too large": (dict(classes=np.array([0, 3])),
                        r"classes: expected indices in \[0, 3\), got values in \[0, 3\]"),
    "frame too large": (dict(frame_index=np.array([0, 2])),
                        r"frame_index: expected indices in \[0, 2\), got values in \[0, 2\]"),
    "frame negative": (dict(frame_index=np.array([-1, 0])),
                       r"frame_index: expected indices in \[0, 2\), got values in \[-1, 0\]"),
    "box past right": (dict(boxes=_box([5, 0, 11, 8])),
                       r"boxes: expected \[x0, y0, x1, y1\] with 0 <= x0 < x1 <= 10 and 0 <= y0 < y1 <= 8 "
                       r"\(frames are 10 wide, 8 high\), got \[5, 0, 11, 8\] at row 1"),
    "box past bottom": (dict(boxes=_box([0, 5, 4, 9])), r"got \[0, 5, 4, 9\] at row 1"),
    "box negative": (dict(boxes=_box([-1, 0, 4, 4])), r"got \[-1, 0, 4, 4\] at row 1"),
    "box empty": (dict(boxes=_box([3, 2, 3, 6])), r"got \[3, 2, 3, 6\] at row 1"),
    "box inverted": (dict(boxes=_box([2, 6, 5, 1])), r"got \[2, 6, 5, 1\] at row 1"),
    "boxes several bad": (dict(boxes=np.array([[0, 0, 0, 0], [0, 0, 99, 99]])), r"at row 0 \(and 1 more\)"),
}


@pytest.mark.parametrize("fn", [cam_overlay_boxes, cam_reference_boxes])
@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_invalid_inputs_raise_value_error(fn, case) -> None:
    changes, message = INVALID[case]
    with pytest.raises(ValueError, match=message):
        fn(**_valid(**changes))


@pytest.mark.parametrize("fn", [cam_overlay_boxes, cam_reference_boxes])
def test_invalid_alpha_and_types(fn) -> None:
    with pytest.raises(ValueError, match=r"alpha: expected a number in \[0, 1\], got 1.5"):
        fn(**_valid(), alpha=1.5)
    with pytest.raises(TypeError, match=r"boxes: expected an int array, tensor or list of ints, got str"):
        fn(**_valid(boxes="0 0 4 4"))


# ---- CUDA: bit-identical to the C++ kernel ---------------------------------------------------------

def _to_device(device, *arrays):
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


CUDA_CASES = {
    "special+random fp32": dict(seed=10, n=3, h=96, w=128, boxes_per_frame={0: 6, 2: 9}),
    "special+random fp16": dict(seed=11, n=3, h=96, w=128, boxes_per_frame={0: 6, 2: 9}, dtype=np.float16),
    "1080p 8 faces": dict(seed=12, n=2, h=1080, w=1920, boxes_per_frame={0: 8, 1: 8}),
    "many small frames": dict(seed=13, n=16, h=64, w=80, boxes_per_frame={i: i % 4 for i in range(16)}),
}


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(CUDA_CASES), ids=list(CUDA_CASES))
def test_cuda_kernel_matches_cpu_kernel(cuda_device, name) -> None:
    import torch

    case = make_case(**CUDA_CASES[name])
    for alpha, rgb in ((0.5, False), (0.2, True)):
        want = cam_overlay_boxes(*case, alpha=alpha, rgb=rgb)
        got = cam_overlay_boxes(*_to_device(cuda_device, *case), alpha=alpha, rgb=rgb)
        assert got.is_cuda and got.dtype == torch.uint8 and got.shape == case[-1].shape
        torch.cuda.synchronize()
        np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.cuda
def test_cuda_whole_frames_int32_and_no_faces(cuda_device) -> None:
    import torch

    rng = np.random.default_rng(14)
    features, weights, labels = random_faces(rng, 3)
    frames = random_frames(rng, 3, 480, 640)
    boxes = np.tile(np.array([[0, 0, 640, 480]], np.int32), (3, 1))
    index = np.arange(3, dtype=np.int32)
    got = cam_overlay_boxes(*_to_device(cuda_device, features, weights, labels.astype(np.int32), index, boxes, frames))
    np.testing.assert_array_equal(got.cpu().numpy(), cam_overlay(features, weights, labels, frames))
    empty = [np.zeros((0, 512, 7, 7), np.float32), weights, np.zeros(0, np.int64), np.zeros(0, np.int64),
             np.zeros((0, 4), np.int64), frames]
    copied = cam_overlay_boxes(*_to_device(cuda_device, *empty))
    torch.cuda.synchronize()
    np.testing.assert_array_equal(copied.cpu().numpy(), frames)


@pytest.mark.cuda
def test_cuda_more_overlapping_boxes_than_the_shared_list(cuda_device) -> None:
    """300 boxes over one point of one frame: the early faces' blocks find more later occluders
    than the kernel's shared list holds (128) and scan them in global memory instead."""
    rng = np.random.default_rng(15)
    h, w, r = 200, 260, 300
    size = rng.integers(1, 120, size=(r, 2))
    x0 = rng.integers(np.maximum(0, 100 - size[:, 0] + 1), np.minimum(100, w - size[:, 0]) + 1)
    y0 = rng.integers(np.maximum(0, 90 - size[:, 1] + 1), np.minimum(90, h - size[:, 1]) + 1)
    boxes = np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], axis=1).astype(np.int64)
    features, weights, labels = random_faces(rng, r, np.float16)
    case = (features, weights, labels, np.zeros(r, np.int64), boxes, random_frames(rng, 1, h, w))
    want = cam_overlay_boxes(*case)
    np.testing.assert_array_equal(want, overlay_crops(*case))
    got = cam_overlay_boxes(*_to_device(cuda_device, *case))
    np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.cuda
def test_cuda_runs_on_the_current_stream(cuda_device) -> None:
    import torch

    case = make_case(seed=16, n=4, h=480, w=640, boxes_per_frame={0: 5, 3: 5}, dtype=np.float16)
    want = cam_overlay_boxes(*case)
    inputs = _to_device(cuda_device, *case)
    stream = torch.cuda.Stream(cuda_device)
    stream.wait_stream(torch.cuda.current_stream(cuda_device))  # inputs were copied on the default stream
    with torch.cuda.stream(stream):
        got = cam_overlay_boxes(*inputs)
    stream.synchronize()
    np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.cuda
def test_cuda_invalid_inputs(cuda_device) -> None:
    import torch

    args = _valid()
    names = list(args)
    on_device = dict(zip(names, _to_device(cuda_device, *args.values())))
    with pytest.raises(ValueError, match=r"on one device, got .*boxes on cpu"):
        cam_overlay_boxes(**{**on_device, "boxes": torch.from_numpy(args["boxes"])})
    with pytest.raises(ValueError, match=r"boxes: expected dtype int64 or int32, got float32"):
        cam_overlay_boxes(**{**on_device, "boxes": on_device["boxes"].float()})
    bad = {**on_device, "boxes": torch.tensor([[0, 0, 10, 8], [5, 0, 11, 8]], device=cuda_device)}
    with pytest.raises(ValueError, match=r"boxes: expected .*got \[5, 0, 11, 8\] at row 1"):
        cam_overlay_boxes(**bad)
    with pytest.raises(ValueError, match=r"frame_index: expected indices in \[0, 2\), got values in \[0, 2\]"):
        cam_overlay_boxes(**{**on_device, "frame_index": torch.tensor([0, 2], device=cuda_device)})
    with pytest.raises(ValueError, match=r"classes: expected indices in \[0, 3\), got values in \[0, 3\]"):
        cam_overlay_boxes(**{**on_device, "classes": torch.tensor([0, 3], device=cuda_device)})
    # Unchecked (fully asynchronous): the bad face is skipped, the good one drawn as on the CPU.
    got = cam_overlay_boxes(**bad, check_classes=False)
    want = cam_overlay_boxes(**{**args, "frame_index": args["frame_index"][:1], "boxes": args["boxes"][:1],
                                "features": args["features"][:1], "classes": args["classes"][:1]})
    torch.cuda.synchronize()
    np.testing.assert_array_equal(got.cpu().numpy(), want)
