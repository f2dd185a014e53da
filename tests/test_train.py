"""maskrt train: recipe, data checks, a tiny real training run, resume, export round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from maskrt import cli
from maskrt.graph.model import (
    MaskNet,
    MaskNetUint8,
    ModelLoadError,
    load_checkpoint,
    save_checkpoint,
)
from maskrt.image import decode_image, resize_to_input
from maskrt.train.data import (
    DatasetError,
    SkippedImageWarning,
    index_image_folder,
    load_image_folder,
)
from maskrt.train.optim import apply_freeze
from maskrt.train.recipe import Recipe, lr_at
from maskrt.train.trainer import train

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "facemask"


def shared_images(split: str, cls: str, n: int, skip: int = 0) -> list[Path]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared face data not found at {SHARED_DATA}")
    return sorted((SHARED_DATA / split / cls).glob("*.jpg"))[skip:skip + n]


def make_tree(root: Path, per_class: int, split: str = "train", skip: int = 0) -> Path:
    """A small ImageFolder tree of real shared images (copies)."""
    for cls in ("with_mask", "without_mask"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for path in shared_images(split, cls, per_class, skip):
            shutil.copy(path, root / cls / path.name)
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    make_tree(root / "train", 8, "train")
    make_tree(root / "val", 4, "val")
    return root


# ------------------------------------------------------------------------------ recipe


def test_default_recipe_is_the_papers() -> None:
    r = Recipe()
    assert r.pretrained == "imagenet" and r.freeze_until != "none"
    assert (r.optimizer, r.lr, r.momentum, r.epochs, r.img_size) == ("sgd", 1e-3, 0.9, 30, 224)
    assert r.schedule == "constant" and r.label_smoothing == 0.0 and r.progressive == []


def test_cli_defaults_match_the_recipe() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["train", "DATA", "--out", "RUN"])
    r = Recipe()
    for name in ("pretrained", "epochs", "lr", "optimizer", "momentum",
                 "batch_size", "img_size", "augment", "seed", "schedule"):
        assert getattr(args, name) == getattr(r, name), name
    # "auto" resolves with the other settings: the same stages as the recipe's default
    assert args.freeze_until == "auto"
    assert Recipe(pretrained=args.pretrained, freeze_until=args.freeze_until).freeze_until == \
        r.freeze_until
    args = parser.parse_args(["train", "D", "--out", "R", "--progressive", "128:12,160:4",
                              "--no-augment", "--epochs", "20"])
    assert args.progressive == [(128, 12), (160, 4)] and args.augment == "off"


def test_progressive_sizes_and_schedules() -> None:
    r = Recipe(epochs=6, img_size=224, progressive=[(128, 3), (160, 1)], augment="strong",
               final_augment="light")
    assert [r.size_at(e) for e in range(6)] == [128, 128, 128, 160, 224, 224]
    assert [r.augment_at(e) for e in range(6)] == ["strong"] * 4 + ["light"] * 2
    with pytest.raises(ValueError, match="more than epochs"):
        Recipe(epochs=3, progressive=[(128, 4)])
    with pytest.raises(ValueError, match="optimizer"):
        Recipe(optimizer="rmsprop")
    one = Recipe(lr=0.1, schedule="onecycle", warmup_epochs=0.2)
    lrs = [lr_at(one, s, 1000, 10) for s in range(1000)]
    assert max(lrs) == pytest.approx(0.1, rel=1e-3) and np.argmax(lrs) == pytest.approx(200, abs=2)
    assert lrs[0] < 0.01 and lrs[-1] < 1e-3
    assert all(lr_at(Recipe(), s, 100, 10) == 1e-3 for s in range(100))  # paper: constant


def test_freeze_keeps_early_stages_fixed() -> None:
    torch.manual_seed(0)
    model = MaskNet()
    frozen = apply_freeze(model, "layer2")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("net.conv1", "net.bn1", "net.layer1", "net.layer2")) for n in trainable)
    assert any(n.startswith("net.layer3") for n in trainable) and "net.fc.weight" in trainable
    assert len(frozen) == 4  # conv1, bn1, layer1, layer2


# ------------------------------------------------------------------------------ data


def test_bad_trees_fail_clearly(tmp_path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        index_image_folder(tmp_path / "nope")
    (tmp_path / "with_mask").mkdir()
    with pytest.raises(DatasetError, match=r"missing \['without_mask'\]"):
        index_image_folder(tmp_path)
    (tmp_path / "without_mask").mkdir()
    shutil.copy(shared_images("val", "with_mask", 1)[0], tmp_path / "with_mask" / "a.jpg")
    with pytest.raises(DatasetError, match="without_mask: expected image files"):
        index_image_folder(tmp_path)
    shutil.copy(shared_images("val", "without_mask", 1)[0], tmp_path / "without_mask" / "b.jpg")
    assert index_image_folder(tmp_path).counts() == {"with_mask": 1, "without_mask": 1}
    (tmp_path / "masked_badly").mkdir()
    with pytest.raises(DatasetError, match="masked_badly"):
        index_image_folder(tmp_path)


def test_unreadable_images_are_skipped_and_counted(tmp_path) -> None:
    make_tree(tmp_path, 2, "val")
    (tmp_path / "with_mask" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "without_mask" / "empty.png").write_bytes(b"")
    (tmp_path / "without_mask" / "notes.txt").write_text("not an image")
    assert len(index_image_folder(tmp_path).ignored) == 1
    with pytest.warns(SkippedImageWarning) as caught:
        data = load_image_folder(tmp_path, 224)
    assert sorted(str(w.message).split(":")[0].rsplit("/", 1)[-1] for w in caught) == ["broken.jpg", "empty.png"]
    assert sorted(p.name for p, _ in data.skipped) == ["broken.jpg", "empty.png"]
    assert data.counts() == {"with_mask": 2, "without_mask": 2}
    assert data.images.shape == (4, 224, 224, 3) and data.images.dtype == np.uint8
    # Exactly the pixels scoring uses.
    np.testing.assert_array_equal(data.images[0], resize_to_input(decode_image(data.paths[0]), 224))


# ------------------------------------------------------------------------------ training


def test_tiny_run_learns_resumes_and_exports(tiny_data, tmp_path) -> None:
    recipe = Recipe(pretrained="none", freeze_until="none", optimizer="adamw", lr=1e-3, epochs=6,
                    batch_size=8, img_size=64, augment="off", seed=0)
    run = tmp_path / "run"
    result = train(recipe, tiny_data, run, progress=False, log=lambda s: None)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 6
    assert min(losses[-2:]) < 0.7 * losses[0], losses   # it learns the 16 training images
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 7))
    for name in ("best.pt", "last.pt", "curves.png", "confusion_matrix.png", "confusion_matrix.json",
                 "recipe.json"):
        assert (run / name).is_file(), name
    best_epoch = max(range(6), key=lambda i: (metrics["epochs"][i]["val_accuracy"],
                                              -metrics["epochs"][i]["val_loss"], -i)) + 1
    assert metrics["best_epoch"] == best_epoch
    cm = json.loads((run / "confusion_matrix.json").read_text())
    assert np.sum(cm["confusion_matrix"]["matrix"]) == 8

    # The checkpoint goes through `maskrt export` and ONNX Runtime and gives the same logits.
    ort = pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "tiny.onnx"
    assert cli.main(["export", "--model", str(run / "best.pt"), "--out", str(onnx_path)]) == 0
    images = np.stack([resize_to_input(decode_image(p)) for p in
                       sorted((tiny_data / "val").rglob("*.jpg"))])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits, features = session.run(None, {"images": images})
    with torch.no_grad():
        ref_logits, _ = MaskNetUint8(load_checkpoint(run / "best.pt"))(torch.from_numpy(images))
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=1e-3, atol=1e-3)
    assert features.shape == (len(images), 512, 7, 7)
    meta = torch.load(run / "best.pt", weights_only=True)["meta"]
    assert meta["epoch"] == best_epoch and meta["recipe"]["img_size"] == 64


def test_interrupted_run_resumes_where_it_stopped(tiny_data, tmp_path) -> None:
    recipe = Recipe(pretrained="none", freeze_until="none", optimizer="sgd", lr=0.01, epochs=3,
                    batch_size=8, img_size=48, augment="light", seed=1)
    run = tmp_path / "run"

    def stop_in_epoch_2(line: str) -> None:
        if line.startswith("epoch 2/3"):
            raise KeyboardInterrupt  # after epoch 2's training, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(recipe, tiny_data, run, progress=False, log=stop_in_epoch_2)
    state = torch.load(run / "last.pt", weights_only=True)["train_state"]
    assert state["epoch"] == 0 and len(state["history"]) == 1
    lines: list[str] = []
    result = train(Recipe(), tiny_data, run, resume=run / "last.pt", progress=False, log=lines.append)
    assert any(line.startswith("resumed from") for line in lines)
    assert not any(line.startswith("epoch 1/3") for line in lines)  # epoch 1 is not redone
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert json.loads((run / "recipe.json").read_text())["lr"] == 0.01  # the stored recipe wins


def test_pretrained_path_and_frozen_stages_stay_put(tiny_data, tmp_path) -> None:
    torch.manual_seed(3)
    donor = MaskNet().net
    torch.nn.init.normal_(donor.conv1.weight)
    torch.save(donor.state_dict(), tmp_path / "resnet18.pth")
    recipe = Recipe(pretrained=str(tmp_path / "resnet18.pth"), freeze_until="layer3", epochs=1,
                    batch_size=8, img_size=48, lr=0.05)
    train(recipe, tiny_data, tmp_path / "run", progress=False, log=lambda s: None)
    model = load_checkpoint(tmp_path / "run" / "last.pt")
    assert torch.equal(model.net.conv1.weight, donor.conv1.weight)
    assert torch.equal(model.net.layer3[1].bn2.running_mean, donor.layer3[1].bn2.running_mean)
    assert not torch.equal(model.net.layer4[0].conv1.weight, donor.layer4[0].conv1.weight)


def test_init_fine_tunes_a_maskrt_checkpoint_head_included(tiny_data, tmp_path, capsys) -> None:
    torch.manual_seed(4)
    donor = MaskNet()
    torch.nn.init.normal_(donor.net.fc.weight, std=3.0)  # a head random init would not give
    save_checkpoint(donor, tmp_path / "donor.pt", half=True)  # stored like the shipped weights
    args = cli.build_parser().parse_args(["train", "D", "--out", "R", "--init", "w.pt", "--keep-epochs"])
    assert args.init == "w.pt" and args.keep_epochs and Recipe().init is None
    # Everything up to layer4 frozen, a negligible learning rate: the weights stay the donor's.
    recipe = Recipe(init=str(tmp_path / "donor.pt"), pretrained="imagenet", freeze_until="layer4",
                    epochs=1, batch_size=8, img_size=48, lr=1e-9)
    lines: list[str] = []
    train(recipe, tiny_data, tmp_path / "run", progress=False, keep_epochs=True, log=lines.append)
    assert any("from maskrt checkpoint" in line for line in lines)  # not ImageNet: no download
    model, start = load_checkpoint(tmp_path / "run" / "epoch_01.pt"), load_checkpoint(tmp_path / "donor.pt")
    torch.testing.assert_close(model.net.fc.weight, start.net.fc.weight, rtol=0, atol=1e-5)
    assert torch.equal(model.net.layer4[1].conv2.weight, start.net.layer4[1].conv2.weight)
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["init"] == str(tmp_path / "donor.pt")
    code = cli.main(["train", str(tiny_data), "--out", str(tmp_path / "run2"), "--no-progress",
                     "--init", str(tmp_path / "missing.pt")])
    assert code == 2 and "missing.pt" in capsys.readouterr().err


def test_imagenet_offline_fails_clearly(tiny_data, tmp_path, monkeypatch, capsys) -> None:
    import maskrt.graph.model

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(maskrt.graph.model, "IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/resnet18-f37072fd.pth")
    with pytest.raises(ModelLoadError, match="--pretrained imagenet"):
        train(Recipe(epochs=1, img_size=48), tiny_data, tmp_path / "run", progress=False, log=lambda s: None)
    code = cli.main(["train", str(tiny_data), "--out", str(tmp_path / "run2"), "--no-progress",
                     "--pretrained", "imagenet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "maskrt train: error:" in err and "--pretrained none" in err  # the flag, not Python


def test_cli_rejects_a_tree_without_val(tmp_path, capsys) -> None:
    make_tree(tmp_path / "train", 1)
    code = cli.main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--pretrained", "none"])
    assert code == 2 and "expected a val/ folder" in capsys.readouterr().err


def test_training_traps_random_init_is_not_frozen_and_every_image_trains() -> None:
    from maskrt.train.recipe import Recipe

    assert Recipe().freeze_until == "layer2"  # the paper: ImageNet weights, early stages frozen
    assert Recipe(pretrained="none").freeze_until == "none"  # frozen random weights learn nothing
    assert Recipe(init="some.pt").freeze_until == "none"
    assert Recipe(pretrained="none", freeze_until="layer1").freeze_until == "layer1"  # explicit wins


def test_the_last_partial_batch_trains(tmp_path) -> None:
    import numpy as np

    from maskrt.train.augment import BatchStream
    from maskrt.train.data import LoadedImages

    def images(n):
        return LoadedImages(tmp_path, np.random.default_rng(0).integers(0, 255, (n, 40, 40, 3),
                                                                        np.uint8),
                            np.arange(n) % 2, [tmp_path / f"{i}.jpg" for i in range(n)])

    stream = BatchStream(images(48), 32, 32, "off", seed=0)
    sizes = [len(x) for x, _ in stream]
    assert sizes == [32, 16]  # all 48 images, not 32
    assert [len(x) for x, _ in BatchStream(images(33), 32, 32, "off", seed=0)] == [32]  # not a 1


def test_degrade_shrinks_compresses_and_keeps_the_face() -> None:
    from maskrt.train.augment import augment_image, augment_params, degrade

    face = resize_to_input(decode_image(shared_images("val", "with_mask", 1)[0]), 224)
    rng = np.random.default_rng(3)
    outs = [degrade(face, rng) for _ in range(8)]
    assert all(out.shape == face.shape and out.dtype == np.uint8 for out in outs)
    # detail is lost (a smaller view), the picture is kept (same face, same colours)
    detail = lambda im: float(np.abs(np.diff(im.astype(np.float32), axis=1)).mean())  # noqa: E731
    assert all(detail(out) < detail(face) for out in outs)
    assert all(np.abs(out.astype(np.float32) - face).mean() < 25 for out in outs)
    assert len({out.tobytes() for out in outs}) == len(outs)
    same = [degrade(face, np.random.default_rng(5)) for _ in range(2)]
    assert np.array_equal(*same)  # seeded: reproducible
    assert augment_params("degrade")["degrade_p"] == 0.5
    assert augment_params("light")["degrade_p"] == 0.0
    light = augment_image(face, 224, augment_params("light"), np.random.default_rng(1))
    assert light.shape == face.shape


def test_degrade_tiny_reaches_the_faces_of_crowds_that_degrade_does_not() -> None:
    from maskrt.train.augment import DEGRADE_SCALE, TINY_DEGRADE_SCALE, augment_params, degrade

    face = resize_to_input(decode_image(shared_images("val", "without_mask", 1)[0]), 224)
    detail = lambda im: float(np.abs(np.diff(im.astype(np.float32), axis=1)).mean())  # noqa: E731
    # the least detail each range leaves: its smallest side (one seed: the same blur and JPEG draws)
    smallest = lambda scale: detail(degrade(face, np.random.default_rng(0), (scale[0], scale[0])))  # noqa: E731
    assert smallest(TINY_DEGRADE_SCALE) < smallest(DEGRADE_SCALE) < detail(face)
    tiny = augment_params("degrade-tiny")
    assert tiny["degrade_scale"] == TINY_DEGRADE_SCALE and TINY_DEGRADE_SCALE[0] * 224 < 10
    assert {k: v for k, v in tiny.items() if k != "degrade_scale"} == augment_params("degrade")
