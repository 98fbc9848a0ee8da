"""Thresholds and limits: request overrides, ranges, and the README's tables matching the code."""
from __future__ import annotations

import re
from dataclasses import fields
from fractions import Fraction
from pathlib import Path

import pytest

from toneserve import contract
from toneserve.contract import ToneserveError
from toneserve.gateway import thresholds
from toneserve.gateway.settings import Settings
from toneserve.v1 import toneserve_pb2 as pb

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_table(first_header: str) -> dict[str, str]:
    """The first column -> the second of the README table whose header starts with `first_header`."""
    block = README.split(f"| {first_header} |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in block.splitlines()[2:]]
    return {cells[0].strip().strip("`"): cells[1].strip() for cells in rows}


def test_readme_lists_every_threshold_with_its_default():
    table = readme_table("threshold")
    assert set(table) == {f.name for f in fields(thresholds.Thresholds)}
    for name, written in table.items():
        assert float(Fraction(written)) == pytest.approx(getattr(thresholds.DEFAULTS, name)), name


def test_readme_states_the_limits_the_code_has():
    table = readme_table("limit")
    defaults = Settings()
    mib = lambda text: int(re.fullmatch(r"(\d+) MiB", text)[1]) * 2**20
    assert mib(table["`Analyze` request size".strip("`")]) == defaults.max_message_bytes
    assert mib(table["`AnalyzeUpload` size".strip("`")]) == defaults.limits.max_bytes
    assert float(table["recording length"].split()[0]) * 60 == defaults.limits.max_seconds
    assert int(table["channels"]) == defaults.limits.max_channels
    assert int(table["requests analysed at once"]) == defaults.max_requests
    assert table["requests of one tenant at once"] == "no cap" and defaults.max_requests_per_tenant is None
    assert float(table["shortest recording"].split()[0]) == defaults.limits.min_seconds
    low, _, high, _ = table["source sample rate"].split()
    assert (int(low), int(high)) == (defaults.limits.min_rate, defaults.limits.max_rate)
    assert float(next(v for k, v in table.items() if k.startswith("samples per request"))) == defaults.limits.max_samples
    minutes = next(v for k, v in table.items() if k.startswith("request time"))
    assert float(minutes.split()[0]) * 60 == defaults.max_request_seconds
    assert float(next(v for k, v in table.items() if k.startswith("time without a message")).split()[0]) \
        == defaults.chunk_timeout_seconds
    assert float(table["whole `AnalyzeUpload".strip("`")].split()[0]) * 60 == defaults.upload_timeout_seconds
    assert mib(next(v for k, v in table.items() if "buffered" in k)) == defaults.live_buffer_bytes
    assert table["request_id"].startswith(f"{contract.MAX_REQUEST_ID_CHARS} characters")
    assert int(next(v for k, v in table.items() if k.startswith("speakers told apart"))) == defaults.max_speakers
    assert table["channel role"].startswith(f"{contract.MAX_ROLE_CHARS} printable")


def test_request_overrides_and_ranges():
    resolved = thresholds.from_proto(pb.Thresholds(min_silence_ms=800, text_weight=0.2))
    assert resolved.min_silence_ms == 800 and resolved.text_weight == 0.2
    assert resolved.vad_threshold == thresholds.DEFAULTS.vad_threshold
    echoed = thresholds.to_proto(resolved)
    assert all(echoed.HasField(f.name) for f in fields(thresholds.Thresholds))
    for name, (low, high) in thresholds.RANGES.items():
        with pytest.raises(ToneserveError, match=name):
            thresholds.from_proto(pb.Thresholds(**{name: high + 1}))
        thresholds.from_proto(pb.Thresholds(**{name: low}))  # the bounds themselves are allowed
