"""Triton serving the whole faces pipeline (``maskrt export --triton-repo DIR --pipeline faces``)
on a REAL tritonserver (the nvidia-pytriton wheel's, Python backend; see triton_server.py): the
three models load, whole scene photos give the faces ``Engine.faces`` gives in-process, ``maskrt
score --backend triton --backend-option pipeline=faces`` writes the in-process records, a video
sequence (per-source detector scale, tracking, reuse, CAMs) gives the in-process records, and
bad frames are clear errors the server survives.

Like with like: the repository's classifier model runs the FP32 graph (model.onnx), so the
in-process side is ``precision="fp32"`` (the default there is the INT8 twin). The detector is the
same YuNet graph on ONNX Runtime on both sides. No mocks: every request goes to the server.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from triton_server import (Feeder, export_repository, require_tritonclient,
                           require_tritonserver)

from maskrt.cli import main as cli_main
from maskrt.engine import Engine
from maskrt.graph.export import file_sha256
from maskrt.graph.shipped import SHIPPED_ONNX
from maskrt.image import decode_image, resize_to_input
from maskrt.serving.local_server import LocalTritonServer
from maskrt.stream.sources.base import Frame, Source

require_tritonclient()
SCENES = Path("/work/shared/data/scenes/val/images")
N_PHOTOS = 4


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_repository(tmp_path_factory.mktemp("faces-repo"), "python", "--pipeline",
                             "faces", "--max-batch", "16")


@pytest.fixture(scope="module")
def server(repo: Path):
    require_tritonserver()
    with LocalTritonServer(repo) as running:
        yield running


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    if not SCENES.is_dir():
        pytest.skip(f"no scene photos at {SCENES}")
    return sorted(SCENES.iterdir())[:N_PHOTOS]


@pytest.fixture(scope="module")
def remote(server):
    with Engine(backend="triton", url=server.grpc_url, pipeline="faces") as engine:
        yield engine


@pytest.fixture(scope="module")
def local():
    with Engine(precision="fp32") as engine:
        yield engine


def infer_raw(server, inputs: dict[str, np.ndarray]):
    """A request to maskrt_faces with tritonclient itself (no maskrt client checks)."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(server.grpc_url)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = grpc.InferInput(name, list(array.shape),
                                     {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32",
                                      np.dtype(bool): "BOOL"}[array.dtype])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return client.infer("maskrt_faces", tensors)
    finally:
        client.close()


# ---------------------------------------------------------------------------- the repository

def test_the_repository_holds_three_models_the_server_loads(repo: Path, server) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    assert sorted(p.name for p in repo.iterdir()) == ["maskrt", "maskrt_faces", "maskrt_yunet"]
    assert sorted(p.name for p in (repo / "maskrt_yunet" / "1").iterdir()
                  if p.name != "__pycache__") == ["model.onnx", "model.py"]  # the server's cache
    assert file_sha256(repo / "maskrt" / "1" / "model.onnx") == file_sha256(SHIPPED_ONNX)
    configs = {name: text_format.Parse((repo / name / "config.pbtxt").read_text(),
                                       model_config_pb2.ModelConfig())
               for name in ("maskrt", "maskrt_yunet", "maskrt_faces")}
    entry = configs["maskrt_faces"]
    assert (entry.backend, entry.max_batch_size) == ("python", 0)
    assert [(i.name, list(i.dims), i.optional) for i in entry.input] == [
        ("frame", [-1, -1, 3], False), ("scale", [1], True), ("return_features", [1], True),
        ("candidates", [1], True)]
    assert "features" in [o.name for o in entry.output]
    assert entry.parameters["preset"].string_value == "default"
    assert entry.parameters["detector_graph"].string_value == "yunet-masks"
    assert configs["maskrt_yunet"].input[0].name == "input"
    assert list(configs["maskrt_yunet"].input[0].dims) == [3, -1, -1]
    assert configs["maskrt"].max_batch_size == 16
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(server.grpc_url)
    try:
        assert all(client.is_model_ready(name) for name in configs)
    finally:
        client.close()


