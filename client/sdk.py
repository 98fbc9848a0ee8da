"""A small synchronous client for the toneserve.v1 Analyzer (the full SDK comes with the client issue)."""
from __future__ import annotations

from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from ..gateway.errors import ERROR_CODE_METADATA
from ..v1 import toneserve_pb2 as pb
from ..v1 import toneserve_pb2_grpc as pb_grpc


class AnalyzeError(RuntimeError):
    """A failed call, with the gRPC status and toneserve's stable error code when the server sent one."""

    def __init__(self, status: grpc.StatusCode, code: str, message: str):
        self.status, self.code = status, code
        super().__init__(f"{status.name}: {message}")


# Files above this go through AnalyzeUpload in CHUNK_BYTES pieces (the gateway's Analyze takes 64 MiB by default).
UPLOAD_ABOVE_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024


def _chunks(options: pb.AnalyzeRequest, audio: bytes | str | Path):
    yield pb.UploadRequest(options=options)
    if isinstance(audio, bytes):
        for start in range(0, len(audio), CHUNK_BYTES):
            yield pb.UploadRequest(chunk=audio[start:start + CHUNK_BYTES])
        return
    with open(audio, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            yield pb.UploadRequest(chunk=chunk)


class Client:
    def __init__(self, address: str = "127.0.0.1:50051", max_message_bytes: int = 80 * 1024 * 1024):
        self.address = address
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self.stub = pb_grpc.AnalyzerStub(self.channel)

    def analyze(self, audio: bytes | str | Path, language: str = "auto", window_seconds: float = 0.0,
                use_itn: bool = False, timeout: float | None = 300.0, channel_roles: dict[int, str] | None = None,
                mix_channels: bool = False, thresholds: dict[str, float] | None = None, request_id: str = "",
                upload: bool | None = None) -> pb.AnalyzeResponse:
        """Analyse a file (path) or encoded bytes. `upload` streams it through AnalyzeUpload; by default
        only files above UPLOAD_ABOVE_BYTES are streamed."""
        options = pb.AnalyzeRequest(language=language, window_seconds=window_seconds, use_itn=use_itn,
                                    channel_roles=channel_roles or {}, mix_channels=mix_channels,
                                    thresholds=pb.Thresholds(**(thresholds or {})), request_id=request_id)
        size = len(audio) if isinstance(audio, bytes) else Path(audio).stat().st_size
        if upload is None:
            upload = size > UPLOAD_ABOVE_BYTES
        try:
            if upload:
                return self.stub.AnalyzeUpload(_chunks(options, audio), timeout=timeout)
            options.audio = audio if isinstance(audio, bytes) else Path(audio).read_bytes()
            return self.stub.Analyze(options, timeout=timeout)
        except grpc.RpcError as exc:
            trailing = dict(exc.trailing_metadata() or ())
            message = exc.details() or ""
            if exc.code() == grpc.StatusCode.UNAVAILABLE and not trailing:
                message = f"cannot reach the toneserve gateway at {self.address} ({message})"
            raise AnalyzeError(exc.code(), trailing.get(ERROR_CODE_METADATA, ""), message) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_dict(response: pb.AnalyzeResponse) -> dict:
    return MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
