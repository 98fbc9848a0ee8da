"""What the gateway accepts from Triton: finite outputs, one value per label; and which timeout failed."""
from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from toneserve.contract import Code, ToneserveError
from toneserve.gateway.inference import _error, checked


def test_a_distribution_must_have_one_finite_value_per_label():
    good = np.array([0.2, 0.3, 0.5], np.float32)
    assert checked("emotion", "PROBS", good, 3) is good
    with pytest.raises(ToneserveError) as error:
        checked("emotion", "PROBS", good, 9)
    assert error.value.code is Code.INTERNAL and "9 labels" in error.value.message and "'emotion'" in error.value.message
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ToneserveError, match="non-finite"):
            checked("asr", "LANGUAGE_PROBS", np.array([0.5, bad], np.float32), 2)
    with pytest.raises(ToneserveError):
        checked("vad", "SPEECH_PROBS", np.float32(0.5), 1)  # a scalar has no labels axis
    assert checked("vad", "SPEECH_PROBS", np.zeros((2, 7), np.float32)).shape == (2, 7)  # no label set: finite only


def test_the_gateways_own_timeout_is_triton_unavailable_the_clients_deadline_exceeded():
    timeout = InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")
    assert _error(timeout).code is Code.DEADLINE_EXCEEDED
    stalled = _error(timeout, stalled=120.0)
    assert stalled.code is Code.TRITON_UNAVAILABLE and "120 s" in stalled.message
    gone = InferenceServerException("failed to connect", status="StatusCode.UNAVAILABLE")
    assert _error(gone).code is Code.TRITON_UNAVAILABLE


def test_a_models_failure_reaches_the_client_without_tritons_text(caplog):
    """Triton's message can quote a runner's traceback, naming the server's files: the log has it, not the client."""
    import asyncio

    from toneserve.gateway.inference import Inference

    text = 'Failed to process the request(s): ValueError\nAt:\n  /srv/models/asr/1/model.py(42): execute'

    class Failing:
        async def infer(self, *args, **kwargs):
            raise InferenceServerException(text, status="StatusCode.INTERNAL")

    async def call():
        inference = Inference("127.0.0.1:1")
        await inference.client.close()
        inference.client = Failing()  # type: ignore[assignment]
        await inference._infer("asr", [], ["TEXT"], "req-7", None)

    with pytest.raises(ToneserveError) as error:
        asyncio.run(call())
    assert error.value.code is Code.INTERNAL and "/srv/models" not in error.value.message
    assert "'asr'" in error.value.message and "req-7" in error.value.message
    assert "/srv/models/asr/1/model.py" in caplog.text


def test_an_unreachable_triton_reaches_the_client_without_its_addresses(caplog):
    """gRPC's text names the replicas' addresses (pod IPs and ports): the log has them, not the client."""
    import asyncio

    from toneserve.gateway.inference import Inference

    text = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.12.3.4:8001: Connection refused"

    class Gone:
        async def infer(self, *args, **kwargs):
            raise InferenceServerException(text, status="StatusCode.UNAVAILABLE")

    async def call():
        inference = Inference("127.0.0.1:1")
        await inference.client.close()
        inference.client = Gone()  # type: ignore[assignment]
        await inference._infer("emotion", [], ["PROBS"], "req-8", 0.1)  # too short for the retry once

    with pytest.raises(ToneserveError) as error:
        asyncio.run(call())
    assert error.value.code is Code.TRITON_UNAVAILABLE and "10.12.3.4" not in error.value.message
    assert "'emotion'" in error.value.message
    assert "10.12.3.4:8001" in caplog.text
