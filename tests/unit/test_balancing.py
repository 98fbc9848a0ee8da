"""The gateway's Triton channel balances per call over every replica (round robin over an address list or
a DNS name whose records change) and tries a call once more when its replica goes away mid-call.

The replicas here are small gRPC servers speaking Triton's KServe v2 protocol (the two-replica test with
real tritonservers is tests/stack/test_replicas.py), on 127.0.0.1 and 127.0.0.2 sharing one port."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from tritonclient.utils import InferenceServerException

from tests.support import LoopbackDns
from toneserve.contract import Code, ToneserveError
from toneserve.gateway.inference import _CHANNEL_OPTIONS, Inference, TritonUrlError, channel_target
from toneserve.triton import free_port, port_in_use


def test_channel_targets():
    assert channel_target("127.0.0.1:8001") == "127.0.0.1:8001"
    assert channel_target("triton:8001") == "triton:8001"  # every address the name has, round robin
    assert channel_target("10.0.0.1:8001, 10.0.0.2:8001") == "ipv4:10.0.0.1:8001,10.0.0.2:8001"
    assert channel_target("[::1]:8001,[fe80::1]:8001") == "ipv6:[::1]:8001,[fe80::1]:8001"
    for target in ("dns:///triton.ns.svc:8001", "dns://10.0.0.10:53/triton:8001", "ipv4:10.0.0.1:1,10.0.0.2:1"):
        assert channel_target(target) == target
    with pytest.raises(TritonUrlError, match="dns:///NAME:PORT"):
        channel_target("triton-0:8001,triton-1:8001")
    with pytest.raises(TritonUrlError, match="no port"):
        channel_target("10.0.0.1:8001,10.0.0.2:")
    with pytest.raises(TritonUrlError, match="IPv4 or all IPv6"):
        channel_target("10.0.0.1:8001,[::1]:8001")


def test_channel_keeps_tritonclients_own_options_and_balances():
    options = dict(_CHANNEL_OPTIONS)
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == \
        MAX_GRPC_MESSAGE_SIZE
    assert options["grpc.keepalive_time_ms"] == keepalive.keepalive_time_ms
    assert options["grpc.keepalive_timeout_ms"] == keepalive.keepalive_timeout_ms
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert options["grpc.dns_min_time_between_resolutions_ms"] <= 5000


# --- the retry, against a client whose failures the test chooses ---

def _failure(status: str) -> InferenceServerException:
    return InferenceServerException(msg=f"{status} happened", status=f"StatusCode.{status}")


class _Client:
    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.timeouts: list[float | None] = []
        self.delay = 0.0

    async def infer(self, model, inputs, outputs=None, request_id="", client_timeout=None):
        self.timeouts.append(client_timeout)
        await asyncio.sleep(self.delay)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _run(client: _Client, timeout: float | None = 30.0, call_timeout: float | None = None):
    async def call():
        inference = Inference("127.0.0.1:1", timeout)
        await inference.client.close()
        inference.client = client  # type: ignore[assignment]
        return inference, await inference._infer("vad", [], ["SPEECH_PROBS"], "r1", call_timeout)
    return asyncio.run(call())


def test_a_call_whose_replica_went_away_is_tried_once_more():
    client = _Client(_failure("UNAVAILABLE"), "answer")
    inference, result = _run(client)
    assert result == "answer" and inference.retried == 1 and len(client.timeouts) == 2
    assert client.timeouts[1] <= client.timeouts[0] <= 30.0  # the retry gets what is left of the same time


def test_only_once():
    client = _Client(_failure("UNAVAILABLE"), _failure("UNAVAILABLE"), "never")
    with pytest.raises(ToneserveError) as error:
        _run(client)
    assert error.value.code == Code.TRITON_UNAVAILABLE and client.outcomes == ["never"]


@pytest.mark.parametrize("status,code", [("DEADLINE_EXCEEDED", Code.DEADLINE_EXCEEDED),
                                         ("INVALID_ARGUMENT", Code.INTERNAL), ("INTERNAL", Code.INTERNAL)])
def test_other_failures_are_not_tried_again(status, code):
    client = _Client(_failure(status), "never")
    with pytest.raises(ToneserveError) as error:
        _run(client, timeout=None, call_timeout=10.0)
    assert error.value.code == code and client.outcomes == ["never"]


def test_no_retry_once_the_time_is_up():
    client = _Client(_failure("UNAVAILABLE"), "never")
    client.delay = 0.2  # the first attempt fails after the call's 0.1 s are spent
    with pytest.raises(ToneserveError):
        _run(client, timeout=None, call_timeout=0.1)
    assert client.outcomes == ["never"]


# --- real gRPC: replicas on 127.0.0.1 and 127.0.0.2 behind one port ---

REPLICA = r'''
import os, sys, threading, time
from concurrent import futures
import grpc
from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pb_grpc

address, hold, age, ready = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"

class Replica(pb_grpc.GRPCInferenceServiceServicer):
    def ModelInfer(self, request, context):
        os.write(1, b"call\n")  # one write: print() from two handler threads at once can give "callcall\n\n"
        time.sleep(hold)
        return pb.ModelInferResponse(model_name=request.model_name, id=address)

    def ServerReady(self, request, context):
        os.write(1, b"probe\n")
        return pb.ServerReadyResponse(ready=ready)

options = [("grpc.so_reuseport", 0)] + ([("grpc.max_connection_age_ms", age),
                                          ("grpc.max_connection_age_grace_ms", age)] if age else [])
server = grpc.server(futures.ThreadPoolExecutor(16), options=options)
pb_grpc.add_GRPCInferenceServiceServicer_to_server(Replica(), server)
server.add_insecure_port(address)
server.start()
print("ready", flush=True)
server.wait_for_termination()
'''


class Replica:
    """A process answering ModelInfer with its own address (after `hold` seconds); killed, it is gone
    as a crashed Triton is: no goodbye on its connections."""

    def __init__(self, host: str, port: int, hold: float = 0.0, age_ms: int = 0, ready: bool = True):
        self.address = f"{host}:{port}"
        self.process = subprocess.Popen([sys.executable, "-c", REPLICA, self.address, str(hold), str(age_ms),
                                         "1" if ready else "0"],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline() == "ready\n"
        self.calls = self.probes = 0
        threading.Thread(target=self._count, daemon=True).start()

    def _count(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.calls += line == "call\n"
            self.probes += line == "probe\n"

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def port():
    for _ in range(20):
        chosen = free_port()
        if not port_in_use("127.0.0.2", chosen):
            return chosen
    pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")


@pytest.fixture
def replicas():
    started: list[Replica] = []
    yield lambda *args, **kwargs: started.append(Replica(*args, **kwargs)) or started[-1]
    for replica in started:
        if replica.process.poll() is None:
            replica.kill()


async def _connected(inference: Inference, *replicas: Replica) -> None:
    """Probes until every replica has answered one: round robin picks among the connected replicas only."""
    started = time.monotonic()
    while not all(replica.probes for replica in replicas):
        await inference.ready(5)
        assert time.monotonic() - started < 10


async def _calls(inference: Inference, n: int, at_once: int = 1, timeout: float = 10.0) -> Counter:
    served: Counter = Counter()

    async def one(i: int) -> None:
        result = await inference._infer("vad", [], ["SPEECH_PROBS"], f"r{i}", timeout)
        served[result.get_response().id] += 1

    for start in range(0, n, at_once):
        await asyncio.gather(*(one(i) for i in range(start, min(start + at_once, n))))
    return served


def test_calls_are_spread_over_a_list_of_replicas(port, replicas):
    one, two = replicas("127.0.0.1", port), replicas("127.0.0.2", port)

    async def scenario() -> Counter:
        inference = Inference(f"127.0.0.1:{port},127.0.0.2:{port}", 10.0)
        try:
            await _connected(inference, one, two)
            return await _calls(inference, 40)
        finally:
            await inference.close()

    served = asyncio.run(scenario())
    assert served == {one.address: 20, two.address: 20}, served


def test_a_replica_added_behind_a_name_takes_calls(port, replicas):
    """The name's records grow mid-load: once Triton's connection age makes the channel look the name up
    again, the new replica takes its share."""
    one = replicas("127.0.0.1", port, age_ms=500)
    with LoopbackDns({"triton.test": ["127.0.0.1"]}) as dns:
        async def scenario() -> tuple[Counter, Counter, float]:
            inference = Inference(f"dns://{dns.address}/triton.test:{port}", 10.0)
            try:
                before = await _calls(inference, 10)
                two = replicas("127.0.0.2", port, age_ms=500)
                dns.set("triton.test", ["127.0.0.1", "127.0.0.2"])
                added = time.monotonic()
                after: Counter = Counter()
                while time.monotonic() - added < 15 and after[two.address] < 10:
                    after += await _calls(inference, 10)
                    await asyncio.sleep(0.05)
                return before, after, time.monotonic() - added
            finally:
                await inference.close()

        before, after, took = asyncio.run(scenario())
    assert before == {one.address: 10}
    assert after[f"127.0.0.2:{port}"] >= 10 and after[one.address] > 0, (after, took)


def test_a_call_on_a_replica_killed_mid_call_is_answered_by_another(port, replicas):
    slow, quick = replicas("127.0.0.1", port, hold=60.0), replicas("127.0.0.2", port)

    async def killed_mid_call() -> tuple[Counter, int, float, int]:
        inference = Inference(f"127.0.0.1:{port},127.0.0.2:{port}", 120.0)
        calls = []
        try:
            await _connected(inference, slow, quick)
            calls = [asyncio.ensure_future(_calls(inference, 1, timeout=90.0)) for _ in range(4)]
            # Round robin sends half of them to each replica: the quick one answers its two at once, the
            # other two are in progress on the slow one (which holds them far longer than this waits).
            started = time.monotonic()
            while sum(call.done() for call in calls) < 2 or slow.calls < 2:
                assert time.monotonic() - started < 60, (slow.calls, quick.calls)
                await asyncio.sleep(0.05)
            in_progress = sum(not call.done() for call in calls)
            killed = time.monotonic()
            slow.kill()
            served = sum(await asyncio.gather(*calls), Counter())
            return served, inference.retried, time.monotonic() - killed, in_progress
        finally:
            for call in calls:  # on a failure above, none is left behind unretrieved
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            await inference.close()

    served, retried, took, in_progress = asyncio.run(killed_mid_call())
    assert in_progress == 2 and served == {quick.address: 4} and retried == 2 and took < 10, \
        (in_progress, served, retried, took)


def test_ready_while_one_replica_is_and_not_when_none_is(port, replicas):
    """Readiness through the balanced channel: one replica not ready (loading, or gone) is not an outage."""
    loading, serving = replicas("127.0.0.1", port, ready=False), replicas("127.0.0.2", port)

    async def scenario() -> tuple[list[bool], list[bool]]:
        inference = Inference(f"127.0.0.1:{port},127.0.0.2:{port}", 10.0)
        try:
            await _connected(inference, loading, serving)
            both = [await inference.ready(5) for _ in range(10)]
            serving.kill()
            await asyncio.sleep(0.5)
            alone = [await inference.ready(5) for _ in range(3)]
            return both, alone
        finally:
            await inference.close()

    both, alone = asyncio.run(scenario())
    assert all(both) and not any(alone), (both, alone)
