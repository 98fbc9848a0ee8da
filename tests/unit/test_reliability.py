"""The reliability benchmark's bookkeeping: what counts as lost, and its defaults (the documented run)."""
from __future__ import annotations

import json

import pytest

from toneserve.loadtest import reliability
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


def test_the_result_file_gets_its_folder_before_the_run(tmp_path, monkeypatch, capsys):
    class Run:  # the run itself (minutes, a Triton) is not what is tested
        def __init__(self, args, folder):
            pass

        def run(self):
            return {"lost": 0, "steady": {"answered": 3}}

        def serve(self, run):
            return run()

    monkeypatch.setattr(reliability, "Bench", Run)
    out = tmp_path / "new" / "folder" / "fair.json"
    assert reliability.main(["--repository", "r", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["steady"] == {"answered": 3}
    with pytest.raises(SystemExit):
        reliability.main(["--repository", "r", "--out", str(tmp_path)])
    assert "is a folder" in capsys.readouterr().err
