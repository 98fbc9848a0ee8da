"""Per-tenant audio quotas: fixed minute and day windows, a stable code and an exact retry hint."""
from __future__ import annotations

import pytest

from toneserve.contract import Code
from toneserve.gateway.quota import Allowance, QuotaExceeded, Quotas


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_tenant_over_its_minute_quota_is_refused_until_the_minute_ends():
    clock = Clock(60.0 * 16_667 + 20.0)  # 20 s into a minute
    quotas = Quotas({"acme": Allowance(per_minute=60.0), "globex": Allowance()}.__getitem__, clock)
    quotas.check("acme")
    quotas.charge("acme", 45.0)
    quotas.check("acme")  # 45 < 60: one more request may start
    quotas.charge("acme", 20.0)  # it went past the quota: charged in full
    with pytest.raises(QuotaExceeded) as error:
        quotas.check("acme")
    assert error.value.code is Code.QUOTA_EXCEEDED and error.value.code.status == "RESOURCE_EXHAUSTED"
    assert error.value.retry_after_ms == 40_000
    assert "65.0 s" in error.value.message and "minute" in error.value.message
    quotas.charge("globex", 10_000.0)  # no quota: never refused
    quotas.check("globex")
    clock.now += 40.0  # the next minute
    quotas.check("acme")
    assert quotas.usage("acme", "minute") == 0.0 and quotas.usage("acme", "day") == 65.0


def test_the_day_quota_counts_across_minutes_and_hints_the_end_of_the_utc_day():
    clock = Clock(86400.0 * 3 + 3600.0)  # 01:00 UTC
    quotas = Quotas(lambda tenant: Allowance(per_minute=100.0, per_day=150.0), clock)
    for _ in range(3):
        quotas.check("acme")
        quotas.charge("acme", 50.0)
        clock.now += 60.0
    with pytest.raises(QuotaExceeded) as error:
        quotas.check("acme")
    assert "day" in error.value.message
    assert error.value.retry_after_ms == (86400 - 3600 - 180) * 1000
    clock.now = 86400.0 * 4
    quotas.check("acme")


def test_nothing_is_charged_for_no_audio():
    quotas = Quotas(lambda tenant: Allowance(per_minute=0.0), Clock(0.0))
    quotas.charge("acme", 0.0)
    assert "acme" not in quotas.used


def test_the_sdk_does_not_wait_out_a_day_quota():
    from toneserve.client.errors import AnalyzeError
    from toneserve.client.retry import Deadline, RetryPolicy

    policy = RetryPolicy()
    minute = AnalyzeError("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "used up", retry_after=40.0)
    day = AnalyzeError("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "used up", retry_after=8 * 3600.0)
    assert policy.wait_before_retry(minute, 1, Deadline(None)) == 40.0
    assert policy.wait_before_retry(day, 1, Deadline(None)) is None  # the caller gets the error and its hint
