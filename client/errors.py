"""AnalyzeError: what a failed call tells its caller, with no gRPC types in it."""
from __future__ import annotations

from toneserve.contract import ERROR_CODE_METADATA, REQUEST_ID_METADATA, RETRY_PUSHBACK_METADATA


class AnalyzeError(RuntimeError):
    """A call that failed.

    status: the gRPC status name, e.g. "UNAVAILABLE", "INVALID_ARGUMENT", "UNAUTHENTICATED".
    code: toneserve's stable error code when the gateway answered, e.g. "INVALID_AUDIO",
        "OVERLOADED", "NO_SPEECH" (README, "The API"); "" when it did not (unreachable, deadline).
        Programs switch on `code`, never on the message text.
    message: for people.
    request_id: the id the gateway logged the request under.
    retry_after: seconds the gateway asked to wait before retrying (OVERLOADED), else None.
    attempts: how many times the call was tried.
    """

    def __init__(self, status: str, code: str, message: str, request_id: str = "",
                 retry_after: float | None = None, attempts: int = 1):
        self.status, self.code, self.message, self.request_id = status, code, message, request_id
        self.retry_after, self.attempts = retry_after, attempts
        super().__init__(str(self))

    def __str__(self) -> str:
        tried = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
        return f"{self.code or self.status}: {self.message}{tried}"

    @property
    def retryable(self) -> bool:
        """A later try may succeed: the gateway was unreachable or busy."""
        return self.status in ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

    @property
    def unreachable(self) -> bool:
        """No gateway answered (nothing listens there, TLS or network trouble), as opposed to a gateway
        that answered UNAVAILABLE itself (its Triton is down): only the gateway sends a toneserve code."""
        return self.status == "UNAVAILABLE" and not self.code

    @classmethod
    def from_rpc_error(cls, error, address: str, request_id: str, timeout: float | None) -> AnalyzeError:
        """From a grpc.RpcError (sync or asyncio): the gateway's code, request id and retry hint."""
        status = error.code().name
        trailers = {key: value for key, value in (error.trailing_metadata() or ())}
        code = trailers.get(ERROR_CODE_METADATA, "")
        message = error.details() or ""
        # The gateway's messages start with the code ("INVALID_AUDIO: ..."); str() puts it back once.
        if code and message.startswith(f"{code}: "):
            message = message[len(code) + 2:]
        if not code and status == "UNAVAILABLE":
            message = f"cannot reach the toneserve gateway at {address} ({message})"
        elif not code and status == "DEADLINE_EXCEEDED" and timeout is not None:
            message = f"no answer from {address} within the {timeout:g} s timeout"
        elif status == "UNAUTHENTICATED":
            message += " (the key comes from api_key=, --api-key or TONESERVE_API_KEY)"
        pushback = trailers.get(RETRY_PUSHBACK_METADATA)
        return cls(status, code, message, trailers.get(REQUEST_ID_METADATA, request_id),
                   int(pushback) / 1000 if pushback and pushback.isdigit() else None)
