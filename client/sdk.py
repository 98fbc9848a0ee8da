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


class Client:
    def __init__(self, address: str = "127.0.0.1:50051", max_message_bytes: int = 80 * 1024 * 1024):
        self.address = address
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self.stub = pb_grpc.AnalyzerStub(self.channel)

    def analyze(self, audio: bytes | str | Path, language: str = "auto", window_seconds: float = 0.0,
                use_itn: bool = False, timeout: float | None = 300.0) -> pb.AnalyzeResponse:
        data = Path(audio).read_bytes() if isinstance(audio, (str, Path)) else audio
        request = pb.AnalyzeRequest(audio=data, language=language, window_seconds=window_seconds,
                                    use_itn=use_itn)
        try:
            return self.stub.Analyze(request, timeout=timeout)
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
