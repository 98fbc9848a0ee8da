"""What every Python-backend runner answers for a request it cannot serve.

The renderer copies this file next to each ``model.py`` (runners import it by plain name). A
runner answers each failed request with an error response instead of raising: an exception
raised from ``execute`` fails every request of the batch, the well-formed ones too.
"""
import triton_python_backend_utils as pb_utils


def error_response(exc):
    """An empty response whose error names the exception's type and message."""
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))


def cancelled(request):
    """True when the client gave up on the request (Triton's request cancellation: the gateway's
    timeout or its client's deadline passed, or the client went away): running it would cost model
    time for an answer nobody reads. Backends older than request cancellation have no is_cancelled."""
    check = getattr(request, "is_cancelled", None)
    return bool(check()) if check is not None else False


def cancelled_response():
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
        "the request was cancelled", pb_utils.TritonError.CANCELLED))
