"""What the HTTP/JSON API says, without the server: its query parameters, its JSON, its errors, its OpenAPI.

gateway/http.py serves it (aiohttp); this module holds the facts the server, the committed OpenAPI document
(docs/openapi.json, `scripts/gen-openapi`) and the tests share, and imports no web framework.

* `POST /v1/analyze`: the recording is the body; the AnalyzeRequest's fields are query parameters (`PARAMS`,
  one line each below); the answer is the AnalyzeResponse in protobuf's JSON mapping, with the proto's own
  field names (snake_case, as `toneserve analyze --format json` writes them) and every field present, zeros
  included. protobuf's JSON parsers read this form as well as the lowerCamelCase one.
* `POST /v1/text`: an AnalyzeTextRequest as JSON (either name form) -> the AnalyzeTextResponse.
* An error is an HTTP status from contract.Code's table and a JSON body `{code, message, request_id}`, with
  `Retry-After` (seconds) where a later try can pass: OVERLOADED and QUOTA_EXCEEDED (429), TRITON_UNAVAILABLE (503).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format

from toneserve import contract
from toneserve.contract import Code, ToneserveError
from toneserve.v1 import toneserve_pb2 as pb

API_PREFIX = "/v1"
ANALYZE_PATH, TEXT_PATH = f"{API_PREFIX}/analyze", f"{API_PREFIX}/text"
HEALTH_PATH, OPENAPI_PATH = f"{API_PREFIX}/health", f"{API_PREFIX}/openapi.json"
# The request's deadline in seconds (gRPC clients send theirs in the call); capped by the server's.
TIMEOUT_PARAM = "timeout"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Param:
    """One query parameter of POST /v1/analyze: its name, JSON-schema type, description, and what it sets."""
    name: str
    kind: str  # "string", "boolean", "integer" or "number"
    help: str
    apply: Callable[[pb.AnalyzeRequest, Any], None]
    enum: tuple[str, ...] = ()
    minimum: float | None = None


def _roles(request: pb.AnalyzeRequest, value: str) -> None:
    for channel, role in enumerate(value.split(",")):
        if role.strip():
            request.channel_roles[channel] = role.strip()


def _set(path: str) -> Callable[[pb.AnalyzeRequest, Any], None]:
    """A setter of the field at dotted `path` (e.g. "diarization.min_speakers")."""
    *parents, name = path.split(".")

    def apply(request: pb.AnalyzeRequest, value: Any) -> None:
        message = request
        for parent in parents:
            message = getattr(message, parent)
        setattr(message, name, value)
    return apply


def _threshold_params() -> list[Param]:
    """One parameter per Thresholds field, named as the field (the proto's comments are their descriptions)."""
    kinds = {_descriptor.FieldDescriptor.TYPE_FLOAT: "number", _descriptor.FieldDescriptor.TYPE_INT32: "integer"}
    return [Param(field.name, kinds[field.type], f"thresholds.{field.name}: the server default when absent "
                  "(Thresholds in the proto)", _set(f"thresholds.{field.name}"))
            for field in pb.Thresholds.DESCRIPTOR.fields]


def _mode(request: pb.AnalyzeRequest, value: str) -> None:
    request.diarization.mode = pb.Diarization.Mode.Value(value.upper())  # type: ignore[assignment]


PARAMS: tuple[Param, ...] = (
    Param("language", "string", "auto (default) or one of zh, en, yue, ja, ko", _set("language"),
          enum=("auto", *contract.TEXT_LANGUAGES)),
    Param("roles", "string", "speaker names of the channels in order, comma-separated, e.g. agent,customer "
          "(an empty name keeps the channel's default)", _roles),
    Param("itn", "boolean", "inverse text normalisation (punctuation, digits) in transcripts", _set("use_itn")),
    Param("window", "number", "longest emotion2vec+ window in seconds; 0: the server default",
          _set("window_seconds"), minimum=0),
    Param("request_id", "string", "echoed in the metadata and the error body; the server makes one when absent",
          _set("request_id")),
    Param("mix_channels", "boolean", "analyse all channels mixed down as one speaker", _set("mix_channels")),
    Param("diarization", "string", "who speaks when inside a channel: auto (mono and mixed audio), on, off",
          _mode, enum=contract.DIARIZATION_MODES),
    Param("speakers", "integer", "diarization: the number of speakers when known (0: estimate it)",
          _set("diarization.speakers_expected"), minimum=0),
    Param("min_speakers", "integer", "diarization: the fewest speakers to find", _set("diarization.min_speakers"),
          minimum=0),
    Param("max_speakers", "integer", "diarization: the most speakers to find", _set("diarization.max_speakers"),
          minimum=0),
    Param("include_embeddings", "boolean", "return each segment's emotion2vec+ embedding (768 floats at base)",
          _set("include_embeddings")),
    *_threshold_params(),
)
PARAMS_BY_NAME = {p.name: p for p in PARAMS}


def _value(param: Param, raw: str) -> Any:
    """The query string's `raw` as the parameter's type; INVALID_ARGUMENT when it is not one."""
    if param.kind == "boolean":
        if raw.lower() in _TRUE or raw == "":
            return True
        if raw.lower() in _FALSE:
            return False
        raise ToneserveError(Code.INVALID_ARGUMENT, f"{param.name} must be true or false, got {raw[:40]!r}")
    if param.kind in ("integer", "number"):
        try:
            value: float = int(raw) if param.kind == "integer" else float(raw)
        except ValueError:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"{param.name} must be {'an integer' if param.kind == 'integer' else 'a number'}, "
                                                        f"got {raw[:40]!r}") from None
        if not math.isfinite(value) or (param.minimum is not None and value < param.minimum):
            raise ToneserveError(Code.INVALID_ARGUMENT, f"{param.name} is out of range: {raw[:40]!r}")
        if param.kind == "integer" and not -2**31 <= value < 2**31:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"{param.name} is out of range: {raw[:40]!r}")
        return value
    if param.enum and raw.lower() not in param.enum:
        raise ToneserveError(Code.INVALID_ARGUMENT, f"{param.name} must be one of {', '.join(param.enum)}, "
                                                    f"got {raw[:40]!r}")
    return raw.lower() if param.enum else raw


