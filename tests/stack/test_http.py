"""The HTTP/JSON API (gateway/http.py) of a real gateway against the session's real tritonserver, driven with `curl`
as an integrator would: WAV and MP3 bodies, an upload larger than one gRPC message, keys, quotas, garbage, a client
that disconnects mid-upload, deadlines, health, the OpenAPI document, TLS."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from tests.support import gateway_process, metric, self_signed
from toneserve.samples import call, wav_bytes, write_encoded
from toneserve.triton import free_port
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
GOOD = "k-http-good-Zt7q8mXo2Lw1bV9cR4yPn6Ks"
SMALL = "k-http-small-3f9a0c6e1b7d42a8e5f01c9b"
CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None and not os.environ.get("CI"), reason="curl is not installed")


class Http:
    def __init__(self, base: str, process, log: Path, metrics: str, grpc_address: str, spool: Path):
        self.base, self.process, self.log, self.metrics = base, process, log, metrics
        self.grpc_address, self.spool = grpc_address, spool

    def curl(self, path: str, *arguments: str, key: str | None = GOOD, timeout: float = 120) -> tuple[int, dict, dict]:
        """(status, headers, JSON body) of `curl` on `path`."""
        headers = ["-H", f"Authorization: Bearer {key}"] if key else []
        done = subprocess.run([CURL or "curl", "-sS", "-D", "-", *headers, *arguments, f"{self.base}{path}"],
                              capture_output=True, timeout=timeout)
        assert done.returncode == 0, done.stderr.decode()
        head, _, body = done.stdout.decode("utf-8").rpartition("\r\n\r\n")
        lines = head.split("\r\n")
        status = int([line for line in lines if line.startswith("HTTP/")][-1].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:]) if k}
        return status, fields, json.loads(body)

    def post(self, path: str, file: Path, *arguments: str, **kw) -> tuple[int, dict, dict]:
        typed = any(a.lower().startswith("content-type:") for a in arguments)
        return self.curl(path, "--data-binary", f"@{file}",
                         *([] if typed else ["-H", "Content-Type: application/octet-stream"]), *arguments, **kw)

    def spool_files(self) -> list[str]:
        """The files the gateway holds open in its temporary folder (a spool file is unlinked at once, so it
        shows only among the process's descriptors)."""
        found = []
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(self.spool)):
                found.append(target)
        return found


@pytest.fixture(scope="module")
def http(stack, tmp_path_factory):
    """A gateway with --http-port, keys (one tenant with a 5 s per-minute quota), gRPC messages held to 1 MB and
    uploads to 16 MB, and a temporary folder of its own (uploads over 8 MB are spooled to a file there)."""
    folder = tmp_path_factory.mktemp("http")
    keys = folder / "keys.txt"
    keys.write_text(f"{GOOD} good\n{SMALL} small seconds_per_minute=5\n")
    spool = folder / "tmp"
    spool.mkdir()
    port = free_port()
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(spool)  # the gateway's, inherited; this process has its temp dir cached already
    try:
        with gateway_process(stack.triton_grpc, folder / "gateway.log", "--api-keys", str(keys), "--http-port",
                             str(port), "--max-message-mb", "1", "--max-upload-mb", "16") as gateway:
            yield Http(f"http://127.0.0.1:{port}", gateway.process, gateway.log, gateway.metrics, gateway.address,
                       spool)
    finally:
        if previous is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = previous


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    """A 20 s two-channel call as WAV (1.3 MB: more than the gateway's 1 MB gRPC message) and as MP3."""
    folder = tmp_path_factory.mktemp("recordings")
    audio = call(20.0, rate=16000, seed=11).samples
    wav, mp3 = folder / "call.wav", folder / "call.mp3"
    wav.write_bytes(wav_bytes(audio, 16000))
    with open(mp3, "wb") as out:
        write_encoded(out, [audio], 16000, "mp3")
    return {"wav": wav, "mp3": mp3}


