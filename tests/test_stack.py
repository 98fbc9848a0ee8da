"""The stack as a user meets it: `toneserve serve`, the CLI, health checking and reflection."""
from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from toneserve.samples import call, wav_bytes


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "call.wav"
    path.write_bytes(wav_bytes(call(10.0, rate=16000, seed=3).samples, 16000))
    return path


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


def test_cli_analyze_against_no_server_is_a_clear_error(clip):
    from toneserve.triton import free_port

    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "analyze", str(clip),
                           "--address", f"127.0.0.1:{free_port()}", "--timeout", "5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot reach the toneserve gateway" in done.stderr and "Traceback" not in done.stderr