def test_export_refuses_what_the_faces_pipeline_cannot_take(tmp_path: Path, capsys) -> None:
    for flags, expected in (
            (["--pipeline", "faces", "--platform", "tensorrt_plan"],
             "--platform: expected one of python, onnxruntime_onnx with --pipeline faces"),
            (["--pipeline", "faces", "--face-option", "detector_device=cuda"],
             "--face-option detector_device: expected a setting of what the detector finds"),
            (["--pipeline", "faces", "--face-option", "max_faces=many"],
             "--face-option max_faces: expected an integer, got 'many'"),
            (["--face-option", "max_faces=3"], "expected with --pipeline faces only")):
        assert cli_main(["export", "--triton-repo", str(tmp_path / "r"), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- the same faces

def test_served_faces_are_engine_faces(remote, local, photos) -> None:
    total = 0
    for path in photos:
        image = decode_image(path)
        expected = local.faces(image)
        served = remote.backend.served_faces(image, features=True, candidates=False)
        assert served.reported == len(served.scores) == len(expected), path.name
        total += len(expected)
        np.testing.assert_allclose(served.boxes, [r.box for r in expected], atol=1)
        np.testing.assert_allclose(served.crop_boxes, [r.crop_box for r in expected], atol=1)
        np.testing.assert_allclose(served.scores, [r.face_score for r in expected], atol=1e-4)
        np.testing.assert_allclose(served.landmarks, [r.landmarks for r in expected], atol=0.5)
        results = remote.results_from(served.logits)
        assert [r.label for r in results] == [r.label for r in expected]
        np.testing.assert_allclose([r.probabilities for r in results],
                                   [r.probabilities for r in expected], atol=1e-3)
        crops = np.stack([resize_to_input(image[y0:y1, x0:x1])
                          for x0, y0, x1, y1 in (r.crop_box for r in expected)])
        np.testing.assert_allclose(served.features, local.infer(crops)[1], rtol=1e-3, atol=1e-3)
    assert total >= 3 * N_PHOTOS, f"only {total} faces in {N_PHOTOS} scene photos"


def test_candidates_come_after_the_reported_faces(remote, local, photos) -> None:
    image = decode_image(photos[0])
    served = remote.backend.served_faces(image, candidates=True)
    every = local.faces(image, report_threshold=0.0)
    assert len(served.scores) == len(every) > served.reported > 0
    assert (served.scores[served.reported:] < local.report_threshold).all()
    np.testing.assert_allclose(served.boxes, [r.box for r in every], atol=1)
    assert served.found >= len(every) and served.scale > 0


def test_http_gives_the_same_faces(server, remote, photos) -> None:
    image = decode_image(photos[2])
    with Engine(backend="triton", url=server.http_url, protocol="http",
                pipeline="faces") as over_http:
        got = over_http.backend.served_faces(image, scale=1.5)
    want = remote.backend.served_faces(image, scale=1.5)
    assert got.scale == want.scale == 1.5 and got.reported == want.reported > 0
    np.testing.assert_array_equal(got.boxes, want.boxes)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-5)


def test_features_come_only_when_asked(server, photos) -> None:
    image = decode_image(photos[1])
    plain = infer_raw(server, {"frame": image})
    assert plain.as_numpy("features") is None
    reported = len(plain.as_numpy("logits"))
    assert reported > 0 and len(plain.as_numpy("boxes")) == reported  # no candidates unasked
    np.testing.assert_allclose(plain.as_numpy("probabilities").sum(axis=1), 1.0, atol=1e-6)
    asked = infer_raw(server, {"frame": image, "return_features": np.array([True])})
    assert asked.as_numpy("features").shape == (reported, 512, 7, 7)
    np.testing.assert_array_equal(asked.as_numpy("logits"), plain.as_numpy("logits"))


# ---------------------------------------------------------------------------- maskrt score

def test_score_through_the_served_pipeline_writes_the_in_process_records(server, photos,
                                                                        tmp_path: Path) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for path in photos:
        shutil.copy(path, folder / path.name)
    option = f"url={server.grpc_url},pipeline=faces"
    assert cli_main(["score", str(folder), "--out", str(tmp_path / "served"), "--backend",
                     "triton", "--backend-option", option]) == 0
    assert cli_main(["score", str(folder), "--out", str(tmp_path / "local"), "--backend-option",
                     "precision=fp32"]) == 0
    runs = {name: [json.loads(line) for line in (tmp_path / name / "records.jsonl").open()]
            for name in ("served", "local")}
    assert len(runs["served"]) == len(runs["local"]) >= 3 * N_PHOTOS
    exact = ("uri", "status", "region_index", "box", "faces", "label", "classified", "reason",
             "track_id", "face_score", "landmarks")
    key = lambda r: (r["uri"], r["region_index"])  # noqa: E731
    for got, want in zip(sorted(runs["served"], key=key), sorted(runs["local"], key=key)):
        assert {k: got[k] for k in exact} == {k: want[k] for k in exact}
        assert abs(got["p_without_mask"] - want["p_without_mask"]) < 1e-3
    summaries = [json.loads((tmp_path / name / "summary.json").read_text())
                 for name in ("served", "local")]
    assert summaries[0]["classified_faces"] == summaries[1]["classified_faces"] == len(
        runs["local"])
    assert "faces model maskrt_faces" in summaries[0]["backend"]


class Clip(Source):
    """A short 'video': one scene photo shifted a few pixels per frame."""

    kind = "video"

    def __init__(self, image: np.ndarray, n: int) -> None:
        super().__init__("clip")
        self.image, self.n = image, n

    def frames(self, stop: threading.Event):
        for i in range(self.n):
            yield Frame(i, float(i) / 10, image=np.roll(self.image, 2 * i, axis=1))


def _clip_records(engine: Engine, image: np.ndarray) -> list:
    from maskrt.stream.pipeline import Pipeline

    with Pipeline(engine, [Clip(image, 8)], explain=True, batch_size=8) as pipeline:
        records = list(pipeline)
    return records


def test_a_video_through_the_served_pipeline_tracks_and_explains_as_in_process(
        remote, local, photos) -> None:
    """Per-source scale (probe on the first frame, then the source's scale sent with each
    frame), tracking with reuse, and CAMs drawn from the server's features."""
    image = decode_image(photos[1])
    served, expected = _clip_records(remote, image), _clip_records(local, image)
    assert len(served) == len(expected) >= 8 * 3
    fields = ("frame_index", "box", "label", "track_id", "classified", "track_label", "reason")
    assert [[getattr(r, f) for f in fields] for r in served] == \
        [[getattr(r, f) for f in fields] for r in expected]
    assert any(r.track_id is not None for r in served)
    assert any(r.classified is False for r in served), "expected reused decisions"
    for got, want in zip(served, expected):
        if got.region_index == 0:
            assert got.overlay is not None and got.overlay.shape == want.overlay.shape
            assert np.abs(got.overlay.astype(int) - want.overlay.astype(int)).mean() < 1.0


# ---------------------------------------------------------------------------- clear errors

def test_a_bad_frame_is_a_clear_error_and_the_server_keeps_serving(server, remote,
                                                                   photos) -> None:
    from tritonclient.utils import InferenceServerException

    from maskrt.backends.triton import TritonError

    for frame, words in ((np.zeros((8, 8, 3), np.float32), ["frame", "FP32", "UINT8"]),
                         (np.zeros((8, 8, 4), np.uint8), ["frame", "shape"]),
                         (np.zeros((0, 8, 3), np.uint8),
                          ["maskrt_faces: frame: expected uint8[H, W, 3] BGR with 1 <= H, W <= "
                           "4096, got uint8[0, 8, 3]"]),
                         (np.zeros((4097, 8, 3), np.uint8), ["got uint8[4097, 8, 3]"])):
        with pytest.raises(InferenceServerException) as caught:
            infer_raw(server, {"frame": frame})
        assert all(w in str(caught.value) for w in words), str(caught.value)
    with pytest.raises(InferenceServerException, match="scale: expected one finite factor > 0"):
        infer_raw(server, {"frame": np.zeros((32, 32, 3), np.uint8),
                           "scale": np.array([-1.0], np.float32)})
    with pytest.raises(ValueError, match=r"frame: expected a uint8\[H, W, 3\] BGR array, got "
                                         r"uint8\[5, 5\]"):
        remote.backend.served_faces(np.zeros((5, 5), np.uint8))
    with pytest.raises(TritonError, match="model maskrt_faces: .*got uint8\\[0, 4, 3\\]"):
        remote.backend.served_faces(np.zeros((0, 4, 3), np.uint8))
    image = decode_image(photos[0])
    assert remote.backend.served_faces(image).reported == len(remote.faces(image)) > 0
    assert server.running()


def test_face_options_on_the_client_are_refused(remote) -> None:
    from maskrt.stream.pipeline import Pipeline

    with pytest.raises(ValueError, match="face options: expected none with a served faces "
                                         "pipeline .*maskrt_faces model: preset default"):
        Pipeline(remote, [], face_options={"max_faces": 3})


def test_a_repository_without_the_faces_model_is_a_clear_error(server) -> None:
    from maskrt.backends import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="model 'nope' .*is not ready"):
        Engine(backend="triton", url=server.grpc_url, pipeline="faces", faces_model="nope")
    with pytest.raises(ValueError, match="expected input frame UINT8"):
        Engine(backend="triton", url=server.grpc_url, pipeline="faces", faces_model="maskrt")