def analyze_request(query: Mapping[str, str], repeated: Callable[[str], int] = lambda name: 1) -> pb.AnalyzeRequest:
    """The AnalyzeRequest of POST /v1/analyze's query parameters; INVALID_ARGUMENT for an unknown or repeated
    parameter or a value of the wrong type (the gateway's own checks of the values follow, as for gRPC)."""
    request = pb.AnalyzeRequest()
    for name, raw in query.items():
        if name == TIMEOUT_PARAM:
            continue
        param = PARAMS_BY_NAME.get(name)
        if param is None:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"unknown query parameter {name[:40]!r} (known: "
                                                        f"{', '.join(PARAMS_BY_NAME)}, {TIMEOUT_PARAM})")
        if repeated(name) > 1:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"query parameter {name!r} is given more than once")
        param.apply(request, _value(param, raw))
    return request


def timeout(query: Mapping[str, str]) -> float | None:
    """The `timeout` parameter in seconds (None: absent or not a positive number; `timeout_problem` says which)."""
    raw = query.get(TIMEOUT_PARAM)
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def timeout_problem(query: Mapping[str, str]) -> str | None:
    if TIMEOUT_PARAM in query and timeout(query) is None:
        return f"{TIMEOUT_PARAM} must be a positive number of seconds, got {query[TIMEOUT_PARAM][:40]!r}"
    return None


def to_json(message) -> str:
    """A response in protobuf's JSON mapping: the proto's field names, every field present."""
    return json_format.MessageToJson(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True, indent=None, ensure_ascii=False)


def error_body(code: str, message: str, request_id: str) -> dict:
    return {"code": code, "message": message, "request_id": request_id}


def retry_after_seconds(milliseconds: int) -> int:
    """HTTP's Retry-After (whole seconds, at least 1) for gRPC's retry-pushback milliseconds."""
    return max(1, math.ceil(milliseconds / 1000))


# ------------------------------------------------------------------------------------------------ OpenAPI

_SCALARS = {
    _descriptor.FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    _descriptor.FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    _descriptor.FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    _descriptor.FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},  # JSON mapping: a string
    _descriptor.FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    _descriptor.FieldDescriptor.TYPE_STRING: {"type": "string"},
    _descriptor.FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}


def _field_schema(field, schemas: dict) -> dict:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        schema = {"type": "object", "additionalProperties": _field_schema(value, schemas)}
        if key.type == _descriptor.FieldDescriptor.TYPE_INT32:
            schema["propertyNames"] = {"pattern": "^-?[0-9]+$"}
        return schema
    if field.message_type is not None:
        _message_schema(field.message_type, schemas)
        item: dict = {"$ref": f"#/components/schemas/{field.message_type.name}"}
    elif field.enum_type is not None:
        item = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        item = dict(_SCALARS[field.type])
    is_repeated = getattr(field, "is_repeated", None)
    repeated = is_repeated if isinstance(is_repeated, bool) else field.label == _descriptor.FieldDescriptor.LABEL_REPEATED
    return {"type": "array", "items": item} if repeated else item


