"""Triton killed and restarted under load: every request gets exactly one answer (its result or
TRITON_UNAVAILABLE), new requests fail fast with a retry hint while Triton is down and the gateway's
health says NOT_SERVING, and once Triton is back on the same ports the same gateway serves again."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.stack.gateway_alone import http_call
from tests.support import gateway_process, metric, triton_ports
from toneserve.contract import ERROR_CODE_METADATA, RETRY_PUSHBACK_METADATA
from toneserve.samples import speechlike, wav_bytes
from toneserve.triton import EmbeddedTriton, free_port
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

CLIP = wav_bytes(speechlike(3.0, seed=5), 16000)


def _analyze(stub, timeout: float = 60.0) -> tuple[str, dict, float]:
    """(OK or the toneserve error code, trailing metadata, seconds taken) of one Analyze call."""
    started = time.monotonic()
    try:
        stub.Analyze(pb.AnalyzeRequest(audio=CLIP), timeout=timeout)
        return "OK", {}, time.monotonic() - started
    except grpc.RpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        return trailers.get(ERROR_CODE_METADATA, f"grpc:{error.code().name}"), trailers, time.monotonic() - started


def _served(stub, tries: int = 3) -> bool:
    """An OK answer within a few tries: a fresh (or just thawed) Triton's first calls can take longer
    than a short --triton-timeout on a busy machine."""
    return any(_analyze(stub)[0] == "OK" for _ in range(tries))


def _health(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _wait_health(channel, status: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _health(channel) == status:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"gateway health not {health_pb2.HealthCheckResponse.ServingStatus.Name(status)} "
                         f"after {timeout} s")


def _kill(triton: EmbeddedTriton) -> None:
    """A crash, not a shutdown: SIGKILL to the server and its stubs, nothing drains."""
    process, triton.process = triton.process, None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def test_triton_killed_and_restarted_under_load(repository, tmp_path):
    ports = triton_ports()
    triton = EmbeddedTriton(repository, ports, log_path=tmp_path / "triton.log").start()
    try:
        with gateway_process(triton.grpc_url, tmp_path / "gateway.log") as gateway, \
                grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.AnalyzerStub(channel)
            answers: list[tuple[str, float]] = []
            sent = 0
            lock = threading.Lock()
            stop = threading.Event()

            def user() -> None:
                nonlocal sent
                while not stop.is_set():
                    with lock:
                        sent += 1
                    code, _, took = _analyze(stub)
                    with lock:
                        answers.append((code, took))
                    if code != "OK":
                        time.sleep(0.05)

            users = [threading.Thread(target=user) for _ in range(4)]
            for thread in users:
                thread.start()
            try:
                while sum(code == "OK" for code, _ in answers) < 4:  # under load, answering
                    assert all(t.is_alive() for t in users)
                    time.sleep(0.1)
                _kill(triton)
                _wait_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING, timeout=15)
                code, trailers, took = _analyze(stub)  # while Triton is down: refused at once, with a hint
                assert code == "TRITON_UNAVAILABLE" and took < 2.0, (code, took)
                assert int(trailers[RETRY_PUSHBACK_METADATA]) > 0
                with lock:
                    answered_while_down = len(answers)
                triton = EmbeddedTriton(repository, ports, log_path=tmp_path / "triton-restarted.log").start()
                back = _wait_health(channel, health_pb2.HealthCheckResponse.SERVING, timeout=15)
                with lock:
                    before = len(answers)
                deadline = time.monotonic() + 30
                while sum(code == "OK" for code, _ in answers[before:]) < 4:  # serving again, same gateway
                    assert time.monotonic() < deadline, Counter(code for code, _ in answers[before:])
                    time.sleep(0.1)
            finally:
                stop.set()
                for thread in users:
                    thread.join(90)
            assert not any(t.is_alive() for t in users), "a request got no answer"
            codes = Counter(code for code, _ in answers)
            assert len(answers) == sent, "every request sent got an answer"
            assert set(codes) <= {"OK", "TRITON_UNAVAILABLE"}, codes
            assert codes["TRITON_UNAVAILABLE"] >= 1 and answered_while_down > 4
            assert max(took for _, took in answers) < 30, "no request waited out a stalled Triton"
            # The gateway counted each request once: ours, plus the probe sent while Triton was down.
            counted = sum(metric(gateway.metrics, "toneserve_requests_total", rpc="Analyze", code=code,
                                 tenant="default") for code in ("OK", "TRITON_UNAVAILABLE"))
            assert counted == sent + 1, (counted, sent, codes)
            assert _analyze(stub)[0] == "OK" and back < 15
    finally:
        triton.stop()


def test_calls_given_up_cost_no_model_time(stack):
    """Calls whose deadline passes while they wait behind a long one are cancelled: the VAD runner
    answers them without running them, and Triton's statistics show the time they did not cost."""
    import asyncio

    import numpy as np
    from tritonclient.grpc import aio as triton
    from tritonclient.utils import InferenceServerException

    def inputs(seconds: float):
        n = int(seconds * 16000)
        wav = triton.InferInput("WAV", [1, n], "FP32")
        wav.set_data_from_numpy((0.1 * np.random.default_rng(0).standard_normal((1, n))).astype(np.float32))
        lens = triton.InferInput("WAV_LENS", [1, 1], "INT64")
        lens.set_data_from_numpy(np.array([[n]], np.int64))
        return [wav, lens]

    async def compute(client) -> tuple[int, int]:
        stats = (await client.get_inference_statistics("vad", as_json=True))["model_stats"][0]["inference_stats"]
        return int(stats["compute_infer"].get("count", 0)), int(stats["compute_infer"].get("ns", 0))

    async def measured(client, *calls) -> int:
        """Compute time the calls cost: Triton records it just after answering, so wait until it has."""
        count, before = await compute(client)
        await asyncio.gather(*calls)
        seen = await compute(client)
        for _ in range(50):
            await asyncio.sleep(0.2)
            now = await compute(client)
            if now == seen and now[0] > count:
                break
            seen = now
        return seen[1] - before

    async def given_up(client) -> str:
        await asyncio.sleep(0.2)  # queued behind the long call
        try:
            await client.infer("vad", inputs(300), client_timeout=0.3)
            return "answered"
        except InferenceServerException as error:
            return str(error.status())

    async def scenario() -> tuple[int, int, int, list[str]]:
        client = triton.InferenceServerClient(stack.triton_grpc)
        try:
            await client.infer("vad", inputs(1))  # warm
            one = await measured(client, client.infer("vad", inputs(300)))
            alone = await measured(client, client.infer("vad", inputs(600)))
            outcomes: list[str] = []

            async def collect():
                outcomes.extend(await asyncio.gather(*(given_up(client) for _ in range(6))))

            beside = await measured(client, client.infer("vad", inputs(600)), collect())
            return one, alone, beside, outcomes
        finally:
            await client.close()

    one, alone, beside, outcomes = asyncio.run(scenario())
    assert outcomes == ["StatusCode.DEADLINE_EXCEEDED"] * 6
    # Run, the six would have cost six times `one` on top of the long call; cancelled, next to nothing
    # (the margin is for a shared machine: the same call's compute time varies by tens of percent).
    assert beside - alone < 2 * one, (one, alone, beside)


