"""The gateway's Triton call slots follow what the real Triton computes of each model at once, read over gRPC from
the server's configs; here checked against the repository's config files, parsed on their own."""
from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import model_config_pb2

from tests.support import gateway_process
from toneserve import contract


def _config(repository: Path, model: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse((repository / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _at_once(repository: Path, model: str) -> int:
    """From the files: the busiest step's instances x streams."""
    config = _config(repository, model)
    steps = [_config(repository, step.model_name) for step in config.ensemble_scheduling.step] or [config]
    return max(sum(group.count or 1 for group in step.instance_group)
               * int(step.parameters[contract.STREAMS].string_value if contract.STREAMS in step.parameters else 1)
               for step in steps)


def test_each_models_slots_are_what_the_served_repository_computes_at_once(stack, repository, tmp_path):
    from toneserve.gateway.inference import Inference

    async def load() -> dict[str, int]:
        inference = Inference(stack.triton_grpc)
        try:
            await inference.load()
            assert inference.replicas == 1
            return {name: info.concurrency for name, info in inference.models.items()}
        finally:
            await inference.close()

    read = asyncio.run(load())
    expected = {name: _at_once(repository, name) for name in read}
    assert read == expected and set(read) >= {contract.EMOTION, contract.ASR, contract.VAD}
    assert all(value >= 1 for value in read.values())
    # The emotion model runs its streams inside one instance: they count.
    emotion_step = _config(repository, contract.EMOTION).ensemble_scheduling.step[0].model_name
    streams = _config(repository, emotion_step).parameters[contract.STREAMS].string_value
    assert read[contract.EMOTION] >= int(streams) > 1

    with gateway_process(stack.triton_grpc, tmp_path / "gateway.log") as gateway:
        page = urllib.request.urlopen(gateway.metrics, timeout=10).read().decode()
    families = list(text_string_to_metric_families(page))
    served = {sample.labels["model"]: sample.value for family in families
              if family.name == "toneserve_triton_call_slots" for sample in family.samples}
    assert served == expected
    # On CPUs asr and emotion share a budget of runs: what the busiest of them computes at once.
    budget = [sample.value for family in families if family.name == "toneserve_triton_run_budget"
              for sample in family.samples]
    assert budget == [max(expected[contract.ASR], expected[contract.EMOTION])]
