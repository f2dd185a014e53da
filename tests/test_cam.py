"""The fused CAM overlay kernels (maskrt._C) against the NumPy/OpenCV reference, and the reference
against pytorch-grad-cam (ARCHITECTURE.md, "CAM and overlay: the exact arithmetic")."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrt.cam import cam_overlay, cam_reference

_C = pytest.importorskip("maskrt._C", reason="maskrt._C is not built (pip install -e . --no-build-isolation)")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "facemask"
HEAT_ATOL = 1e-5  # ARCHITECTURE.md: kernels' heat maps within 1e-5 of the reference
RAMP = np.arange(256, dtype=np.uint8).reshape(-1, 1)
JET_BGR = cv2.applyColorMap(RAMP, cv2.COLORMAP_JET).reshape(256, 3)


def random_inputs(rng: np.random.Generator, n: int, h: int, w: int, dtype=np.float32, classes: int = 2):
    """Features ~ N(0.2, 1) (so ~40% negative products and ReLU matters), small random weights."""
    features = rng.normal(0.2, 1.0, size=(n, 512, 7, 7)).astype(dtype)
    weights = (rng.normal(size=(classes, 512)) * 0.05).astype(np.float32)
    labels = rng.integers(0, classes, size=n).astype(np.int64)
    images = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    return features, weights, labels, images


def blend(images: np.ndarray, levels: np.ndarray, alpha: float, rgb: bool) -> np.ndarray:
    lut = JET_BGR[:, ::-1] if rgb else JET_BGR
    out = alpha * images.astype(np.float32) + (1 - alpha) * lut[levels].astype(np.float32)
    return np.floor(out + 0.5).astype(np.uint8)


def assert_matches_reference(images, overlays, heat, ref_overlays, ref_heat, alpha, rgb) -> None:
    """Heat within HEAT_ATOL; overlay pixels within 1 level, with one principled exception.

    The JET index floor(255 * heat) jumps at multiples of 1/255, so two heat values that agree to
    HEAT_ATOL may straddle a jump. The check is therefore: (a) the kernel's overlay is exactly its
    own heat map coloured and blended (to 1 level); (b) wherever the kernel's level differs from
    the reference's, 255 * reference heat lies within 255 * HEAT_ATOL of the integer between them;
    (c) everywhere else the overlay is within 1 level of the reference.
    """
    np.testing.assert_allclose(heat, ref_heat, rtol=0, atol=HEAT_ATOL)
    levels = np.floor(heat.astype(np.float32) * np.float32(255)).astype(np.int64).clip(0, 255)
    ref_scaled = ref_heat.astype(np.float64) * 255
    ref_levels = np.floor(ref_heat * np.float32(255)).astype(np.int64).clip(0, 255)
    own = np.abs(overlays.astype(np.int16) - blend(images, levels, alpha, rgb)).max(initial=0)
    assert own <= 1, f"overlay differs from its own heat map's colours by {own} levels"
    differs = levels != ref_levels
    near_jump = np.abs(ref_scaled - np.maximum(levels, ref_levels)) <= 255 * HEAT_ATOL
    assert np.all(near_jump[differs] & (np.abs(levels - ref_levels)[differs] == 1)), \
        "kernel and reference pick JET levels that differ away from a level boundary"
    assert differs.mean() < 1e-3 if differs.size else True, f"{differs.mean():.2%} of pixels change JET level"
    far = np.abs(overlays.astype(np.int16) - ref_overlays)[~differs]
    assert far.max(initial=0) <= 1, f"overlay pixels differ from the reference by up to {far.max()} levels"


SIZES = [(224, 224), (480, 640), (37, 53), (1, 1), (7, 7), (3, 500), (500, 3), (2, 9)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_cpu_kernel_matches_reference(size, dtype) -> None:
    h, w = size
    rng = np.random.default_rng(h * 1000 + w)
    features, weights, labels, images = random_inputs(rng, 3, h, w, dtype, classes=3)
    for alpha, rgb in ((0.5, False), (0.0, True), (1.0, False), (0.3, True)):
        overlays, heat = cam_overlay(features, weights, labels, images, alpha=alpha, rgb=rgb, heatmaps=True)
        ref_overlays, ref_heat = cam_reference(features, weights, labels, images, alpha=alpha, rgb=rgb, heatmaps=True)
        assert overlays.dtype == np.uint8 and overlays.shape == (3, h, w, 3)
        assert heat.dtype == np.float32 and heat.shape == (3, h, w)
        assert_matches_reference(images, overlays, heat, ref_overlays, ref_heat, alpha, rgb)
    # Without heat maps the overlays are the same bytes.
    np.testing.assert_array_equal(cam_overlay(features, weights, labels, images, alpha=0.3, rgb=True), overlays)


def test_heat_spans_zero_to_one() -> None:
    features, weights, labels, images = random_inputs(np.random.default_rng(1), 4, 97, 131)
    _, heat = cam_overlay(features, weights, labels, images, heatmaps=True)
    assert np.allclose(heat.min(axis=(1, 2)), 0, atol=1e-6)
    assert np.allclose(heat.max(axis=(1, 2)), 1, atol=1e-6)


def test_alpha_extremes_are_exact() -> None:
    features, weights, labels, images = random_inputs(np.random.default_rng(2), 2, 40, 60)
    np.testing.assert_array_equal(cam_overlay(features, weights, labels, images, alpha=1.0), images)
    overlays, heat = cam_overlay(features, weights, labels, images, alpha=0.0, heatmaps=True)
    levels = np.floor(heat * np.float32(255)).astype(np.int64)
    np.testing.assert_array_equal(overlays, JET_BGR[levels])


def test_int32_classes_and_torch_cpu_tensors() -> None:
    torch = pytest.importorskip("torch")
    features, weights, labels, images = random_inputs(np.random.default_rng(3), 3, 30, 40)
    want = cam_overlay(features, weights, labels, images)
    np.testing.assert_array_equal(cam_overlay(features, weights, labels.astype(np.int32), images), want)
    np.testing.assert_array_equal(cam_overlay(features, weights, labels.tolist(), images), want)
    got = cam_overlay(torch.from_numpy(features), torch.from_numpy(weights).requires_grad_(),
                      torch.from_numpy(labels), torch.from_numpy(images))
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fn", [cam_overlay, cam_reference])
def test_constant_cam_gives_zero_heat_not_nan(fn) -> None:
    rng = np.random.default_rng(4)
    features = np.abs(rng.normal(size=(2, 512, 7, 7))).astype(np.float32)
    weights = -np.abs(rng.normal(size=(2, 512))).astype(np.float32)  # every CAM value < 0 -> ReLU -> 0
    images = rng.integers(0, 256, size=(2, 50, 70, 3), dtype=np.uint8)
    overlays, heat = fn(features, weights, np.array([0, 1]), images, heatmaps=True)
    assert np.isfinite(heat).all() and not heat.any()
    np.testing.assert_array_equal(overlays, blend(images, np.zeros(heat.shape, np.int64), 0.5, False))


def test_jet_table_matches_opencv() -> None:
    table = np.asarray(_C.jet_colormap())
    assert table.shape == (256, 3) and table.dtype == np.uint8
    np.testing.assert_array_equal(table, JET_BGR)
    rgb = cv2.cvtColor(cv2.applyColorMap(RAMP, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB).reshape(256, 3)
    np.testing.assert_array_equal(table[:, ::-1], rgb)


@pytest.mark.parametrize("rgb", [False, True], ids=["bgr", "rgb"])
def test_overlay_uses_all_256_jet_levels(rgb) -> None:
    """A linear CAM over a 1x4096 frame walks through the levels; alpha=0 shows the raw colours.
    Level 255 needs heat == 1, which the +1e-7 of step 5 rules out in practice (as in
    pytorch-grad-cam); test_jet_table_matches_opencv covers that entry of the table."""
    features = np.zeros((1, 512, 7, 7), np.float32)
    features[0, 0] = np.arange(49, dtype=np.float32).reshape(7, 7)
    weights = np.zeros((1, 512), np.float32)
    weights[0, 0] = 1
    images = np.zeros((1, 1, 4096, 3), np.uint8)
    overlays, heat = cam_overlay(features, weights, np.zeros(1, np.int64), images, alpha=0.0, rgb=rgb, heatmaps=True)
    levels = np.floor(heat[0, 0] * np.float32(255)).astype(np.int64)
    assert set(levels.tolist()) == set(range(255))
    want = cv2.applyColorMap(levels.astype(np.uint8).reshape(1, -1), cv2.COLORMAP_JET)
    if rgb:
        want = cv2.cvtColor(want, cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(overlays[0], want)


@pytest.mark.parametrize("fn", [cam_overlay, cam_reference])
def test_empty_batch(fn) -> None:
    features, weights, _, _ = random_inputs(np.random.default_rng(5), 0, 1, 1)
    overlays, heat = fn(features, weights, np.zeros(0, np.int64), np.zeros((0, 20, 30, 3), np.uint8), heatmaps=True)
    assert overlays.shape == (0, 20, 30, 3) and heat.shape == (0, 20, 30)


def _case(**changes):
    """Valid inputs for N=2, 8x8 images, C=2, with some replaced."""
    rng = np.random.default_rng(6)
    features, weights, labels, images = random_inputs(rng, 2, 8, 8)
    args = {"features": features, "weights": weights, "classes": labels, "images": images}
    args.update({k: v(args) if callable(v) else v for k, v in changes.items()})
    return args


INVALID = {
    "features dtype": (dict(features=lambda a: a["features"].astype(np.float64)),
                       r"features: expected dtype float32 or float16, got float64"),
    "features rank": (dict(features=lambda a: a["features"][0]), r"features: expected 4 dimensions .*got 3"),
    "features shape": (dict(features=np.zeros((2, 512, 8, 8), np.float32)),
                       r"features: expected shape \[N, 512, 7, 7\], got \[2, 512, 8, 8\]"),
    "features non-contiguous": (dict(features=lambda a: a["features"][:, :, ::-1]),
                                r"features: expected a C-contiguous array .*got strides"),
    "weights dtype": (dict(weights=lambda a: a["weights"].astype(np.float16)),
                      r"weights: expected dtype float32, got float16"),
    "weights shape": (dict(weights=np.zeros((2, 256), np.float32)),
                      r"weights: expected shape \[C, 512\] with C >= 1, got \[2, 256\]"),
    "classes dtype": (dict(classes=np.zeros(2, np.float32)), r"classes: expected dtype int64 or int32, got float32"),
    "classes rank": (dict(classes=np.zeros((2, 1), np.int64)), r"classes: expected 1 dimensions \[N\], got 2"),
    "classes too many": (dict(classes=np.zeros(3, np.int64)),
                         r"batch mismatch: .*features \[2, 512, 7, 7\], classes \[3\], images \[2, 8, 8, 3\]"),
    "images batch": (dict(images=np.zeros((3, 8, 8, 3), np.uint8)),
                     r"batch mismatch: .*classes \[2\], images \[3, 8, 8, 3\]"),
    "class too large": (dict(classes=np.array([0, 2])), r"classes: expected indices in \[0, 2\), got values in \[0, 2\]"),
    "class negative": (dict(classes=np.array([-1, 1])), r"classes: expected indices in \[0, 2\), got values in \[-1, 1\]"),
    "images dtype": (dict(images=lambda a: a["images"].astype(np.float32)), r"images: expected dtype uint8, got float32"),
    "images rank": (dict(images=lambda a: a["images"][0]), r"images: expected 4 dimensions \[N, H, W, 3\], got 3"),
    "images channels": (dict(images=np.zeros((2, 8, 8, 4), np.uint8)),
                        r"images: expected 3 channels \(shape \[N, H, W, 3\]\), got 4"),
    "images non-contiguous": (dict(images=lambda a: a["images"][:, :, ::-1]),
                              r"images: expected a C-contiguous array \[N, H, W, 3\], got strides"),
}


@pytest.mark.parametrize("fn", [cam_overlay, cam_reference])
@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_invalid_inputs_raise_value_error(fn, case) -> None:
    changes, message = INVALID[case]
    args = _case(**changes)
    with pytest.raises(ValueError, match=message):
        fn(args["features"], args["weights"], args["classes"], args["images"])


@pytest.mark.parametrize("fn", [cam_overlay, cam_reference])
@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_invalid_alpha(fn, alpha) -> None:
    args = _case()
    with pytest.raises(ValueError, match=r"alpha: expected a number in \[0, 1\], got"):
        fn(args["features"], args["weights"], args["classes"], args["images"], alpha=alpha)


def test_binding_rechecks_inputs() -> None:
    """A direct call to the extension cannot make the kernel read out of bounds."""
    a = _case()
    out = np.empty_like(a["images"])
    with pytest.raises(ValueError, match="classes: expected indices in"):
        _C.cam_overlay_cpu(a["features"], a["weights"], np.array([0, 5]), a["images"], out)
    with pytest.raises(ValueError, match="overlays: expected shape"):
        _C.cam_overlay_cpu(a["features"], a["weights"], a["classes"], a["images"], out[:1])


# ---- the reference against pytorch-grad-cam on real faces ----------------------------------------

def _real_faces(per_class: int) -> np.ndarray:
    from maskrt.image import decode_image, resize_to_input

    if not DATA.is_dir():
        pytest.skip(f"shared face data not found at {DATA}")
    paths = []
    for name in ("with_mask", "without_mask"):
        paths += sorted((DATA / "val" / name).glob("*.jpg"))[:per_class]
    return np.stack([resize_to_input(decode_image(p)) for p in paths])


@pytest.mark.slow
def test_reference_matches_pytorch_grad_cam() -> None:
    """GradCAM on layer4[-1] of a GAP+FC network is this CAM up to a positive factor (the 1/49 of
    the gradient average), which both min-max normalisations remove. Tolerance 1e-4: the two sum
    the 512 products in different orders (float32 error ~1e-6 of the CAM's magnitude), and the
    normalisation divides by the CAM's range, which can be ~10x smaller than its magnitude
    (observed: ~1e-6 on these faces, so the margin is wide without hiding a real mismatch, whose
    errors would be of the order of the 1.5% step 5 accounts for)."""
    torch = pytest.importorskip("torch")
    grad_cam = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from maskrt.graph.model import Preprocess, UntrainedModelWarning, load_model

    images = _real_faces(per_class=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = load_model()
    x = Preprocess()(torch.from_numpy(images))
    with torch.no_grad():
        logits, features = model(x)
    weights = model.fc_weight.detach().numpy()
    explainer = grad_cam.GradCAM(model=model.net, target_layers=[model.net.layer4[-1]])
    for classes in (logits.argmax(1).numpy(), np.array([0, 1] * (len(images) // 2))):
        want = explainer(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
        _, heat = cam_reference(features.contiguous().numpy(), weights, classes, images, heatmaps=True)
        assert heat.shape == want.shape == (len(images), 224, 224)
        np.testing.assert_allclose(heat, want, rtol=0, atol=1e-4)
        _, kernel_heat = cam_overlay(features.contiguous().numpy(), weights, classes, images, heatmaps=True)
        np.testing.assert_allclose(kernel_heat, want, rtol=0, atol=1e-4)


# ---- CUDA ----------------------------------------------------------------------------------------

CUDA_SIZES = [(224, 224), (480, 640), (1080, 1920), (37, 53), (1, 1), (3, 500), (7, 7)]


def _to_device(device, *arrays):
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("size", CUDA_SIZES, ids=[f"{h}x{w}" for h, w in CUDA_SIZES])
def test_cuda_kernel_matches_cpu_kernel(cuda_device, size, dtype) -> None:
    """Both kernels share every arithmetic step (cam_overlay.h, no FMA, same summation order), so
    the results are expected to be bit-identical, not merely close."""
    import torch

    h, w = size
    rng = np.random.default_rng(h + w)
    features, weights, labels, images = random_inputs(rng, 3, h, w, dtype, classes=3)
    for alpha, rgb in ((0.5, False), (0.2, True)):
        want_overlays, want_heat = cam_overlay(features, weights, labels, images, alpha=alpha, rgb=rgb, heatmaps=True)
        overlays, heat = cam_overlay(*_to_device(cuda_device, features, weights, labels, images),
                                     alpha=alpha, rgb=rgb, heatmaps=True)
        assert overlays.is_cuda and overlays.dtype == torch.uint8 and heat.dtype == torch.float32
        torch.cuda.synchronize()
        np.testing.assert_array_equal(heat.cpu().numpy(), want_heat)
        np.testing.assert_array_equal(overlays.cpu().numpy(), want_overlays)


@pytest.mark.cuda
def test_cuda_scalar_path_and_int32_classes(cuda_device) -> None:
    """Misaligned image buffers take the one-pixel-per-thread path; int32 classes are read as such."""
    import torch

    features, weights, labels, images = random_inputs(np.random.default_rng(7), 2, 64, 96)
    want = cam_overlay(features, weights, labels, images)
    f, wt, c = _to_device(cuda_device, features, weights, labels.astype(np.int32))
    buffer = torch.empty(images.size + 1, dtype=torch.uint8, device=cuda_device)
    misaligned = buffer[1:].view(images.shape)
    misaligned.copy_(torch.from_numpy(images))
    got = cam_overlay(f, wt, c, misaligned)
    np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_cuda_misaligned_features_and_workspace_checks(cuda_device, dtype) -> None:
    """Features one element off a 16-byte boundary are staged element by element (same bits); a
    missing or short workspace is refused before anything is launched."""
    import torch

    from maskrt import _C

    features, weights, labels, images = random_inputs(np.random.default_rng(11), 4, 120, 200, dtype)
    want = cam_overlay(features, weights, labels, images)
    f, wt, c, im = _to_device(cuda_device, features, weights, labels, images)
    buffer = torch.empty(f.numel() + 1, dtype=f.dtype, device=cuda_device)
    shifted = buffer[1:].view(f.shape)
    shifted.copy_(f)
    np.testing.assert_array_equal(cam_overlay(shifted, wt, c, im).cpu().numpy(), want)

    n, h, w = images.shape[:3]
    need = _C.cam_overlay_workspace_bytes(n, h, w)
    out = torch.empty_like(im)
    workspace = torch.empty(need, dtype=torch.uint8, device=cuda_device)
    args = {"features": f.data_ptr(), "features_fp16": dtype == np.float16, "weights": wt.data_ptr(),
            "num_classes": wt.shape[0], "classes": c.data_ptr(), "classes_int32": False, "images": im.data_ptr(),
            "overlays": out.data_ptr(), "heatmaps": 0, "n": n, "height": h, "width": w, "alpha": 0.5,
            "rgb": False, "workspace": workspace.data_ptr(), "workspace_bytes": need,
            "stream": torch.cuda.current_stream(cuda_device).cuda_stream}
    with pytest.raises(ValueError, match=rf"workspace: expected .* at least {need} bytes"):
        _C.cam_overlay_cuda(**{**args, "workspace_bytes": need - 1})
    with pytest.raises(ValueError, match=r"workspace: expected a 16-byte aligned"):
        _C.cam_overlay_cuda(**{**args, "workspace": workspace.data_ptr() + 1})
    for _ in range(2):  # one workspace, reused by consecutive calls on the stream
        _C.cam_overlay_cuda(**args)
        torch.cuda.synchronize()
        np.testing.assert_array_equal(out.cpu().numpy(), want)


@pytest.mark.cuda
def test_cuda_runs_on_the_current_stream(cuda_device) -> None:
    import torch

    features, weights, labels, images = random_inputs(np.random.default_rng(8), 8, 480, 640, np.float16)
    want = cam_overlay(features, weights, labels, images)
    inputs = _to_device(cuda_device, features, weights, labels, images)
    stream = torch.cuda.Stream(cuda_device)
    stream.wait_stream(torch.cuda.current_stream(cuda_device))  # inputs were copied on the default stream
    with torch.cuda.stream(stream):
        got = cam_overlay(*inputs)
    stream.synchronize()
    np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.cuda
def test_cuda_invalid_inputs(cuda_device) -> None:
    import torch

    features, weights, labels, images = random_inputs(np.random.default_rng(9), 2, 16, 16)
    f, wt, c, im = _to_device(cuda_device, features, weights, labels, images)
    with pytest.raises(ValueError, match=r"on one device, got .*images on cpu"):
        cam_overlay(f, wt, c, torch.from_numpy(images))
    with pytest.raises(ValueError, match=r"features: expected dtype float32 or float16, got float64"):
        cam_overlay(f.double(), wt, c, im)
    with pytest.raises(ValueError, match=r"images: expected a C-contiguous array"):
        cam_overlay(f, wt, c, im.transpose(1, 2))
    bad = torch.tensor([0, 2], device=cuda_device)
    with pytest.raises(ValueError, match=r"classes: expected indices in \[0, 2\), got values in \[0, 2\]"):
        cam_overlay(f, wt, bad, im)
    # Unchecked (fully asynchronous): the bad item gets a NaN heat map and the untouched image.
    overlays, heat = cam_overlay(f, wt, bad, im, heatmaps=True, check_classes=False)
    torch.cuda.synchronize()
    assert torch.isnan(heat[1]).all() and torch.equal(overlays[1], im[1])
    assert torch.isfinite(heat[0]).all()
