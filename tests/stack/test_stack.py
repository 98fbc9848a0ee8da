"""The stack as a user meets it: `toneserve serve`, the CLI, health checking and reflection."""
from __future__ import annotations

import json
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_health_and_reflection_name_the_analyzer(stack):
    with grpc.insecure_channel(stack.gateway) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "toneserve.v1.Analyzer"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        services = {s.name for answer in answers for s in answer.list_services_response.service}
    assert {"toneserve.v1.Analyzer", "grpc.health.v1.Health"} <= services


def test_cli_analyze_prints_json(stack, clip):
    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "analyze", str(clip), "--address", stack.gateway],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["segments"] and result["metadata"]["random_weights"] is True
    assert [s["speaker"] for s in result["speakers"]] == ["channel_0", "channel_1"]
    assert set(result["call"]) >= {"talk_seconds", "overlap_seconds", "quarters", "average_sentiment"}


def test_export_renders_each_precision_and_serve_picks_one(models_root, tmp_path, clip):
    """`export` renders a cpu repository per precision and one gpu repository; `serve --precision
    int8` serves the int8 graphs (the metadata says so), without re-rendering anything."""
    import os

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from tests.support import processes_using, stop_stack, wait_for_health
    from toneserve.client.sdk import Client
    from toneserve.triton import free_port

    env = {**os.environ, "TONESERVE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "export", "--size", "tiny",
                           "--models-dir", str(models_root)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    repositories = tmp_path / "repository"
    assert sorted(p.name for p in repositories.iterdir()) == ["tiny-cpu", "tiny-cpu-bf16", "tiny-cpu-int8",
                                                                "tiny-gpu"]
    served = repositories / "tiny-cpu" / "emotion2vec" / "1" / "model.onnx"
    assert served.read_bytes() == (models_root / "emotion2vec" / "model.onnx").read_bytes()
    # What each ensemble of the int8 repository says it serves: the runtime and precision its gates chose.
    rendered = {}
    for name in ("emotion", "asr", "vad", "speaker", "text_sentiment"):
        config = text_format.Parse((repositories / "tiny-cpu-int8" / name / "config.pbtxt").read_text(),
                                   mc.ModelConfig())
        rendered[name] = (config.parameters["precision"].string_value, config.parameters["runtime"].string_value)
    assert rendered["emotion"][0] == rendered["asr"][0] == "int8"

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "toneserve.cli", "serve", "--size", "tiny", "--precision", "int8",
             "--port", str(port), "--metrics-port", "0",
             *(f"--triton-{n}-port={free_port()}" for n in ("http", "grpc", "metrics"))],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_health(f"127.0.0.1:{port}", process, log)
        with Client(f"127.0.0.1:{port}", tls=False) as client:
            models = {m.name: (m.precision, m.runtime) for m in client.analyze(clip.read_bytes()).metadata.models}
    finally:
        assert stop_stack(process) == 0, log.read_text()
    assert models == rendered and models["vad"][0] == "fp32"  # silero stays fp32 (cheap, sensitive)
    assert models["speaker"] == ("fp32", "onnxruntime")  # light, like the VAD
    assert not processes_using(repositories)