# ---------------------------------------------------------------------------- the server dies

def test_a_served_stream_fails_frames_while_the_server_is_down_and_recovers(
        server, remote, photos, caplog) -> None:
    """Runs last: it kills and restarts the module's server."""
    from maskrt.stream.pipeline import Pipeline

    caplog.set_level("WARNING", logger="maskrt.pipeline")
    image = decode_image(photos[0])
    feeder = Feeder()

    def frame_records() -> list:
        feeder.inbox.put(image)
        first = pipeline.get(timeout=60)
        assert first is not None, "no record within 60 s"
        more = first.faces - 1 if first.status == "scored" and first.faces else 0
        return [first, *(pipeline.get(timeout=60) for _ in range(more))]

    with Pipeline(remote, [feeder], batch_size=4, max_wait_ms=5) as pipeline:
        scored = frame_records()
        assert [r.status for r in scored] == ["scored"] * len(scored) and len(scored) >= 2
        server.kill()
        down = [frame_records() for _ in range(2)]
        assert [[r.status for r in rs] for rs in down] == [["failed"], ["failed"]]
        reason = down[0][0].reason
        assert reason.startswith("faces error: TritonUnavailable: triton server") and \
            "maskrt_faces" in reason, reason
        server.start()
        deadline = time.monotonic() + 20  # the back-off caps at 8 s
        while (records := frame_records())[0].status != "scored":
            assert time.monotonic() < deadline, "the served stage did not recover within 20 s"
            time.sleep(0.2)
        assert [(r.box, r.label) for r in records] == [(r.box, r.label) for r in scored]
        feeder.inbox.put(None)
        while pipeline.get(timeout=10) is not None:
            pass
        totals = pipeline.counters()["total"]
    assert totals["read"] == totals["scored"] + totals["dropped"] + totals["failed"]
    assert totals["failed"] >= 2 and totals["dropped"] == 0
    logged = [r for r in caplog.records if r.name == "maskrt.pipeline"]
    assert [r.levelname for r in logged] == ["WARNING"], "one line for the outage"
    assert "served faces unavailable" in logged[0].getMessage()