def _grpc(http: Http, request: pb.AnalyzeRequest) -> pb.AnalyzeResponse:
    with grpc.insecure_channel(http.grpc_address, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        audio = request.audio
        request.ClearField("audio")
        messages = [pb.UploadRequest(options=request)]
        messages += [pb.UploadRequest(chunk=audio[i:i + 65536]) for i in range(0, len(audio), 65536)]
        return stub.AnalyzeUpload(iter(messages), metadata=(("authorization", f"Bearer {GOOD}"),), timeout=120)


def test_a_wav_larger_than_one_grpc_message_answers_the_same_analysis_as_grpc(http, recordings):
    wav = recordings["wav"]
    assert wav.stat().st_size > 1024 * 1024  # more than this gateway's Analyze message takes
    status, _, body = http.post("/v1/analyze?language=auto&roles=agent,customer&request_id=http-1", wav)
    assert status == 200, body
    response = json_format.Parse(json.dumps(body), pb.AnalyzeResponse())
    assert response.metadata.request_id == "http-1"
    assert {s.speaker for s in response.speakers} == {"agent", "customer"}
    # snake_case names and zero values present, as documented
    assert all("start_ms" in s and "channel" in s and "words" in s for s in body["segments"])
    expected = _grpc(http, pb.AnalyzeRequest(audio=wav.read_bytes(), language="auto",
                                             channel_roles={0: "agent", 1: "customer"}))

    def essentials(r: pb.AnalyzeResponse):
        return [(s.start_ms, s.end_ms, s.speaker, s.transcript, [(w.text, w.start_ms, w.end_ms) for w in s.words])
                for s in r.segments]
    assert essentials(response) == essentials(expected)
    assert any(s.words for s in response.segments), "no segment has words"
    for segment in response.segments:
        for word in segment.words:
            assert segment.start_ms <= word.start_ms <= word.end_ms <= segment.end_ms

    with grpc.insecure_channel(http.grpc_address) as channel:  # the same bytes through unary gRPC: too large
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.AnalyzerStub(channel).Analyze(pb.AnalyzeRequest(audio=wav.read_bytes()), timeout=60,
                                                  metadata=(("authorization", f"Bearer {GOOD}"),))
        assert error.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)


def test_an_mp3_body(http, recordings):
    status, _, body = http.post("/v1/analyze?itn=true", recordings["mp3"], "-H", "Content-Type: audio/mpeg")
    assert status == 200, body
    assert body["metadata"]["container"] == "mp3" and body["segments"]


def test_a_chunked_body_without_content_length_is_streamed(http, recordings):
    status, _, body = http.post("/v1/analyze", recordings["wav"], "-H", "Transfer-Encoding: chunked")
    assert status == 200, body
    assert body["metadata"]["audio_seconds"] == pytest.approx(20.0, abs=0.01)


def test_keys(http, recordings):
    status, headers, body = http.post("/v1/analyze", recordings["mp3"], key="k-wrong-key-0000000000000000000000")
    assert (status, body["code"]) == (401, "UNAUTHENTICATED") and body["request_id"]
    status, _, body = http.post("/v1/analyze", recordings["mp3"], key=None)
    assert (status, body["code"]) == (401, "UNAUTHENTICATED")
    status, _, body = http.curl("/v1/health", key=None)  # health needs no key
    assert (status, body) == (200, {"status": "SERVING"})


def test_an_over_quota_tenant_gets_429_with_retry_after(http, recordings):
    first, _, body = http.post("/v1/analyze", recordings["mp3"], key=SMALL)  # 20 s charged against 5 s a minute
    assert first == 200, body
    status, headers, body = http.post("/v1/analyze", recordings["mp3"], key=SMALL)
    assert (status, body["code"]) == (429, "QUOTA_EXCEEDED"), body
    assert 1 <= int(headers["retry-after"]) <= 60
    assert metric(http.metrics, "toneserve_requests_total", rpc="HTTP /v1/analyze", code="QUOTA_EXCEEDED",
                  tenant="small") == 1


def test_bad_bodies_and_parameters(http, recordings, tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(50_000))
    status, _, body = http.post("/v1/analyze", garbage)
    assert (status, body["code"]) == (400, "INVALID_AUDIO"), body
    status, _, body = http.post("/v1/analyze?langauge=en", recordings["mp3"])
    assert (status, body["code"]) == (400, "INVALID_ARGUMENT") and "langauge" in body["message"]
    status, _, body = http.post("/v1/analyze?roles=a,b,c", recordings["mp3"])  # the call has 2 channels
    assert (status, body["code"]) == (400, "INVALID_ARGUMENT"), body
    silence = tmp_path / "silence.wav"
    silence.write_bytes(wav_bytes(np.zeros((32000, 2), np.float32), 16000))
    status, _, body = http.post("/v1/analyze", silence)
    assert (status, body["code"]) == (422, "NO_SPEECH"), body


def test_too_large_is_413_whether_the_length_is_declared_or_not(http, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (17 * 1024 * 1024))  # over the gateway's 16 MB
    status, _, body = http.post("/v1/analyze", big)
    assert (status, body["code"]) == (413, "AUDIO_TOO_LARGE"), body
    status, _, body = http.post("/v1/analyze", big, "-H", "Transfer-Encoding: chunked")
    assert (status, body["code"]) == (413, "AUDIO_TOO_LARGE"), body


def test_a_deadline_is_504(http, recordings):
    status, _, body = http.post("/v1/analyze?timeout=0.05", recordings["mp3"])
    assert (status, body["code"]) == (504, "DEADLINE_EXCEEDED"), body