def test_a_stalled_triton_holds_no_request_and_turns_health_not_serving(repository, tmp_path):
    """Triton frozen (SIGSTOP): a request without a deadline ends TRITON_UNAVAILABLE after the
    gateway's Triton timeout, health turns NOT_SERVING (the HTTP API's too: then 503 with Retry-After);
    thawed, the gateway serves again."""
    triton = EmbeddedTriton(repository, triton_ports(), log_path=tmp_path / "triton.log").start()
    http = f"http://127.0.0.1:{free_port()}"
    try:
        with gateway_process(triton.grpc_url, tmp_path / "gateway.log", "--triton-timeout", "5",
                             "--http-port", http.rsplit(":", 1)[1]) as gateway, \
                grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.AnalyzerStub(channel)
            assert _served(stub)
            os.killpg(triton.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                try:
                    stub.Analyze(pb.AnalyzeRequest(audio=CLIP))  # no deadline at all
                    code = "OK"
                except grpc.RpcError as error:
                    code = dict(error.trailing_metadata() or ()).get(ERROR_CODE_METADATA)
                assert code == "TRITON_UNAVAILABLE" and time.monotonic() - started < 15
                _wait_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING, timeout=15)
                assert http_call(f"{http}/v1/health")[::2] == (503, {"status": "NOT_SERVING"})
                status, headers, body = http_call(f"{http}/v1/analyze", CLIP)
                assert (status, body["code"]) == (503, "TRITON_UNAVAILABLE"), body
                assert int(headers["Retry-After"]) >= 1
            finally:
                os.killpg(triton.process.pid, signal.SIGCONT)
            _wait_health(channel, health_pb2.HealthCheckResponse.SERVING, timeout=15)
            assert http_call(f"{http}/v1/health")[::2] == (200, {"status": "SERVING"})
            assert _served(stub)
    finally:
        triton.stop()
