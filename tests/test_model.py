"""maskrt.graph.model: the network, its checkpoints and the pretrained-weights paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from maskrt.graph import model as model_module
from maskrt.graph.model import (
    MaskNet,
    MaskNetUint8,
    ModelLoadError,
    Preprocess,
    build_model,
    load_checkpoint,
    save_checkpoint,
)


def test_forward_returns_logits_and_layer4_features() -> None:
    torch.manual_seed(0)
    net = MaskNet().eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        logits, features = net(x)
        expected_logits = net.net(x)  # torchvision's own forward
    assert logits.shape == (3, 2) and features.shape == (3, 512, 7, 7)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    # The CAM identity the whole project rests on: logits = W . mean(features) + b.
    pooled = features.mean(dim=(2, 3))
    torch.testing.assert_close(pooled @ net.fc_weight.T + net.net.fc.bias, logits,
                               rtol=1e-5, atol=1e-5)


def test_preprocess_matches_torchvision_normalisation() -> None:
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    rgb = torch.from_numpy(bgr[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (rgb - mean) / std
    torch.testing.assert_close(Preprocess()(torch.from_numpy(bgr)), expected, rtol=1e-5, atol=1e-5)


def test_uint8_graph_equals_preprocess_then_model() -> None:
    torch.manual_seed(0)
    net = MaskNet().eval()
    images = torch.randint(0, 256, (2, 224, 224, 3), dtype=torch.uint8)
    with torch.no_grad():
        got = MaskNetUint8(net)(images)
        want = net(Preprocess()(images))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip(tmp_path, half: bool) -> None:
    torch.manual_seed(0)
    net = MaskNet().eval()
    path = save_checkpoint(net, tmp_path / "ckpt.pt", half=half, meta={"epochs": 3})
    loaded = load_checkpoint(path)
    tolerance = 1e-3 if half else 0.0
    for name, tensor in net.state_dict().items():
        other = loaded.state_dict()[name]
        assert other.dtype == tensor.dtype, name
        torch.testing.assert_close(other, tensor, rtol=tolerance, atol=tolerance)


def test_load_checkpoint_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a readable maskrt checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"some": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="expected a maskrt checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_pretrained_from_local_torchvision_file(tmp_path) -> None:
    torch.manual_seed(3)
    imagenet_like = resnet18()  # 1000 classes, as torchvision's ImageNet file
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(imagenet_like.state_dict(), path)
    net = build_model(pretrained=path)
    torch.testing.assert_close(net.net.layer4[1].conv2.weight, imagenet_like.layer4[1].conv2.weight)
    assert net.net.fc.weight.shape == (2, 512)


def test_pretrained_file_of_another_network_is_refused(tmp_path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError, match="expected torchvision resnet18 weights"):
        build_model(pretrained=path)


def test_pretrained_imagenet_offline_fails_clearly(tmp_path, monkeypatch) -> None:
    # An empty hub cache and an address nothing listens on: the download must fail, and say how
    # to proceed without the network. (Port 9 is "discard"; nothing answers on loopback.)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(model_module, "IMAGENET_WEIGHTS_URL",
                        "http://127.0.0.1:9/resnet18-f37072fd.pth")
    with pytest.raises(ModelLoadError, match="pass its path instead"):
        build_model(pretrained="imagenet")
