"""The reliability benchmark's bookkeeping: what counts as lost, and its defaults (the documented run)."""
from __future__ import annotations

from toneserve.loadtest.reliability import Tally, parser


def test_a_request_sent_and_never_answered_is_lost():
    tally = Tally()
    tally.sent = 5
    tally.answered.update({"OK": 3, "TRITON_UNAVAILABLE": 1})
    tally.latencies.extend([0.1, 0.2, 0.3])
    summary = tally.summary()
    assert summary["lost"] == 1 and summary["answered"] == 4 and summary["ok"] == 3
    assert summary["failed_by_code"] == {"TRITON_UNAVAILABLE": 1}
    assert summary["p50_ms"] == 200.0 and summary["p95_ms"] == 290.0  # linear between 200 and 300
    assert Tally().summary()["p95_ms"] is None


def test_the_defaults_are_the_documented_run_and_gateway_flags_pass_through():
    args = parser().parse_args(["--repository", "r", "--", "--max-triton-calls", "4"])
    assert (args.users, args.duration, args.kills, args.noisy_factor) == (4, 600.0, 2, 4)
    assert args.gateway_flags == ["--max-triton-calls", "4"]
