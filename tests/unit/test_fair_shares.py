"""A request's shares of the gateway: each Triton call waits in its own model's fair pool, its CPU work in the CPU
pool (a live stream's reads excepted), and the pools are sized from what Triton computes at once."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.unit.test_pipeline import LOUD, RATE, FakeBackend, recording
from toneserve import contract
from toneserve.gateway.calls import TritonCalls
from toneserve.gateway.fair_queue import FairPools, FairSlots
from toneserve.gateway.inference import Inference, replica_count
from toneserve.gateway.pipeline import Analysis
from toneserve.gateway.settings import Settings
from toneserve.gateway.sources import InMessage
from toneserve.samples import wav_bytes
from toneserve.v1 import toneserve_pb2 as pb


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_each_backend_call_takes_a_slot_of_its_own_model():
    async def scenario():
        pools = FairPools(lambda model: 1)
        calls = TritonCalls(pools.tenant("t"), "r", None)
        backend = FakeBackend()
        held = pools.tenant("other")[contract.EMOTION]
        await held.__aenter__()  # emotion2vec's one slot is taken
        emotion = asyncio.create_task(calls(backend.emotion, np.zeros(RATE, np.float32)))
        await _settle()
        assert not emotion.done() and pools.waiting("t") == 1
        text = await calls(backend.sentiment, ["fine"])  # another model: not held up
        assert len(text[1]) == 1
        await held.__aexit__(None, None, None)
        await asyncio.wait_for(emotion, 5)
        assert set(pools.pools) == {contract.EMOTION, contract.TEXT_SENTIMENT}
    asyncio.run(scenario())


def _request(cpu: FairSlots) -> tuple[Analysis, bytes]:
    calls = TritonCalls(FairPools(lambda model: 64).tenant("t"), "r", None, cpu=cpu.tenant("t"))
    audio = wav_bytes(recording(3.0, [[(0.5, 2.5, LOUD)]]), RATE)
    return Analysis(FakeBackend(), Settings(), calls, pb.AnalyzeRequest()), audio


def test_decoding_and_segment_work_wait_for_a_cpu_slot():
    async def scenario():
        cpu = FairSlots(1)
        analysis, audio = _request(cpu)
        await cpu.acquire("other")  # another tenant's CPU work holds the gateway's one core
        run = asyncio.create_task(analysis.run(InMessage(audio)))
        await asyncio.sleep(0.3)
        assert not run.done() and cpu.waiting("t") == 1  # the recording is not even opened
        cpu.release()
        response = await asyncio.wait_for(run, 30)
        assert len(response.segments) == 1 and cpu.free == 1
    asyncio.run(scenario())


def test_a_live_streams_reads_hold_no_cpu_slot_while_they_wait_for_the_client():
    from toneserve.gateway.live import LiveAudio

    async def scenario():
        cpu = FairSlots(1)
        analysis, audio = _request(cpu)
        source = LiveAudio(10**8, chunk_timeout=None)

        free_while_waiting = []

        async def chunks():
            yield pb.UploadRequest(chunk=audio[:len(audio) // 2])
            await asyncio.sleep(0.5)  # the client is slow: the decoder waits for it
            free_while_waiting.append(cpu.free)
            yield pb.UploadRequest(chunk=audio[len(audio) // 2:])

        source.start(chunks())
        response = await asyncio.wait_for(analysis.run(source), 30)
        assert len(response.segments) == 1
        assert free_while_waiting == [1], "a read waiting for the client held the CPU slot"
    asyncio.run(scenario())


@pytest.mark.parametrize(("target", "count"), [
    ("ipv4:10.0.0.1:8001,10.0.0.2:8001,10.0.0.3:8001", 3),
    ("ipv6:[::1]:8001", 1),
    ("127.0.0.1:8001", 1),
    ("localhost:8001", 1),  # 127.0.0.1 and ::1 are one server
    ("dns:///localhost:8001", 1),
    ("unix:/run/triton.sock", 1),
    ("dns://10.0.0.53/triton:8001", 1),  # its own DNS server: not looked up here
    ("no-such-host.invalid:8001", 1),
])
def test_the_triton_replicas_a_target_reaches(target, count):
    assert replica_count(target) == count


class _Configs:
    """tritonclient's get_model_config(as_json=True) over a few configs."""

    def __init__(self, configs: dict[str, dict]):
        self.configs = configs

    async def get_model_config(self, name: str, as_json: bool = False) -> dict:
        return {"config": self.configs[name]}


