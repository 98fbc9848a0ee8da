"""Two embedded Tritons as two replicas behind one DNS name (a DNS server on loopback, the replicas on
127.0.0.1 and 127.0.0.2 sharing one port), one gateway with --triton-url dns://DNS/NAME:PORT, under load:
the name first lists one replica, which serves everything; the second, added to the name mid-load,
takes its share of the calls; the first, killed mid-load, loses no request: each one sent gets exactly
one answer, its result, the calls its replica lost being answered by the other."""
from __future__ import annotations

import threading
import time
from collections import Counter

import grpc
import pytest

from tests.support import LoopbackDns, gateway_process
from toneserve import contract
from toneserve.contract import ERROR_CODE_METADATA
from toneserve.samples import speechlike, wav_bytes
from toneserve.triton import EmbeddedTriton, TritonPorts, free_port, port_in_use
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

CLIP = wav_bytes(speechlike(2.0, seed=7), 16000)
NAME = "triton.replicas.test"
ENSEMBLES = (contract.VAD, contract.EMOTION, contract.ASR)


def _calls_served(triton: EmbeddedTriton) -> int:
    """Inference requests this replica's ensembles have answered."""
    from tritonclient.grpc import InferenceServerClient

    client = InferenceServerClient(triton.grpc_url)
    try:
        stats = client.get_inference_statistics(as_json=True)["model_stats"]
    finally:
        client.close()
    return sum(int(model.get("inference_count", 0)) for model in stats if model["name"] in ENSEMBLES)


def _shared_port() -> int:
    for _ in range(20):
        port = free_port()
        if not port_in_use("127.0.0.2", port):
            return port
    pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")


def _freeze(triton: EmbeddedTriton) -> None:
    """SIGSTOP to the server and its stubs: the calls routed to it from now on wait, in progress, until it dies.
    (On the tiny models a call lasts milliseconds, too short to kill a replica inside one by timing alone.)"""
    import os
    import signal

    assert triton.process is not None
    os.killpg(triton.process.pid, signal.SIGSTOP)


def _kill(triton: EmbeddedTriton) -> None:
    """A crash, not a shutdown: SIGKILL to the server and its stubs (frozen or not), nothing drains."""
    import os
    import signal

    process, triton.process = triton.process, None
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def test_replicas_behind_one_name_share_calls_and_survive_a_kill(repository, tmp_path):
    grpc_port = _shared_port()

    def replica(loopback: str) -> EmbeddedTriton:
        # Connections end after 2 s (calls in progress get as long again): the gateway looks the name up anew.
        ports = TritonPorts(free_port(), grpc_port, free_port())
        return EmbeddedTriton(repository, ports, log_path=tmp_path / f"triton-{loopback}.log", loopback=loopback,
                              max_connection_age=2.0)

    first, second = replica("127.0.0.1"), replica("127.0.0.2")
    starting = threading.Thread(target=second.start)  # ready before it is named, as a pod is
    starting.start()
    first.start()
    starting.join()
    assert second.process is not None, "the second replica did not start"
    figures: dict[str, object] = {}
    try:
        with LoopbackDns({NAME: ["127.0.0.1"]}) as dns, \
                gateway_process(f"dns://{dns.address}/{NAME}:{grpc_port}", tmp_path / "gateway.log") as gateway, \
                grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.AnalyzerStub(channel)
            answers: list[str] = []
            sent = 0
            lock = threading.Lock()
            stop = threading.Event()

            def user() -> None:
                nonlocal sent
                while not stop.is_set():
                    with lock:
                        sent += 1
                    try:
                        stub.Analyze(pb.AnalyzeRequest(audio=CLIP), timeout=60)
                        code = "OK"
                    except grpc.RpcError as error:
                        code = dict(error.trailing_metadata() or ()).get(ERROR_CODE_METADATA,
                                                                         f"grpc:{error.code().name}")
                    with lock:
                        answers.append(code)

            def wait_answers(n: int, timeout: float) -> None:
                until, target = time.monotonic() + timeout, len(answers) + n
                while len(answers) < target:
                    assert time.monotonic() < until, Counter(answers)
                    assert all(t.is_alive() for t in users)
                    time.sleep(0.05)

            warm = _calls_served(second)  # its own warm-up calls, if the repository has any
            users = [threading.Thread(target=user) for _ in range(4)]
            for thread in users:
                thread.start()
            try:
                wait_answers(6, timeout=60)  # one replica named: it serves every call
                alone = (_calls_served(first), _calls_served(second) - warm)
                assert alone[0] > 0 and alone[1] == 0, alone
                dns.set(NAME, ["127.0.0.1", "127.0.0.2"])  # a replica added mid-load
                added = time.monotonic()
                while _calls_served(second) == warm:
                    assert time.monotonic() - added < 20, "the added replica got no call"
                    time.sleep(0.2)
                took = time.monotonic() - added
                shared = (_calls_served(first), _calls_served(second))
                wait_answers(12, timeout=60)
                after = (_calls_served(first), _calls_served(second))
                spread = (after[0] - shared[0], after[1] - shared[1])
                assert min(spread) >= sum(spread) / 4, f"calls per replica once both are named: {spread}"
                with lock:
                    before_kill = len(answers)
                _freeze(first)  # mid-load: each user's next call routed to it waits there
                frozen, seen = time.monotonic(), len(answers)
                quiet_since = frozen
                while time.monotonic() - quiet_since < 1.5:  # no answer for 1.5 s: every user waits on it
                    assert time.monotonic() - frozen < 30, "no call was routed to the frozen replica"
                    if len(answers) != seen:
                        seen, quiet_since = len(answers), time.monotonic()
                    time.sleep(0.05)
                _kill(first)
                killed_with = _calls_served(second)
                wait_answers(8, timeout=60)  # the survivor serves on, the lost calls included
                figures.update(alone=alone, new_replica_first_call_s=round(took, 1), both=spread,
                               answered_before_kill=before_kill,
                               survivor_calls_after_kill=_calls_served(second) - killed_with)
            finally:
                stop.set()
                for thread in users:
                    thread.join(90)
            assert not any(t.is_alive() for t in users), "a request got no answer"
            codes = Counter(answers)
            retried = gateway.log.read_text().count("trying another Triton replica")
            figures.update(sent=sent, answered=len(answers), codes=dict(codes), lost=sent - codes["OK"],
                           calls_retried=retried)
            print(f"\nreplicas: {figures}")
            assert len(answers) == sent, "every request sent got exactly one answer"
            assert codes == {"OK": sent}, f"a request was lost to the killed replica: {codes}"
            assert retried >= 1, "the replica was killed with no call in progress on it"
    finally:
        first.stop()
        second.stop()
