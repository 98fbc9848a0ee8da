"""A request's options, checked before any of its audio is read.

What a request costs must be known from its options and its audio's header, never found out
after the work: the request id goes back in trailing metadata (ASCII, a few KiB at most) and
into every log line; each channel role is copied into every segment and timeline point of the
response. The language, window and thresholds are checked by the Analysis the service builds
right after this (gateway/pipeline.py), also before the audio.
"""
from __future__ import annotations

from toneserve.contract import Code, ToneserveError, request_id_problem, role_problem
from toneserve.gateway.settings import Settings
from toneserve.v1 import toneserve_pb2 as pb


def check(options: pb.AnalyzeRequest, settings: Settings) -> None:
    """INVALID_ARGUMENT for a request id or channel roles the gateway does not take."""
    problem = request_id_problem(options.request_id)
    if problem:
        raise ToneserveError(Code.INVALID_ARGUMENT, problem)
    roles = options.channel_roles
    most = settings.limits.max_channels
    if len(roles) > most:
        raise ToneserveError(Code.INVALID_ARGUMENT,
                             f"channel_roles names {len(roles)} channels; the gateway takes at most {most}")
    outside = sorted(c for c in roles if not 0 <= c < most)
    if outside:
        raise ToneserveError(Code.INVALID_ARGUMENT, f"channel_roles names channels {outside[:8]}; channels are "
                                                    f"0 to {most - 1}")
    for role in roles.values():
        problem = role_problem(role)
        if problem:
            raise ToneserveError(Code.INVALID_ARGUMENT, problem)
