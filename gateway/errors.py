"""The one table of toneserve error codes.

Every error a client can see has a stable code (sent as the status message
prefix and in the ``toneserve-error-code`` trailing metadata), a gRPC status,
and a default message. Clients switch on the code, never on message text.
"""
from __future__ import annotations

import enum

import grpc

ERROR_CODE_METADATA = "toneserve-error-code"


class Code(enum.Enum):
    INVALID_AUDIO = (grpc.StatusCode.INVALID_ARGUMENT, "the audio could not be decoded")
    UNSUPPORTED_CODEC = (grpc.StatusCode.INVALID_ARGUMENT, "the audio codec is not supported")
    NO_AUDIO_STREAM = (grpc.StatusCode.INVALID_ARGUMENT, "the input contains no audio stream")
    EMPTY_AUDIO = (grpc.StatusCode.INVALID_ARGUMENT, "the audio holds no samples")
    AUDIO_TOO_LARGE = (grpc.StatusCode.INVALID_ARGUMENT, "the audio is larger than the server allows")
    AUDIO_TOO_LONG = (grpc.StatusCode.INVALID_ARGUMENT, "the audio is longer than the server allows")
    AUDIO_TOO_SHORT = (grpc.StatusCode.INVALID_ARGUMENT, "the audio is too short to analyse")
    TOO_MANY_CHANNELS = (grpc.StatusCode.INVALID_ARGUMENT, "the audio has more channels than the server allows")
    NO_SPEECH = (grpc.StatusCode.FAILED_PRECONDITION, "no speech was found in the audio")
    INVALID_ARGUMENT = (grpc.StatusCode.INVALID_ARGUMENT, "a request field is out of range")
    UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, "a valid API key is required")
    OVERLOADED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "the gateway is at capacity; retry after the hinted delay")
    TRITON_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "the inference server is unavailable")
    DEADLINE_EXCEEDED = (grpc.StatusCode.DEADLINE_EXCEEDED, "the request ran out of time")
    INTERNAL = (grpc.StatusCode.INTERNAL, "internal error")

    @property
    def status(self) -> grpc.StatusCode:
        return self.value[0]

    @property
    def default_message(self) -> str:
        return self.value[1]


class ToneserveError(Exception):
    def __init__(self, code: Code, detail: str | None = None):
        self.code = code
        self.detail = detail or code.default_message
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.code.name}: {self.detail}"
