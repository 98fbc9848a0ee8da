"""The end of a drain, against a real gateway (a short --drain-seconds) and the session's real tritonserver:
SIGTERM with requests in flight; once the drain time is over, each still running ends with UNAVAILABLE and the
toneserve code SHUTTING_DOWN (retry on another replica), not CANCELLED or INTERNAL; a live stream gets the segments
analysed so far first; during the drain, a new HTTP request on a kept-alive connection is refused SHUTTING_DOWN."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc

from tests.support import metric, stop_stack, wait_for_health
from toneserve.client import live_wav_header
from toneserve.contract import ERROR_CODE_METADATA
from toneserve.samples import call, wav_bytes
from toneserve.triton import free_port
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

DRAIN = 3.0


def _code(error: grpc.RpcError) -> tuple[str, str]:
    return error.code().name, dict(error.trailing_metadata() or ()).get(ERROR_CODE_METADATA, "")


def test_requests_still_running_when_the_drain_ends_get_shutting_down(stack, tmp_path):
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        gateway = subprocess.Popen([sys.executable, "-m", "toneserve.cli", "gateway", "--triton-url", stack.triton_grpc,
                                    "--port", str(port), "--http-port", str(http_port), "--metrics-port",
                                    str(metrics_port), "--drain-seconds", str(DRAIN)],
                                   stdout=out, stderr=subprocess.STDOUT)
    address, metrics = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    release = threading.Event()
    outcomes: dict[str, object] = {}
    segments: list[pb.Segment] = []
    try:
        wait_for_health(address, gateway, log, timeout=60)
        kept = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        kept.request("GET", "/v1/openapi.json")
        first = kept.getresponse()
        first.read()
        assert first.status == 200

        def upload() -> None:  # its client never finishes sending: it runs until the drain ends it
            def messages():
                yield pb.UploadRequest(options=pb.AnalyzeRequest())
                yield pb.UploadRequest(chunk=wav_bytes(call(4.0, rate=16000, seed=3).samples, 16000)[:32000])
                release.wait(60)
            with grpc.insecure_channel(address) as channel:
                try:
                    outcomes["upload"] = pb_grpc.AnalyzerStub(channel).AnalyzeUpload(messages(), timeout=60)
                except grpc.RpcError as error:
                    outcomes["upload"] = (_code(error), time.monotonic())

        def stream() -> None:  # live audio whose first utterances are analysed, then a client still sending
            audio = live_wav_header(16000, 2) + wav_bytes(call(8.0, rate=16000, seed=2).samples, 16000)[44:]

            def messages():
                yield pb.UploadRequest(options=pb.AnalyzeRequest())
                for i in range(0, len(audio), 3200):
                    yield pb.UploadRequest(chunk=audio[i:i + 3200])
                release.wait(60)
            with grpc.insecure_channel(address) as channel:
                try:
                    for event in pb_grpc.AnalyzerStub(channel).AnalyzeStream(messages(), timeout=60):
                        if event.HasField("segment"):
                            segments.append(event.segment)
                    outcomes["stream"] = "ended without an error"
                except grpc.RpcError as error:
                    outcomes["stream"] = (_code(error), len(segments))

        threads = [threading.Thread(target=upload, daemon=True), threading.Thread(target=stream, daemon=True)]
        for thread in threads:
            thread.start()
        # An HTTP upload whose body never comes whole.
        posted = socket.create_connection(("127.0.0.1", http_port), timeout=30)
        posted.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 1000000\r\n"
                       b"\r\n" + wav_bytes(call(2.0, rate=16000, seed=4).samples, 16000)[:20000])
        deadline = time.monotonic() + 60
        while not (segments and metric(metrics, "toneserve_requests_in_flight") >= 3):
            assert time.monotonic() < deadline and gateway.poll() is None, (segments, log.read_text())
            time.sleep(0.1)
        analysed = len(segments)
        gateway.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.5)
        kept.request("GET", "/v1/openapi.json")  # a new request on the kept-alive connection, during the drain
        refused = kept.getresponse()
        body = json.loads(refused.read())
        assert (refused.status, body["code"], refused.getheader("Connection")) == (503, "SHUTTING_DOWN", "close")
        for thread in threads:
            thread.join(30)
        reply = b""
        while chunk := posted.recv(65536):
            reply += chunk
        head, _, text = reply.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 503") and json.loads(text)["code"] == "SHUTTING_DOWN", reply
        assert gateway.wait(15) == 0, log.read_text()
    finally:
        release.set()
        stop_stack(gateway)
    code, ended = outcomes["upload"]  # type: ignore[misc]
    assert code == ("UNAVAILABLE", "SHUTTING_DOWN")
    assert DRAIN - 0.5 <= ended - signalled <= DRAIN + 3, ended - signalled  # at the drain's end, not before
    assert outcomes["stream"] == (("UNAVAILABLE", "SHUTTING_DOWN"), len(segments)), outcomes
    assert len(segments) >= analysed >= 1  # the segments analysed before the drain ended came before the status
    assert "Traceback" not in log.read_text()
