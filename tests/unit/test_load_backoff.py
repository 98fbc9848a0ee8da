"""The waits between a gateway's tries to load from Triton (gateway/triton_watch.py), and the tries themselves."""
from __future__ import annotations

import asyncio
import random

import pytest

from toneserve.gateway import triton_watch
from toneserve.gateway.triton_watch import FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS, backoff, load_until_ready


def test_backoff_doubles_to_its_cap_with_jitter():
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** attempt)
        draws = [backoff(attempt, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in draws), attempt
        assert max(draws) - min(draws) > ceiling / 4, attempt  # jittered, not one value
    assert backoff(10_000, rng=rng) <= MAX_RETRY_SECONDS


def test_load_is_tried_again_until_it_succeeds_and_a_stuck_try_is_given_up(monkeypatch):
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(triton_watch.asyncio, "sleep", no_wait)
    tries: list[str] = []

    async def load() -> None:
        tries.append("try")
        if len(tries) == 1:
            raise ConnectionError("refused")
        if len(tries) == 2:
            await real_sleep(10)  # a Triton that never answers: given up after attempt_seconds

    failures: list[int] = []
    failed = asyncio.run(load_until_ready(load, "Triton", 0.05, lambda: failures.append(1)))
    assert (failed, len(tries), len(failures)) == (2, 3, 2)
    assert FIRST_RETRY_SECONDS / 2 <= waits[0] <= FIRST_RETRY_SECONDS <= waits[1] <= 2 * FIRST_RETRY_SECONDS


def test_cancelling_the_tries_ends_them():
    async def scenario() -> None:
        async def load() -> None:
            raise ConnectionError("refused")

        task = asyncio.create_task(load_until_ready(load, "Triton", 1.0))
        await asyncio.sleep(0.05)  # asleep in its first wait (0.5 s or more)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 2))
