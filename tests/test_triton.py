"""Triton: the repository ``maskrt export --triton-repo`` writes, served by a REAL tritonserver on
loopback (the nvidia-pytriton wheel's binary, Python backend), and the ``triton`` backend scoring
through it: same labels and logits as ONNX Runtime in-process, dynamic batching seen in the
server's statistics, the verbs, clear errors, and a stream that survives the server's death.

No mocks: every request goes to the server process. The module shares one server (start-up
about 2 s); the stream test kills and restarts it, so it runs last.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from streaming_fixtures import face_paths
from triton_server import (Feeder, export_repository, require_tritonclient,
                           require_tritonserver)

from maskrt.backends import BackendUnavailable
from maskrt.cli import main as cli_main
from maskrt.engine import Engine
from maskrt.graph.export import file_sha256
from maskrt.graph.shipped import SHIPPED_ONNX
from maskrt.serving.local_server import LocalTritonServer, free_port, model_statistics
from maskrt.image import decode_image, resize_to_input

require_tritonclient()
N_FACES = 64


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_repository(tmp_path_factory.mktemp("triton-repo"), "python",
                             "--max-batch", "32", "--max-queue-delay-us", "5000")


@pytest.fixture(scope="module")
def server(repo: Path):
    require_tritonserver()
    with LocalTritonServer(repo) as running:  # stopped and cleaned up whatever happens
        yield running


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """The first N_FACES validation faces (both classes), uint8[N, 224, 224, 3] BGR."""
    return np.stack([resize_to_input(decode_image(p)) for p in face_paths(N_FACES)])


def triton_engine(server, **options) -> Engine:
    return Engine(backend="triton", url=server.grpc_url, model_name="maskrt", **options)


# ---------------------------------------------------------------------------- the repository

def test_the_python_repository_holds_the_graph_and_a_config_triton_parses(repo: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    model = repo / "maskrt"
    assert sorted(p.name for p in (model / "1").iterdir()) == ["model.onnx", "model.py"]
    assert file_sha256(model / "1" / "model.onnx") == file_sha256(SHIPPED_ONNX)
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("maskrt", "python", 32)
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims))
            for i in config.input] == [("images", "TYPE_UINT8", [224, 224, 3])]
    assert [(o.name, model_config_pb2.DataType.Name(o.data_type), list(o.dims))
            for o in config.output] == [("logits", "TYPE_FP32", [2]),
                                        ("features", "TYPE_FP32", [512, 7, 7])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind))
            for g in config.instance_group] == [(1, "KIND_CPU")]
    assert config.parameters["maskrt_onnx_sha256"].string_value == file_sha256(SHIPPED_ONNX)


def test_onnxruntime_platform_config_is_read_up_to_the_missing_backend(tmp_path: Path) -> None:
    """The most this machine can show for ``--platform onnxruntime_onnx``: the wheel's server has
    the Python backend only, so a real server reads the written config.pbtxt (the full ModelConfig
    schema parses it too) and stops where it looks for the ONNX Runtime backend's library. Serving
    it needs NVIDIA's Triton container, which was not available here."""
    require_tritonserver()
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    export_repository(tmp_path, "onnxruntime_onnx", "--instances", "2")
    config = text_format.Parse((tmp_path / "maskrt" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert (config.platform, config.instance_group[0].count) == ("onnxruntime_onnx", 2)
    assert sorted(p.name for p in (tmp_path / "maskrt" / "1").iterdir()) == ["model.onnx"]
    server = LocalTritonServer(tmp_path)
    try:
        assert server.launch().wait(30) != 0
        log = server.log_text()
    finally:
        server.close()
    assert "unable to find backend library for backend 'onnxruntime'" in log, server.log_tail()
    assert "parse" not in log.lower(), server.log_tail()


def test_tensorrt_plan_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: this test is of its absence (building "
                    "model.plan is not tested in this suite)")
    except ImportError:
        pass
    assert cli_main(["export", "--triton-repo", str(tmp_path / "r"), "--platform",
                     "tensorrt_plan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("maskrt export: --platform tensorrt_plan builds model.plan with TensorRT")
    assert "pip install tensorrt" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing half-written


# ---------------------------------------------------------------------------- scoring

def test_triton_backend_matches_onnxruntime(server, faces: np.ndarray) -> None:
    with triton_engine(server) as remote, Engine(precision="fp32") as local:
        assert remote.backend.max_batch == 32 and "python" in remote.backend.describe()
        logits, features = remote.infer(faces)  # 64 images: two requests of 32
        ref_logits, ref_features = local.infer(faces)
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(features, ref_features, rtol=1e-4, atol=1e-4)
        remote_labels = [r.label for r in remote.classify(list(faces[:16]))]
        assert remote_labels == [r.label for r in local.classify(list(faces[:16]))]
        assert [r.label for r in remote.results_from(logits)] == \
            [r.label for r in local.results_from(ref_logits)]
        explained = remote.explain(list(faces[:2]))  # CAMs from the server's features
        assert explained[0].overlay.shape == (224, 224, 3)


def test_http_protocol_gives_the_same_logits(server, faces: np.ndarray) -> None:
    with Engine(backend="triton", url=server.http_url, protocol="http") as remote, \
            Engine(precision="fp32") as local:
        np.testing.assert_allclose(remote.infer(faces[:8])[0], local.infer(faces[:8])[0],
                                   rtol=1e-4, atol=1e-5)


def test_concurrent_requests_are_batched_by_the_server(server, faces: np.ndarray) -> None:
    before = model_statistics(server.grpc_url)
    with triton_engine(server) as remote, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: remote.infer(faces[i:i + 1])[0], range(48)))
    after = model_statistics(server.grpc_url)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 48 and executions < inferences, (inferences, executions)
    with Engine(precision="fp32") as local:
        np.testing.assert_allclose(np.concatenate(results), local.infer(faces[:48])[0],
                                   rtol=1e-4, atol=1e-5)


def test_score_bench_and_check_verbs_run_against_the_server(server, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    option = ["--backend", "triton", "--backend-option", f"url={server.grpc_url},model=maskrt"]
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in face_paths(6):
        (folder / path.name).write_bytes(path.read_bytes())
    assert cli_main(["score", str(folder), "--out", str(tmp_path / "out"), "--regions", "frame",
                     *option]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").open()]
    assert [r["status"] for r in records] == ["scored"] * 6
    assert cli_main(["bench", *option, "--batch", "1,4", "--iterations", "2", "--warmup", "1",
                     "--json", str(tmp_path / "bench.json")]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 4] and "triton" in capsys.readouterr().out
    assert cli_main(["check", *option, "--data", str(folder)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")


# ---------------------------------------------------------------------------- clear errors

def test_unready_model_unreachable_server_and_missing_client_are_clear(server, monkeypatch,
                                                                       capsys) -> None:
    with pytest.raises(BackendUnavailable, match="model 'nope' .*is not ready on the server"):
        Engine(backend="triton", url=server.grpc_url, model_name="nope")
    nobody = f"127.0.0.1:{free_port()}"
    with pytest.raises(BackendUnavailable, match=f"triton server {nobody} .*unreachable"):
        Engine(backend="triton", url=nobody)
    assert cli_main(["bench", "--backend", "triton", "--backend-option", f"url={nobody}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"maskrt bench: triton server {nobody} (grpc)") and "\n" not in err
    assert cli_main(["bench", "--backend", "triton", "--backend-option", "protocol=smtp"]) == 2
    assert "expected grpc or http, got 'smtp'" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "tritonclient.grpc", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'maskrt\[triton\]'"):
        Engine(backend="triton", url=server.grpc_url)


def test_a_timeout_is_a_clear_error_and_backs_off(server, faces: np.ndarray) -> None:
    from maskrt.backends.triton import TritonUnavailable

    with triton_engine(server) as remote:
        remote.backend.timeout = 0.001  # no server answers a 32-image batch in 1 ms
        with pytest.raises(TritonUnavailable, match=r"no answer within 0.001 s \(timeout\).*"
                                                     r"reconnecting in 0.5 s"):
            remote.infer(faces[:32])
        with pytest.raises(TritonUnavailable, match="next reconnection attempt in"):
            remote.infer(faces[:1])  # during the back-off: fails at once, no request sent
        remote.backend.timeout = 30.0
        time.sleep(0.6)
        assert remote.infer(faces[:2])[0].shape == (2, 2)
        assert remote.backend.reconnects == 1


# ---------------------------------------------------------------------------- the server dies

def test_stream_fails_frames_while_the_server_is_down_and_recovers(server, faces, caplog) -> None:
    from maskrt.stream.pipeline import Pipeline

    caplog.set_level("WARNING", logger="maskrt.pipeline")

    feeder = Feeder()
    engine = triton_engine(server)

    def feed(n: int) -> list:
        for i in range(n):
            feeder.inbox.put(faces[i])
        records = [pipeline.get(timeout=30) for _ in range(n)]
        assert None not in records, "no record within 30 s"
        return records

    with engine, Pipeline(engine, [feeder], regions="frame", batch_size=4,
                          max_wait_ms=5) as pipeline:
        assert {r.status for r in feed(4)} == {"scored"}
        server.kill()
        down = feed(4)
        assert {r.status for r in down} == {"failed"}
        assert all(f"triton server {server.grpc_url}" in r.reason for r in down), down[0].reason
        assert "unreachable" in down[0].reason or "reconnect" in down[0].reason
        server.start()
        deadline = time.monotonic() + 20  # the back-off caps at 8 s
        while feed(1)[0].status != "scored":
            assert time.monotonic() < deadline, "the backend did not reconnect within 20 s"
            time.sleep(0.2)
        assert {r.status for r in feed(4)} == {"scored"}
        feeder.inbox.put(None)
        while pipeline.get(timeout=10) is not None:
            pass
        counts = pipeline.counters()
    assert engine.backend.reconnects >= 1
    totals = counts["total"]
    assert totals["read"] == totals["scored"] + totals["dropped"] + totals["failed"]
    assert totals["failed"] >= 4 and totals["dropped"] == 0
    logged = [r for r in caplog.records if r.name == "maskrt.pipeline"]
    assert [r.levelname for r in logged] == ["WARNING"], "one line for the outage, no traceback"
    assert "backend unavailable" in logged[0].getMessage()
