"""The torch backend: FP32 on the CPU held to onnxruntime; FP16 / CUDA graphs / device outputs on a
GPU (tests marked ``cuda``, skipped here without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskrt.backends import BackendUnavailable, create_backend
from maskrt.graph import Graph
from maskrt.graph.model import MaskNet
from maskrt.tools.bench import sample_batch
from tests.helpers import relative_error, val_image_paths

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


@pytest.fixture(scope="module")
def seeded_model() -> MaskNet:
    torch.manual_seed(7)
    return MaskNet().eval()


@pytest.fixture(scope="module")
def real_images() -> np.ndarray:
    """The packaged sample faces plus, when the shared data is beside the repo, 8 val images."""
    from maskrt.image import decode_image, resize_to_input

    faces = list(sample_batch(8))
    try:
        faces += [resize_to_input(decode_image(p)) for p in val_image_paths(4)]
    except pytest.skip.Exception:
        pass
    return np.stack(faces)


@pytest.fixture(scope="module")
def ort_outputs(seeded_model, real_images):
    with create_backend("onnxruntime", model=seeded_model) as backend:
        return backend.infer(real_images)


# --------------------------------------------------------------------------- CPU
def test_cpu_fp32_agrees_with_onnxruntime_on_real_images(seeded_model, real_images,
                                                         ort_outputs) -> None:
    with create_backend("torch", model=seeded_model, device="cpu") as backend:
        assert backend.precision == "fp32" and "CPU" in backend.describe()
        logits, features = backend.infer(real_images)
    assert logits.dtype == np.float32 and features.dtype == np.float32
    assert features.flags.c_contiguous
    assert relative_error(logits, ort_outputs[0]) < 1e-4
    assert relative_error(features, ort_outputs[1]) < 1e-4
    np.testing.assert_array_equal(logits.argmax(1), ort_outputs[0].argmax(1))
    np.testing.assert_array_equal(backend.fc_weight, seeded_model.fc_weight.detach().numpy())


def test_cpu_tensor_in_gives_tensors_out(seeded_model, real_images, ort_outputs) -> None:
    with create_backend("torch", model=seeded_model, device="cpu") as backend:
        logits, features = backend.infer(torch.from_numpy(real_images[:2]))
    assert isinstance(logits, torch.Tensor) and isinstance(features, torch.Tensor)
    assert features.is_contiguous()  # layer4 runs channels_last; cam_overlay reads NCHW
    assert relative_error(logits.numpy(), ort_outputs[0][:2]) < 1e-4


def _tensor_layout(net: MaskNet) -> dict[str, tuple]:
    """name -> (dtype, device, strides, a copy of the values) of every parameter and buffer."""
    return {name: (t.dtype, t.device, t.stride(), t.detach().clone())
            for name, t in net.state_dict(keep_vars=True).items()}


def test_graph_gives_the_torch_backend_a_private_copy() -> None:
    torch.manual_seed(17)
    net = MaskNet().eval()
    copy = Graph(net).torch_module()
    assert copy is not net
    ours = dict(net.named_parameters())
    for name, param in copy.named_parameters():
        assert torch.equal(param, ours[name]) and param.data_ptr() != ours[name].data_ptr(), name


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, needs_gpu])])
def test_backend_leaves_the_callers_model_alone(device, real_images) -> None:
    """Building a torch backend (FP16, CUDA, channels_last on a GPU) never converts the MaskNet
    it was given: an ONNX Runtime backend made from that model afterwards still runs FP32 on the
    CPU and agrees with it."""
    torch.manual_seed(13)
    net = MaskNet().eval()
    before = _tensor_layout(net)
    with create_backend("torch", model=net, device=device) as backend:
        logits, _ = backend.infer(real_images)
    after = _tensor_layout(net)
    assert after.keys() == before.keys()
    for name, (dtype, where, strides, values) in before.items():
        assert after[name][:3] == (dtype, where, strides), name
        assert torch.equal(after[name][3], values), name
    with create_backend("onnxruntime", model=net) as ort_backend:
        ort_logits, _ = ort_backend.infer(real_images)
    if device == "cpu":  # FP16 may flip a near tie of this random model; FP32 may not
        np.testing.assert_array_equal(logits.argmax(1), ort_logits.argmax(1))
    assert relative_error(logits, ort_logits) < (1e-4 if device == "cpu" else 2e-2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_names_the_reason(seeded_model, device) -> None:
    with pytest.raises(BackendUnavailable) as info:
        create_backend("torch", model=seeded_model, device=device)
    message = str(info.value)
    assert "no usable CUDA GPU" in message and "torch.cuda.is_available() is False" in message
    assert "device='cpu'" in message  # what to do instead


@pytest.mark.parametrize("options, error, message", [
    ({"device": "cpu", "half": True}, BackendUnavailable, "half=True needs a CUDA device"),
    ({"device": "cpu", "cuda_graphs": True}, BackendUnavailable, "cuda_graphs=True needs a CUDA"),
    ({"device": "cpu", "cudnn_benchmark": True}, BackendUnavailable,
     "cudnn_benchmark=True needs a CUDA"),
    ({"device": "meta"}, ValueError, "expected device 'cpu' or 'cuda\\[:i\\]', got 'meta'"),
])
def test_refusals_say_why(seeded_model, options, error, message) -> None:
    with pytest.raises(error, match=message):
        create_backend("torch", model=seeded_model, **options)


def test_bad_inputs_and_use_after_close(seeded_model) -> None:
    backend = create_backend("torch", model=seeded_model, device="cpu")
    with pytest.raises(ValueError, match=r"expected uint8\[N,224,224,3\], got torch.float32"):
        backend.infer(torch.zeros((1, 224, 224, 3)))
    with pytest.raises(ValueError, match="at least one image"):
        backend.infer(torch.zeros((0, 224, 224, 3), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"got uint8\[1, 3, 224, 224\]"):
        backend.infer(np.zeros((1, 3, 224, 224), np.uint8))
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="used after close"):
        backend.infer(np.zeros((1, 224, 224, 3), np.uint8))


# --------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@needs_gpu
def test_fp16_agrees_with_fp32_labels(seeded_model, real_images, ort_outputs) -> None:
    with create_backend("torch", model=seeded_model, device="cuda") as backend:
        assert backend.precision == "fp16"
        logits, features = backend.infer(real_images)
    assert logits.dtype == np.float32 and features.shape == (len(real_images), 512, 7, 7)
    agreement = (logits.argmax(1) == ort_outputs[0].argmax(1)).mean()
    assert agreement >= 0.999
    assert relative_error(logits, ort_outputs[0]) < 2e-2


@pytest.mark.cuda
@needs_gpu
def test_device_tensors_stay_on_the_device(seeded_model, real_images) -> None:
    with create_backend("torch", model=seeded_model, device="cuda") as backend:
        host_logits, _ = backend.infer(real_images)
        logits, features = backend.infer(torch.from_numpy(real_images).cuda())
        assert logits.is_cuda and features.is_cuda
        assert logits.dtype == torch.float32 and features.dtype == torch.float16
        assert relative_error(logits.cpu().numpy(), host_logits) < 1e-2
        with pytest.raises(ValueError, match="expected a tensor on cuda:0, got cpu"):
            backend.infer(torch.from_numpy(real_images))


@pytest.mark.cuda
@needs_gpu
def test_cudnn_autotuning_is_opt_in_and_put_back_on_close(seeded_model, real_images) -> None:
    """cuDNN's flag is process-wide: a default backend leaves it alone (the torch face detector
    would otherwise autotune every new frame shape); cudnn_benchmark=True sets it while open."""
    before = torch.backends.cudnn.benchmark
    with create_backend("torch", model=seeded_model, device="cuda") as backend:
        assert torch.backends.cudnn.benchmark is before
        want, _ = backend.infer(real_images)
    torch.backends.cudnn.benchmark = False
    with create_backend("torch", model=seeded_model, device="cuda", cudnn_benchmark=True) as tuned:
        assert torch.backends.cudnn.benchmark is True
        logits, _ = tuned.infer(real_images)
    assert torch.backends.cudnn.benchmark is False
    torch.backends.cudnn.benchmark = before
    np.testing.assert_array_equal(logits.argmax(1), want.argmax(1))
    assert relative_error(logits, want) < 1e-2


@pytest.mark.cuda
@needs_gpu
def test_cuda_graphs_match_eager(seeded_model, real_images) -> None:
    device_images = torch.from_numpy(real_images).cuda()
    with create_backend("torch", model=seeded_model, device="cuda") as eager:
        want_logits, want_features = (t.clone() for t in eager.infer(device_images))
    with create_backend("torch", model=seeded_model, device="cuda", cuda_graphs=True) as graphs:
        for _ in range(2):  # capture, then replay
            logits, features = graphs.infer(device_images)
        # Same kernels, maybe other cuDNN algorithms: equal up to FP16 rounding.
        assert relative_error(logits.cpu().numpy(), want_logits.cpu().numpy()) < 1e-2
        assert relative_error(features.float().cpu().numpy(), want_features.float().cpu().numpy()) < 1e-2
        np.testing.assert_array_equal(logits.argmax(1).cpu(), want_logits.argmax(1).cpu())
        host_logits, _ = graphs.infer(real_images[:3])  # another batch size: another graph
        assert relative_error(host_logits, want_logits[:3].cpu().numpy()) < 1e-2


@pytest.mark.cuda
def test_cam_overlay_reads_device_features_in_place(cuda_device, seeded_model, real_images) -> None:
    from maskrt.cam import cam_overlay

    with create_backend("torch", model=seeded_model, device="cuda") as backend:
        images = torch.from_numpy(real_images).to(cuda_device)
        assert backend.infer(images)[1].is_contiguous()  # what cam_overlay reads
        logits, features = backend.infer(images)
        classes = logits.argmax(1)
        weight = torch.from_numpy(backend.fc_weight).cuda()
        overlays = cam_overlay(features, weight, classes, images, check_classes=False)
        assert overlays.is_cuda and overlays.shape == images.shape
        on_host = cam_overlay(features.cpu().numpy(), backend.fc_weight,
                              classes.cpu().numpy(), real_images)
    diff = np.abs(overlays.cpu().numpy().astype(np.int16) - on_host.astype(np.int16))
    assert diff.max() <= 1