def _message_schema(message, schemas: dict) -> None:
    if message.name in schemas:
        return
    schemas[message.name] = {}  # a placeholder first: messages may refer to each other
    properties = {field.name: _field_schema(field, schemas) for field in message.fields}
    schemas[message.name] = {"type": "object", "properties": properties}


def _error_response(description: str, retry: bool = False) -> dict:
    response: dict = {"description": description,
                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if retry:
        response["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                               "schema": {"type": "integer"}}}
    return response


def _errors(codes: list[Code]) -> dict:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(code.http_status, []).append(code.name)
    return {str(status): _error_response(", ".join(names), retry=status in (429, 503))
            for status, names in sorted(by_status.items())}


def openapi() -> dict:
    """The OpenAPI 3.1 document of the HTTP API, built from PARAMS, contract.Code and the proto's messages."""
    schemas: dict = {}
    for message in (pb.AnalyzeResponse, pb.AnalyzeTextRequest, pb.AnalyzeTextResponse):
        _message_schema(message.DESCRIPTOR, schemas)
    schemas["Error"] = {"type": "object", "required": ["code", "message", "request_id"], "properties": {
        "code": {"type": "string", "enum": [code.name for code in Code]},
        "message": {"type": "string"}, "request_id": {"type": "string"}}}
    schemas["Health"] = {"type": "object", "properties": {"status": {"type": "string",
                                                                     "enum": ["SERVING", "NOT_SERVING"]}}}
    audio_codes: list[Code] = [code for code in Code if code is not Code.INTERNAL]
    parameters = [{"name": p.name, "in": "query", "required": False, "description": p.help,
                   "schema": {"type": p.kind, **({"enum": list(p.enum)} if p.enum else {}),
                              **({"minimum": p.minimum} if p.minimum is not None else {})}} for p in PARAMS]
    parameters.append({"name": TIMEOUT_PARAM, "in": "query", "required": False,
                       "description": "the request's deadline in seconds (capped by the server's); past it: 504",
                       "schema": {"type": "number", "exclusiveMinimum": 0}})
    internal = {"500": _error_response("INTERNAL (the request id finds it in the gateway's log)")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "toneserve", "version": "v1",
                 "description": "Speech emotion and sentiment analysis: HTTP/JSON beside the gRPC API "
                                "(proto/toneserve/v1/toneserve.proto), with the same keys, quotas and limits."},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                                          "description": "an API key"}}},
        "security": [{"bearer": []}],
        "paths": {
            ANALYZE_PATH: {"post": {
                "operationId": "analyze",
                "summary": "Analyse a recording sent as the body (any container and codec the gateway decodes); "
                           "streamed to the gateway's upload path, never held whole",
                "parameters": parameters,
                "requestBody": {"required": True, "content": {
                    "application/octet-stream": {"schema": {"type": "string", "contentMediaType":
                                                            "application/octet-stream"}},
                    "audio/*": {"schema": {"type": "string", "contentMediaType": "audio/*"}}}},
                "responses": {"200": {"description": "the analysis", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/AnalyzeResponse"}}}},
                    **_errors(audio_codes), **internal}}},
            TEXT_PATH: {"post": {
                "operationId": "analyzeText",
                "summary": "The sentiment of a text: its sentences scored by the text model, and their average",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/AnalyzeTextRequest"}}}},
                "responses": {"200": {"description": "the sentences and their average", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/AnalyzeTextResponse"}}}},
                    **_errors([Code.INVALID_ARGUMENT, Code.UNAUTHENTICATED, Code.OVERLOADED,
                               Code.TRITON_UNAVAILABLE, Code.DEADLINE_EXCEEDED]), **internal}}},
            HEALTH_PATH: {"get": {
                "operationId": "health", "security": [],
                "summary": "Whether the gateway serves: 200 SERVING, or 503 NOT_SERVING (Triton not ready, draining)",
                "responses": {status: {"description": name, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Health"}}}}
                    for status, name in (("200", "SERVING"), ("503", "NOT_SERVING"))}}},
            OPENAPI_PATH: {"get": {
                "operationId": "openapi", "security": [], "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}},
        },
    }
