"""The HTTP API's facts without a server (gateway/http_api.py): query parameters, JSON, errors, the OpenAPI document."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from openapi_spec_validator import validate

from toneserve.contract import Code, ToneserveError
from toneserve.gateway import http_api
from toneserve.v1 import toneserve_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_openapi_document_is_current_and_valid():
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert committed == http_api.openapi(), "docs/openapi.json is stale: run scripts/gen-openapi"
    validate(committed)  # OpenAPI 3.1, by openapi-spec-validator


def test_the_document_describes_every_parameter_and_every_response_field():
    document = http_api.openapi()
    parameters = {p["name"] for p in document["paths"][http_api.ANALYZE_PATH]["post"]["parameters"]}
    assert parameters == {p.name for p in http_api.PARAMS} | {http_api.TIMEOUT_PARAM}
    segment = document["components"]["schemas"]["Segment"]["properties"]
    assert set(segment) == {f.name for f in pb.Segment.DESCRIPTOR.fields}
    assert segment["words"] == {"type": "array", "items": {"$ref": "#/components/schemas/Word"}}
    judgement = document["components"]["schemas"]["Judgement"]["properties"]["flags"]
    assert judgement["items"]["enum"] == [v.name for v in pb.Flag.DESCRIPTOR.values]
    assert "AnalyzeRequest" not in document["components"]["schemas"]  # its fields are query parameters here
    statuses = set(document["paths"][http_api.ANALYZE_PATH]["post"]["responses"])
    assert {"200", "400", "401", "413", "422", "429", "500", "503", "504"} == statuses
    assert "Retry-After" in document["paths"][http_api.ANALYZE_PATH]["post"]["responses"]["429"]["headers"]


@pytest.mark.parametrize("code, status", [
    (Code.INVALID_AUDIO, 400), (Code.INVALID_ARGUMENT, 400), (Code.UNAUTHENTICATED, 401),
    (Code.AUDIO_TOO_LARGE, 413), (Code.AUDIO_TOO_LONG, 413), (Code.NO_SPEECH, 422), (Code.OVERLOADED, 429),
    (Code.QUOTA_EXCEEDED, 429), (Code.TRITON_UNAVAILABLE, 503), (Code.DEADLINE_EXCEEDED, 504), (Code.INTERNAL, 500)])
def test_each_code_has_its_http_status(code, status):
    assert code.http_status == status


def test_every_code_maps_to_an_error_status():
    assert all(400 <= code.http_status < 600 for code in Code)


def test_query_parameters_fill_the_analyze_request():
    request = http_api.analyze_request({
        "language": "EN", "roles": "agent,,customer", "itn": "true", "window": "4.5", "request_id": "r-1",
        "mix_channels": "0", "diarization": "on", "speakers": "3", "min_speakers": "2", "max_speakers": "4",
        "include_embeddings": "yes", "mismatch_gap": "0.25", "min_silence_ms": "300", "timeout": "12"})
    assert request.language == "en"
    assert dict(request.channel_roles) == {0: "agent", 2: "customer"}
    assert request.use_itn and not request.mix_channels and request.include_embeddings
    assert request.window_seconds == 4.5 and request.request_id == "r-1"
    assert request.diarization.mode == pb.Diarization.ON
    assert (request.diarization.speakers_expected, request.diarization.min_speakers,
            request.diarization.max_speakers) == (3, 2, 4)
    assert request.thresholds.HasField("mismatch_gap") and abs(request.thresholds.mismatch_gap - 0.25) < 1e-6
    assert request.thresholds.min_silence_ms == 300
    assert not request.thresholds.HasField("vad_threshold")  # absent: the server's default
    assert http_api.timeout({"timeout": "12"}) == 12.0


@pytest.mark.parametrize("query, says", [
    ({"langauge": "en"}, "unknown query parameter 'langauge'"),
    ({"itn": "maybe"}, "itn must be true or false"),
    ({"speakers": "two"}, "speakers must be an integer"),
    ({"speakers": "-1"}, "speakers is out of range"),
    ({"window": "nan"}, "window is out of range"),
    ({"mismatch_gap": "x"}, "mismatch_gap must be a number"),
    ({"diarization": "sometimes"}, "diarization must be one of auto, on, off"),
    ({"language": "fr"}, "language must be one of"),
    ({"speakers": str(2**40)}, "speakers is out of range"),
])
def test_bad_query_parameters_are_invalid_argument(query, says):
    with pytest.raises(ToneserveError) as error:
        http_api.analyze_request(query)
    assert error.value.code is Code.INVALID_ARGUMENT
    assert says in error.value.message


def test_a_repeated_parameter_is_refused():
    with pytest.raises(ToneserveError, match="more than once"):
        http_api.analyze_request({"language": "en"}, repeated=lambda name: 2)


@pytest.mark.parametrize("raw, problem", [("0", True), ("-3", True), ("soon", True), ("inf", True), ("2.5", False)])
def test_the_timeout_must_be_a_positive_number(raw, problem):
    assert (http_api.timeout_problem({"timeout": raw}) is not None) is problem
    assert http_api.timeout_problem({}) is None


def test_json_keeps_the_proto_field_names_and_zero_values():
    response = pb.AnalyzeResponse(segments=[pb.Segment(start_ms=0, end_ms=1500, channel=0, speaker="agent",
                                                       words=[pb.Word(text="hi", start_ms=0, end_ms=300)])])
    document = json.loads(http_api.to_json(response))
    segment = document["segments"][0]
    assert segment["start_ms"] == 0 and segment["channel"] == 0 and segment["end_ms"] == 1500
    assert segment["words"] == [{"text": "hi", "start_ms": 0, "end_ms": 300}]
    assert segment["embedding"] == [] and segment["transcript"] == ""
    parsed = pb.AnalyzeResponse()
    json_format.Parse(http_api.to_json(response), parsed)
    assert parsed == response


@pytest.mark.parametrize("ms, seconds", [(1, 1), (1000, 1), (1001, 2), (59_500, 60)])
def test_retry_after_is_whole_seconds_rounded_up(ms, seconds):
    assert http_api.retry_after_seconds(ms) == seconds