def test_a_models_slots_are_the_runs_its_busiest_step_computes_at_once_and_on_a_gpu_their_rows():
    heavy = {"max_batch_size": 8, "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
             "parameters": {contract.STREAMS: {"string_value": "2"}}}
    light = {"max_batch_size": 8, "instance_group": [{"count": 1, "kind": "KIND_CPU"}]}
    ensemble = {"max_batch_size": 8, "ensemble_scheduling": {"step": [{"model_name": "front"},
                                                                      {"model_name": "encoder"}]}}
    gpu = {"max_batch_size": 4, "instance_group": [{"count": 2, "kind": "KIND_GPU"}, {"count": 1}]}

    async def scenario():
        inference = Inference("127.0.0.1:1")
        try:
            inference.client = _Configs({"front": light, "encoder": heavy})  # type: ignore[assignment]
            assert await inference._concurrency(ensemble) == (2, False)  # 1 instance x 2 streams, whatever its batch
            assert await inference._concurrency(light) == (1, False)
            assert await inference._concurrency(gpu) == (12, True)  # 3 instances x a batch of 4: on a GPU, rows count
            assert await inference._concurrency({"instance_group": [{"count": 2}]}) == (2, False)
        finally:
            inference.client = None  # type: ignore[assignment]
    asyncio.run(scenario())


def test_the_service_sizes_each_models_pool_from_the_backend_and_the_replicas():
    from dataclasses import replace

    from toneserve.gateway.service import UNKNOWN_MODEL_SLOTS, AnalyzerService

    async def scenario():
        backend = FakeBackend()
        backend.models[contract.ASR] = replace(backend.models[contract.ASR], concurrency=16)
        service = AnalyzerService(backend, Settings())
        assert service._model_slots(contract.ASR) == 16
        assert service._model_slots(contract.EMOTION) == UNKNOWN_MODEL_SLOTS  # the config does not say
        assert service.triton_slots[contract.ASR].capacity == 16
        backend.replicas = 3  # the target resolves to three Triton replicas now
        assert service.resize_slots()[contract.ASR] == 48 and service.triton_slots[contract.ASR].capacity == 48
        fixed = AnalyzerService(backend, Settings(max_inflight=4, cpu_slots=3))
        assert fixed._model_slots(contract.ASR) == 4 and fixed.cpu_slots.capacity == 3
    asyncio.run(scenario())


def test_a_config_file_counts_its_runs_as_the_gateway_counts_triton_json(tmp_path):
    """compute_bound.instances reads config.pbtxt files; contract.concurrency takes either form alike."""
    from toneserve.loadtest.compute_bound import instances

    files = {"emotion2vec": 'instance_group [{ count: 1 kind: KIND_CPU }]\n'
                            f'parameters {{ key: "{contract.STREAMS}" value: {{ string_value: "2" }} }}\n',
             "sensevoice_encoder": 'instance_group [{ count: 3 kind: KIND_CPU }]\n'}
    for name, text in files.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\nmax_batch_size: 8\n{text}')
    assert instances(tmp_path) == 3  # the busier: 3 instances x 1 stream, over 1 x 2
    assert contract.concurrency({"instance_group": [{"count": 1}],
                                 "parameters": {contract.STREAMS: {"string_value": "2"}}}) == 2
    assert contract.concurrency({}) == 1


def test_the_audio_models_share_a_budget_of_runs_on_cpus_and_none_on_a_gpu():
    from dataclasses import replace

    from toneserve.gateway.service import BUDGET_MODELS, AnalyzerService

    async def scenario():
        backend = FakeBackend()
        backend.models[contract.ASR] = replace(backend.models[contract.ASR], concurrency=2)
        backend.models[contract.EMOTION] = replace(backend.models[contract.EMOTION], concurrency=3)
        service = AnalyzerService(backend, Settings())
        assert BUDGET_MODELS == {contract.ASR, contract.EMOTION}
        assert service._run_budget() == 3  # the busiest of the two, on one replica
        service.triton_slots[contract.VAD]
        assert service.triton_slots.budget is None  # made with the first pool that shares it
        assert service.triton_slots[contract.ASR].budget is service.triton_slots[contract.EMOTION].budget
        assert service.triton_slots.budget is not None and service.triton_slots.budget.capacity == 3
        assert service.triton_slots[contract.VAD].budget is None
        backend.replicas = 2
        assert service.resize_slots()["asr + emotion together"] == 6 and service.triton_slots.budget.capacity == 6
        assert service.metrics.triton_run_budget._value.get() == 6
        assert AnalyzerService(backend, Settings(max_triton_runs=5))._run_budget() == 5
        assert AnalyzerService(backend, Settings(max_triton_runs=0))._run_budget() is None
        backend.models[contract.EMOTION] = replace(backend.models[contract.EMOTION], gpu=True)
        assert AnalyzerService(backend, Settings())._run_budget() is None  # a GPU: no such budget
        with pytest.raises(ValueError, match="max_triton_runs"):
            Settings(max_triton_runs=-1)
    asyncio.run(scenario())
