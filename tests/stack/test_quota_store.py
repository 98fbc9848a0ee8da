"""Tenant quotas shared by gateway replicas through a real redis-server (--quota-store), against the session's
Triton: what one gateway charged, another refuses; and Redis killed mid-load (SIGKILL), then restarted on
the same port, without one request going unanswered or failing."""
from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.stack.test_quota import ACME, analyze
from tests.support import gateway_process, metric, redis_server
from toneserve.samples import speechlike, wav_bytes
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc


def wait_for(condition, within: float = 10.0, what: str = "the condition"):
    deadline = time.monotonic() + within
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} not met within {within} s"
        time.sleep(0.05)
    return value


def test_two_gateways_share_a_tenants_minute_quota_through_redis(stack, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ACME} acme seconds_per_minute=3\n")
    speech = wav_bytes(speechlike(3.0, seed=2), 16000)
    with contextlib.ExitStack() as gateways, redis_server(tmp_path) as redis:
        store = ("--api-keys", str(keys), "--quota-store", redis.url)
        one = gateways.enter_context(gateway_process(stack.triton_grpc, tmp_path / "one.log", *store))
        two = gateways.enter_context(gateway_process(stack.triton_grpc, tmp_path / "two.log", *store))
        alone = gateways.enter_context(gateway_process(stack.triton_grpc, tmp_path / "alone.log",
                                                       "--api-keys", str(keys)))
        stubs = {name: pb_grpc.AnalyzerStub(gateways.enter_context(grpc.insecure_channel(g.address)))
                 for name, g in (("one", one), ("two", two), ("alone", alone))}
        assert metric(one.metrics, "toneserve_quota_store_up") == 1
        if 60 - time.time() % 60 < 30:  # all of it within one UTC minute: the count starts again at the next
            time.sleep(60 - time.time() % 60 + 0.5)
        minute = int(time.time() // 60)
        client = redis.client()
        assert analyze(stubs["one"], speech, ACME)[0] == "OK"  # 0 s used of 3: admitted, charged 3 s
        key = f"toneserve:quota:acme:m:{minute}"
        assert float(wait_for(lambda: client.get(key), what="the charge in Redis")) == pytest.approx(3.0)
        assert 60 < client.ttl(key) <= 120  # the minute's end plus a minute of grace
        assert float(client.get(f"toneserve:quota:acme:d:{int(time.time() // 86400)}")) == pytest.approx(3.0)
        code, trailers = analyze(stubs["two"], speech, ACME)  # two served nothing, yet refuses: one's 3 s
        assert code == "QUOTA_EXCEEDED", code
        assert 0 < int(trailers["grpc-retry-pushback-ms"]) <= (60 - time.time() % 60) * 1000 + 1000
        assert analyze(stubs["one"], speech, ACME)[0] == "QUOTA_EXCEEDED"
        # A gateway without the store counts alone: the same tenant, the same minute, admitted.
        assert analyze(stubs["alone"], speech, ACME)[0] == "OK"
        assert float(client.get(key)) == pytest.approx(3.0)  # and it charged nothing to the store
        client.close()
        assert metric(two.metrics, "toneserve_quota_store_fallbacks_total", op="check") == 0
        assert "toneserve_quota_store_up" not in urlopen_text(alone.metrics)  # no store, no gauge


def urlopen_text(url: str) -> str:
    import urllib.request
    return urllib.request.urlopen(url, timeout=10).read().decode()


def test_redis_killed_mid_load_and_restarted_nothing_lost(stack, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ACME} acme seconds_per_day=1000000\n")  # a quota, so admission reads the store
    clips = [wav_bytes(speechlike(1.0 + 0.5 * i, seed=i), 16000) for i in range(3)]
    log = tmp_path / "gateway.log"
    with redis_server(tmp_path) as redis, \
            gateway_process(stack.triton_grpc, log, "--api-keys", str(keys), "--quota-store", redis.url) as gateway, \
            grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        answers: list[str] = []
        stop = threading.Event()

        def client(index: int) -> None:
            n = 0
            while not stop.is_set():
                answers.append(analyze(stub, clips[(index + n) % len(clips)], ACME)[0])  # timeout 60: no hang
                n += 1

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            load = [pool.submit(client, i) for i in range(4)]
            wait_for(lambda: len(answers) >= 8, 60, "answers before the kill")
            redis.kill()
            before = len(answers)
            wait_for(lambda: metric(gateway.metrics, "toneserve_quota_store_up") == 0 and len(answers) >= before + 8,
                     30, "the store seen down, and answers after it")
            serving = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert serving.status == health_pb2.HealthCheckResponse.SERVING
            assert metric(gateway.metrics, "toneserve_quota_store_fallbacks_total", op="check") > 0
            assert metric(gateway.metrics, "toneserve_quota_store_fallbacks_total", op="charge") > 0
            redis.start()  # the same port, empty
            wait_for(lambda: metric(gateway.metrics, "toneserve_quota_store_up") == 1, 15, "the store seen back")
            after = len(answers)
            wait_for(lambda: len(answers) >= after + 8, 60, "answers after the restart")
            stop.set()
            for future in load:
                future.result()  # a client that raised (no answer, a hang past its timeout) fails here
        assert answers and set(answers) == {"OK"}, {code: answers.count(code) for code in set(answers)}
        day = f"toneserve:quota:acme:d:{int(time.time() // 86400)}"
        client = redis.client()
        charged = float(wait_for(lambda: client.get(day), what="charges in the restarted Redis"))
        client.close()
        # The restarted Redis started empty: what it holds was charged during the outage (added when it
        # came back) or after; at least the requests answered since it was seen back.
        assert charged >= 8 * 1.0
        assert metric(gateway.metrics, "toneserve_requests_total", rpc="Analyze", code="INTERNAL",
                      tenant="acme") == 0
    text = log.read_text()
    assert text.count("is unreachable") == 1, text
    assert text.count("is back") == 1, text
