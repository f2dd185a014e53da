"""Fine-tuning the face detector (maskrt.train.detector): the box mapping, the crops, SimOTA's
assignment, a loss that falls when a batch is learnt, weights written back into the same ONNX
graph (ONNX Runtime gives the torch module's outputs), and the command that regenerates it."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2torch")

from maskrt.detect import DETECTOR_MODELS, MODELS_DIR, PRESETS, detector_model_path  # noqa: E402
from maskrt.detect.regions import fitted_box  # noqa: E402
from maskrt.train.detector.__main__ import main as train_main  # noqa: E402
from maskrt.train.detector.assign import Priors, assign  # noqa: E402
from maskrt.train.detector.data import (CROP, SOURCE_SHRINK, SceneFaces, degrade_source,  # noqa: E402
                                        unfit_boxes)
from maskrt.train.detector.loss import detector_loss  # noqa: E402
from maskrt.train.detector.model import load_module, run, to_blob, write_onnx  # noqa: E402
from maskrt.train.scenes import SceneImage  # noqa: E402
from maskrt.train.voc_metric import GroundTruth  # noqa: E402

YUNET = MODELS_DIR / DETECTOR_MODELS["yunet"]
BOX_FIT = PRESETS["default"]["box_fit"][:4]  # the large faces' fit, which training uses
SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes" / "train"


def test_unfit_boxes_is_the_inverse_of_box_fit():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 300, (20, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(8, 90, (20, 2))], axis=1).astype(np.float32)
    detector_boxes = unfit_boxes(boxes, BOX_FIT)
    back = np.stack([fitted_box(b, BOX_FIT) for b in detector_boxes])
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    assert not np.allclose(detector_boxes, boxes, atol=0.5)


def synthetic_scene(tmp_path: Path, n: int = 0) -> SceneImage:
    """A textured photo with two light ellipses ("faces") at known boxes."""
    rng = np.random.default_rng(n)
    image = rng.integers(0, 120, (360, 480, 3), dtype=np.uint8)
    boxes = [[60.0, 80.0, 110.0, 140.0], [300.0, 150.0, 340.0, 200.0]]
    for x0, y0, x1, y1 in boxes:
        cv2.ellipse(image, (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int((x1 - x0) / 2), int((y1 - y0) / 2)),
                    0, 0, 360, (170, 190, 220), -1)
    path = tmp_path / f"scene_{n}.png"
    cv2.imwrite(str(path), image)
    return SceneImage(path, path.with_suffix(".xml"), GroundTruth.make(boxes, ["with_mask", "without_mask"]))


def test_crops_keep_faces_inside_and_flip_them_with_the_image(tmp_path):
    data = SceneFaces([synthetic_scene(tmp_path)], BOX_FIT, seed=3, degrade=False)
    for _ in range(30):
        sample = data.sample(0)
        assert sample.image.shape == (CROP, CROP, 3) and sample.image.dtype == np.uint8
        for x0, y0, x1, y1 in sample.faces:
            assert x1 > x0 and y1 > y0
            inside = (min(x1, CROP) - max(x0, 0)) * (min(y1, CROP) - max(y0, 0))
            assert inside >= 0.5 * (x1 - x0) * (y1 - y0)
            centre = sample.image[int(np.clip((y0 + y1) / 2, 0, CROP - 1)), int(np.clip((x0 + x1) / 2, 0, CROP - 1))]
            if 0 <= (x0 + x1) / 2 < CROP and 0 <= (y0 + y1) / 2 < CROP:
                assert centre[2] > 150, "a face box must lie on the light ellipse, flipped or not"


def test_the_source_degradation_shrinks_the_photo_and_its_boxes_alike(tmp_path):
    scene = synthetic_scene(tmp_path)
    image = cv2.imread(str(scene.image))
    boxes = scene.truth.boxes.astype(np.float32)
    rng, shrunk = random.Random(5), set()
    for _ in range(20):
        small, moved = degrade_source(image, boxes, rng)
        factor = small.shape[1] / image.shape[1]
        assert SOURCE_SHRINK[0] - 0.01 <= factor <= SOURCE_SHRINK[1] + 0.01
        np.testing.assert_allclose(moved, boxes * factor, rtol=0.02)
        for x0, y0, x1, y1 in moved:  # the shrunk box still frames its light ellipse
            assert small[int((y0 + y1) / 2), int((x0 + x1) / 2)][2] > 150
        shrunk.add(round(factor, 2))
    assert len(shrunk) > 10, "the factor is drawn per call"
    data = SceneFaces([scene], BOX_FIT, seed=3, degrade=False, source_degrade=1.0)
    assert all(len(data.sample(0).faces) <= 2 for _ in range(10))


def test_simota_gives_every_face_its_own_cells_and_learns_nothing_in_ignore_regions():
    priors = Priors.of(CROP, CROP)
    faces = torch.tensor([[40.0, 40.0, 80.0, 90.0], [200.0, 200.0, 216.0, 218.0]])
    ignore = torch.tensor([[250.0, 20.0, 300.0, 70.0]])
    centres = priors.points + priors.strides[:, None] / 2
    boxes = torch.cat([centres - 12, centres + 12], dim=1)  # every cell predicts a 24 px box
    scores = torch.full((len(boxes),), 0.3)
    a = assign(priors, boxes, scores, faces, ignore)
    assert set(a.face[a.positive].tolist()) == {0, 1}
    for f, (x0, y0, x1, y1) in enumerate(faces.tolist()):
        points = priors.points[a.positive & (a.face == f)]
        assert len(points) >= 1
        assert bool(((points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)).all())
    in_ignore = (priors.points[:, 0] >= 250) & (priors.points[:, 0] < 300) & (priors.points[:, 1] >= 20) & (priors.points[:, 1] < 70)
    assert bool(a.ignore[in_ignore].all()) and not bool(a.ignore[~in_ignore].any())
    none = assign(priors, boxes, scores, torch.zeros((0, 4)), torch.zeros((0, 4)))
    assert not bool(none.positive.any())


def test_the_loss_falls_when_one_batch_is_learnt(tmp_path):
    torch.manual_seed(0)
    data = SceneFaces([synthetic_scene(tmp_path, n) for n in range(2)], BOX_FIT, seed=1, degrade=False)
    samples = [data.sample(i % 2) for i in range(4)]
    blob = to_blob([s.image for s in samples])
    student, teacher = load_module(YUNET).train(), load_module(YUNET).eval()
    optimiser = torch.optim.AdamW(student.parameters(), lr=2e-3)
    priors = Priors.of(CROP, CROP)
    with torch.no_grad():
        targets = run(teacher, blob)
    losses = []
    for _ in range(12):
        terms = detector_loss(run(student, blob), targets, priors, samples)
        optimiser.zero_grad()
        terms.total().backward()
        optimiser.step()
        losses.append(float(terms.total().detach()))
        assert terms.positives > 0
    assert losses[-1] < 0.7 * losses[0], losses


def test_weights_written_back_give_the_torch_modules_outputs_in_onnx_runtime(tmp_path):
    import onnxruntime as ort

    module = load_module(YUNET).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.01 * (p.abs().mean() + 1e-3))
    out = tmp_path / "changed.onnx"
    changed = write_onnx(module, YUNET, out, "test")
    assert changed == sum(1 for _ in module.parameters())
    blob = np.random.default_rng(1).uniform(0, 255, (2, 3, 96, 128)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: blob})))
    with torch.no_grad():
        expected = module(torch.from_numpy(blob))
    for name, value in zip(names, expected):
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-3, atol=1e-4, err_msg=name)
    original = ort.InferenceSession(str(YUNET), providers=["CPUExecutionProvider"])
    before = original.run(None, {original.get_inputs()[0].name: blob})
    assert not np.allclose(before[0], got[names[0]], atol=1e-5), "the weights must have changed"


def test_detector_model_names_a_shipped_graph_or_a_file(tmp_path):
    assert detector_model_path("yunet") == YUNET
    with pytest.raises(FileNotFoundError, match="detector_model: expected one of"):
        detector_model_path(str(tmp_path / "missing.onnx"))


@pytest.mark.skipif(not SCENES.is_dir(), reason=f"needs the shared scene photos in {SCENES}")
def test_the_command_writes_a_graph_the_detector_runs(tmp_path, capsys):
    split = tmp_path / "split"
    (split / "images").mkdir(parents=True)
    (split / "annotations").mkdir()
    names = sorted(p.stem for p in (SCENES / "annotations").iterdir())
    for name in random.Random(0).sample(names, 3):
        image = next((SCENES / "images").glob(name + ".*"))
        (split / "images" / image.name).symlink_to(image)
        (split / "annotations" / (name + ".xml")).symlink_to(SCENES / "annotations" / (name + ".xml"))
    out = tmp_path / "tuned.onnx"
    assert train_main([str(split), "--out", str(out), "--steps", "2", "--batch", "2",
                       "--eval", str(split)]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned: face_ap50" in printed and "source: face_ap50" in printed
    from maskrt.detect import face_stage

    stage = face_stage("default", detector_model=str(out))
    image = cv2.imread(str(next((split / "images").iterdir())))
    assert stage.detect([image])[0].boxes.shape[1] == 4
    stage.close()