def test_a_client_that_disconnects_mid_upload_cancels_its_request_and_leaves_nothing(http, tmp_path):
    before = metric(http.metrics, "toneserve_requests_total", rpc="HTTP /v1/analyze", code="CANCELLED",
                    tenant="good")
    body = tmp_path / "slow.bin"
    body.write_bytes(b"\0" * (15 * 1024 * 1024))  # within the limit; past 8 MB the gateway spools it to a file
    # 8 MB/s for 1.6 s: the client gives up mid-body, after the spool has gone to disk.
    client = subprocess.Popen([CURL or "curl", "-sS", "-o", "/dev/null", "--limit-rate", "8M", "--max-time", "1.6",
                               "-H", f"Authorization: Bearer {GOOD}", "--data-binary", f"@{body}",
                               f"{http.base}/v1/analyze"], stderr=subprocess.PIPE)
    spooled = False
    while client.poll() is None:
        spooled = spooled or bool(http.spool_files())
        time.sleep(0.02)
    assert client.returncode == 28, client.stderr.read() if client.stderr else ""  # curl's "operation timed out"
    assert spooled, "the upload never reached the spool file"
    for _ in range(100):
        if metric(http.metrics, "toneserve_requests_total", rpc="HTTP /v1/analyze", code="CANCELLED",
                  tenant="good") == before + 1:
            break
        time.sleep(0.1)
    assert metric(http.metrics, "toneserve_requests_total", rpc="HTTP /v1/analyze", code="CANCELLED",
                  tenant="good") == before + 1
    assert metric(http.metrics, "toneserve_requests_in_flight") == 0
    assert http.spool_files() == [] and list(http.spool.iterdir()) == []  # no spool file left behind
    status, _, _ = http.curl("/v1/health")
    assert status == 200 and http.process.poll() is None


def test_the_served_openapi_document_is_the_committed_one(http):
    status, headers, body = http.curl("/v1/openapi.json", key=None)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert body == json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))


def test_text_sentiment_over_http(http):
    status, _, body = http.curl("/v1/text", "-H", "Content-Type: application/json", "--data",
                                json.dumps({"text": "I love it. It broke on day two!", "language": "en"}))
    assert status == 200, body
    assert [(s["start_word"], s["end_word"]) for s in body["segments"]] == [(0, 3), (3, 8)]
    status, _, body = http.curl("/v1/text", "--data", "not json")
    assert (status, body["code"]) == (400, "INVALID_ARGUMENT")


def test_no_playground_unless_asked(http):
    done = subprocess.run([CURL or "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{http.base}/"],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout == "404"


def test_tls_and_a_port_that_is_taken(stack, tmp_path, recordings):
    cert, key = self_signed(tmp_path)
    port = free_port()
    with gateway_process(stack.triton_grpc, tmp_path / "tls.log", "--tls-cert", str(cert), "--tls-key", str(key),
                         "--http-port", str(port), root_certificates=cert.read_bytes()):
        done = subprocess.run([CURL or "curl", "-sS", "--cacert", str(cert), "--data-binary",
                               f"@{recordings['mp3']}", f"https://localhost:{port}/v1/analyze"],
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["segments"]
        plain = subprocess.run([CURL or "curl", "-sS", f"http://127.0.0.1:{port}/v1/health"], capture_output=True,
                               timeout=30)
        assert plain.returncode != 0 or b"SERVING" not in plain.stdout  # no plaintext beside TLS
        taken = subprocess.run([sys.executable, "-m", "toneserve.cli", "gateway", "--triton-url",
                                stack.triton_grpc, "--port", str(free_port()), "--http-port", str(port)],
                               capture_output=True, text=True, timeout=120)
        assert taken.returncode != 0 and f"cannot serve HTTP on 127.0.0.1:{port}" in taken.stderr


def test_the_http_cost_benchmark_runs_and_the_three_paths_answer_alike(http):
    """loadtest/http_bench.py (docs/BENCHMARKS.md) against this gateway: every path analyses every clip, to the same
    segments; the figures themselves are the benchmark's, not this test's."""
    from toneserve.loadtest import http_bench, process_cpu

    report = http_bench.run(http.grpc_address, http.base.removeprefix("http://"), http.process.pid,
                            http_bench.clips(3, 2.0), rounds=1, key=GOOD)
    assert set(report) == set(http_bench.PATHS)
    assert {row["requests"] for row in report.values()} == {3}
    assert len({row["segments"] for row in report.values()}) == 1 and report["grpc Analyze"]["segments"] > 0
    rss = process_cpu.rss_mb(http.process.pid, "gateway")  # what the benchmark prints beside the speed
    assert set(rss) == {"gateway"} and rss["gateway"] > 50  # a gateway process alone: no Triton below it
