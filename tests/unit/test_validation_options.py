"""A request's options are checked before its audio: the request id and roles of the issue's reports."""
from __future__ import annotations

import pytest

from toneserve.contract import Code, ToneserveError
from toneserve.gateway.options import check
from toneserve.gateway.settings import Settings
from toneserve.v1 import toneserve_pb2 as pb


def problem(**fields) -> ToneserveError:
    with pytest.raises(ToneserveError) as error:
        check(pb.AnalyzeRequest(**fields), Settings())
    assert error.value.code is Code.INVALID_ARGUMENT
    return error.value


@pytest.mark.parametrize("request_id", ["réunion-7", "x" * (1 << 20), "a b", "id\n", "a" * 65, "ïd"])
def test_request_ids_outside_the_safe_set_are_refused(request_id):
    assert "request_id" in problem(request_id=request_id).detail


@pytest.mark.parametrize("request_id", ["", "reunion-7", "a" * 64, "call:2026-11-29T17.05_3"])
def test_safe_request_ids_pass(request_id):
    check(pb.AnalyzeRequest(request_id=request_id), Settings())


def test_roles_are_short_printable_and_no_more_than_the_channels():
    assert "64" in problem(channel_roles={0: "r" * (1 << 20)}).detail  # 1 MiB, copied into every segment
    assert "printable" in problem(channel_roles={0: "agent\x00"}).detail
    assert "printable" in problem(channel_roles={0: "line\nbreak"}).detail
    assert "at most 8" in problem(channel_roles={c: f"r{c}" for c in range(9)}).detail
    assert "channel_roles" in problem(channel_roles={-1: "agent"}).detail
    assert "channel_roles" in problem(channel_roles={8: "agent"}).detail
    check(pb.AnalyzeRequest(channel_roles={0: "agent", 1: "Kundin Müller", 7: "x" * 64}), Settings())
    check(pb.AnalyzeRequest(channel_roles={0: ""}), Settings())  # the channel's default name


def test_the_sdk_refuses_them_before_any_call():
    """A bad option is the caller's mistake: a ValueError at once, never a call (nor its retries)."""
    from toneserve.client.sdk import Client

    with Client("127.0.0.1:9", max_attempts=4) as client:  # nothing listens there
        with pytest.raises(ValueError, match="request_id"):
            client.analyze(b"RIFF....WAVE", request_id="réunion-7")
        with pytest.raises(ValueError, match="64"):
            client.analyze(b"RIFF....WAVE", channel_roles=["agent", "c" * (1 << 20)])
