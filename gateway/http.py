"""The gateway's HTTP/JSON API (`--http-port`): aiohttp, on the gateway's own event loop, beside gRPC.

Every route goes through the same AnalyzerService as gRPC, so the keys, tenants, admission, quotas, fair
share, limits, deadlines and metrics are the same ones: `POST /v1/analyze` takes AnalyzeUpload's path (the
body streamed in chunks into the service's spool, never held whole; its size, duration and time limits),
`POST /v1/text` AnalyzeText's. What the API says (parameters, JSON, errors, OpenAPI) is gateway/http_api.py.

Why in the gateway and not Envoy's gRPC-JSON transcoder in front: the transcoder maps a raw body to a
unary RPC only (google.api.HttpBody, held whole, so bounded by the gRPC message size), while a recording
of an hour needs AnalyzeUpload's client stream; its error bodies are google.rpc.Status, not our
`{code, message, request_id}` with Retry-After; and it is one more proxy to deploy, secure and probe.
aiohttp runs where the gateway already runs, in the same process and loop, and costs one dependency.

A client that goes away mid-upload or mid-analysis cancels its request (aiohttp's handler cancellation),
as a gRPC cancel does: the analysis stops, its spool is closed, its Triton calls are released.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

from aiohttp import ClientPayloadError, web
from google.protobuf import json_format

from toneserve.contract import ERROR_CODE_METADATA, REQUEST_ID_METADATA, RETRY_PUSHBACK_METADATA, Code, ToneserveError
from toneserve.gateway import http_api
from toneserve.gateway.service import AnalyzerService
from toneserve.v1 import toneserve_pb2 as pb

log = logging.getLogger("toneserve.gateway")

PLAYGROUND = Path(__file__).resolve().parent / "playground"
BODY_CHUNK = 256 * 1024
# The page and the API use nothing from another origin; the page plays the uploaded file from a blob: URL.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; img-src 'self' data: blob:; "
                               "object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
}


class _Aborted(Exception):
    """The service ended the request with an error (what gRPC's context.abort does)."""

    def __init__(self, trailing: dict[str, str], message: str):
        super().__init__(message)
        self.trailing = trailing
        self.message = message


def _metadata(authorization: str) -> tuple[tuple[str, str], ...]:
    """The Authorization header as the gRPC metadata ApiKeys reads."""
    return (("authorization", authorization),) if authorization else ()


class HttpContext:
    """What AnalyzerService reads of a gRPC ServicerContext, for one HTTP request: the key, the deadline, and the
    error it ends the request with."""

    def __init__(self, authorization: str, timeout: float | None):
        self.authorization = authorization
        self.timeout = timeout
        self.trailing: dict[str, str] = {}

    def invocation_metadata(self):
        return _metadata(self.authorization)

    def time_remaining(self) -> float | None:
        return self.timeout

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing = dict(metadata)

    async def abort(self, status, message: str):
        raise _Aborted(self.trailing, message)


def _json(body, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def _error(aborted: _Aborted) -> web.Response:
    code = aborted.trailing.get(ERROR_CODE_METADATA, Code.INTERNAL.name)
    status = Code[code].http_status if code in Code.__members__ else 500
    headers = {}
    if RETRY_PUSHBACK_METADATA in aborted.trailing:
        headers["Retry-After"] = str(http_api.retry_after_seconds(int(aborted.trailing[RETRY_PUSHBACK_METADATA])))
    return _json(http_api.error_body(code, aborted.message, aborted.trailing.get(REQUEST_ID_METADATA, "")),
                 status, headers)


async def _body(request: web.Request) -> AsyncGenerator[pb.UploadRequest, None]:
    """The request's body as AnalyzeUpload's chunk messages, as it arrives. A client that went away mid-upload
    cancels the request (as a gRPC client's cancel does); a body cut short on a live connection is
    INVALID_ARGUMENT."""
    try:
        async for data in request.content.iter_chunked(BODY_CHUNK):
            yield pb.UploadRequest(chunk=data)
    except (ConnectionError, asyncio.IncompleteReadError, ClientPayloadError) as exc:
        if request.transport is None or request.transport.is_closing():
            raise asyncio.CancelledError("the client went away mid-upload") from None
        raise ToneserveError(Code.INVALID_ARGUMENT, f"the upload was cut off or malformed ({exc})") from None


class HttpApi:
    def __init__(self, service: AnalyzerService, serving: Callable[[], bool], playground: bool = False,
                 max_connection_age: float | None = None):
        """`serving()`: whether the gateway serves now (what its gRPC health says); `playground`: serve the page;
        `max_connection_age`: a kept-alive connection older than this (counted from its first request) is closed
        after its next response (`Connection: close`), as gRPC's GOAWAY does, so clients reconnect and reach
        replicas added since."""
        self.service = service
        self.max_connection_age = max_connection_age
        # When each connection (its transport) was first seen; forgotten with the connection.
        self.born: weakref.WeakKeyDictionary[asyncio.BaseTransport, float] = weakref.WeakKeyDictionary()
        self.serving = serving
        self.playground = playground
        self.runner: web.AppRunner | None = None
        self.openapi = json.dumps(http_api.openapi(), indent=2)
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers])
        app.router.add_post(http_api.ANALYZE_PATH, self.analyze, expect_handler=self._expect)
        app.router.add_post(http_api.TEXT_PATH, self.text)
        app.router.add_get(http_api.HEALTH_PATH, self.health)
        app.router.add_get(http_api.OPENAPI_PATH, self.document)
        if self.playground:
            app.router.add_get("/", self.page)
            app.router.add_static("/playground", PLAYGROUND, follow_symlinks=False)
        return app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context`: serve TLS with it (gateway/tls.py loads a rotated certificate into it in place)."""
        # handler_cancellation: a client that disconnects cancels its request, as over gRPC. shutdown_timeout:
        # what `stop` leaves to the requests still running once its grace has passed, before they are cancelled.
        self.runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=ssl_context, reuse_address=False)
        await site.start()

    async def stop(self, grace: float = 5.0) -> None:
        """No new connection from now on; the requests in progress get `grace` seconds, then are cancelled."""
        if self.runner is None:
            return
        for site in list(self.runner.sites):
            await site.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.idle.wait()
        await self.runner.cleanup()
        self.runner = None

    @web.middleware
    async def _headers(self, request: web.Request, handler):
        if self.service.draining and request.path != http_api.HEALTH_PATH:  # (health answers NOT_SERVING itself)
            # A new request on a kept-alive connection while the gateway drains: refused, as gRPC refuses new RPCs.
            refused = ToneserveError(Code.SHUTTING_DOWN)
            response = _json(http_api.error_body(refused.code.name, refused.message, uuid.uuid4().hex),
                             refused.code.http_status)
            response.headers.update(SECURITY_HEADERS)
            response.force_close()
            return response
        self.in_flight += 1
        self.idle.clear()
        try:
            response = await handler(request)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        response.headers.update(SECURITY_HEADERS)
        if self.service.draining or self._too_old(request):
            response.force_close()  # Connection: close, and the connection closed once this response is sent
        return response

    def _too_old(self, request: web.Request) -> bool:
        if self.max_connection_age is None or request.transport is None:
            return False
        born = self.born.setdefault(request.transport, time.monotonic())
        return time.monotonic() - born >= self.max_connection_age

    # ------------------------------------------------------------------------------------------ routes

    async def _expect(self, request: web.Request) -> None:
        """`Expect: 100-continue` (curl sends it for large bodies): the body is asked for only when the key is good
        and its declared size fits, so a refused upload is not sent at all (the handler then answers why)."""
        if request.version < (1, 1) or request.headers.get("Expect", "").lower() != "100-continue":
            return
        try:
            self.service.keys.tenant(_metadata(request.headers.get("Authorization", "")))
        except ToneserveError:
            return
        if (request.content_length or 0) > self.service.settings.limits.max_bytes:
            return
        request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    async def analyze(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        context = HttpContext(request.headers.get("Authorization", ""), http_api.timeout(query))

        async def options() -> pb.AnalyzeRequest:
            problem = http_api.timeout_problem(query)
            if problem:
                raise ToneserveError(Code.INVALID_ARGUMENT, problem)
            options = http_api.analyze_request(query, lambda name: len(query.getall(name)))
            if (request.content_length or 0) > self.service.settings.limits.max_bytes:
                raise ToneserveError(Code.AUDIO_TOO_LARGE, f"{request.content_length} bytes; the gateway takes up "
                                                           f"to {self.service.settings.limits.max_bytes}")
            return options

        body = _body(request)
        try:
            response = await self.service.upload("HTTP /v1/analyze", context, options, body)
        except _Aborted as aborted:
            return _error(aborted)
        finally:
            await body.aclose()
        return _json(await asyncio.to_thread(http_api.to_json, response))

    async def text(self, request: web.Request) -> web.StreamResponse:
        context = HttpContext(request.headers.get("Authorization", ""), http_api.timeout(request.query))
        service = self.service

        async def run(tenant: str, call) -> pb.AnalyzeTextResponse:
            # Read here, inside the service's frame: after the key and admission checks, with a request id.
            limit = 4 * service.settings.max_text_chars + 64 * 1024  # UTF-8 and JSON escapes, and the other fields
            if (request.content_length or 0) > limit:
                raise ToneserveError(Code.INVALID_ARGUMENT, f"the body is {request.content_length} bytes; at most "
                                                            f"{limit} are taken")
            raw = await request.content.read(limit + 1)
            if len(raw) > limit:
                raise ToneserveError(Code.INVALID_ARGUMENT, f"the body is more than {limit} bytes")
            message = pb.AnalyzeTextRequest()
            try:
                json_format.Parse(raw.decode("utf-8"), message)
            except (json_format.ParseError, UnicodeDecodeError) as exc:
                raise ToneserveError(Code.INVALID_ARGUMENT, f"the body is not an AnalyzeTextRequest in JSON: "
                                                            f"{str(exc)[:200]}") from None
            return await service.analyze_text(message, tenant, call)

        try:
            response = await service.guarded("HTTP /v1/text", context, run, audio=False)
        except _Aborted as aborted:
            return _error(aborted)
        return _json(http_api.to_json(response))

    async def health(self, request: web.Request) -> web.StreamResponse:
        serving = self.serving()
        return _json({"status": "SERVING" if serving else "NOT_SERVING"}, 200 if serving else 503)

    async def document(self, request: web.Request) -> web.StreamResponse:
        return _json(self.openapi)

    async def page(self, request: web.Request) -> web.StreamResponse:
        index = PLAYGROUND / "index.html"
        if not index.is_file():
            raise web.HTTPNotFound(text="the playground page is not installed")
        return web.FileResponse(index)


__all__ = ["HttpApi", "HttpContext", "PLAYGROUND"]
