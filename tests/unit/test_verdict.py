"""The LLM judge's per-call verdict (gateway/verdict.py) against a real OpenAI-compatible stand-in server
on loopback (tests/llm_standin.py): what it sends, how it reads a reply, and that no judge failure raises
or outlasts the timeout, while the caller's cancellation propagates and abandons the request."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.llm_standin import LLMStandin, Received, Reply
from toneserve.gateway import verdict as verdict_module
from toneserve.gateway.verdict import (
    API_KEY_ENV,
    MIN_INPUT_CHARS,
    REASON_CHARS,
    Judge,
    JudgeSettings,
    api_key_from,
    build_prompt,
    read_verdict,
)
from toneserve.v1 import toneserve_pb2 as pb

# What verdict() may take beyond its timeout (closing the connection, the event loop's own latency).
SLACK = 0.5


def segment(index: int, transcript: str = "", speaker: str = "customer", scored: bool = True,
            score: float = 0.0, emotion: str = "neutral", tone: float = 0.0, language: str = "en") -> pb.Segment:
    return pb.Segment(
        start_ms=index * 4000, end_ms=index * 4000 + 3500, speaker=speaker, transcript=transcript,
        language=pb.Distribution(labels=[language], probabilities=[1.0], top=language),
        text_sentiment=pb.TextSentiment(scored=scored, score=score),
        emotion=pb.Distribution(labels=[emotion], probabilities=[1.0], top=emotion),
        judgement=pb.Judgement(tone_score=tone))


CALL = [
    segment(0, "<|en|><|NEUTRAL|><|Speech|><|woitn|>Thank you for calling, how can I help?", speaker="agent",
            score=0.44, emotion="neutral", tone=0.05),
    segment(1, 'My "refund" never arrived and I am furious.', score=-0.61, emotion="angry", tone=-0.72),
    segment(2, "I am sorry, I will send it today.", speaker="agent", score=-0.07, emotion="sad", tone=-0.2),
    segment(3, "", scored=False, emotion="", language="nospeech"),
]
GOOD = {"sentiment": "negative", "score": -0.6, "reason": "The customer is angry about a missing refund.",
        "segment_ids": [1]}


def settings(llm: LLMStandin, **changes) -> JudgeSettings:
    values = {"url": llm.url, "model": "judge-7b", "api_key": "sk-test-123", "timeout_seconds": 3.0,
              "max_tokens": 150, "input_chars": 12000}
    values.update(changes)
    return JudgeSettings(**values)


def run_judge(reply, segments=CALL, **changes):
    """One verdict() against a fresh stand-in answering `reply`: (verdict, warning, the requests it got,
    seconds verdict() took)."""
    async def scenario():
        async with LLMStandin(reply) as llm:
            async with Judge(settings(llm, **changes)) as judge:
                start = time.monotonic()
                verdict, warning = await judge.verdict(segments)
                return verdict, warning, llm.requests, time.monotonic() - start
    return asyncio.run(scenario())


def content_reply(content: object) -> Reply:
    return Reply(content=content if isinstance(content, str) else json.dumps(content))


# ------------------------------------------------------------------------------------- a reply, and the request


def test_a_valid_reply_is_the_verdict_and_the_request_carries_the_settings():
    verdict, warning, requests, _ = run_judge(content_reply(GOOD))
    assert warning is None
    assert (verdict.sentiment, verdict.reason, list(verdict.segment_ids), verdict.model) == (
        "negative", GOOD["reason"], [1], "judge-7b")
    assert verdict.score == pytest.approx(-0.6)
    assert len(requests) == 1
    sent: Received = requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-test-123"
    body = sent.json
    assert body["model"] == "judge-7b"
    assert body["max_tokens"] == 150
    assert body.get("stream") in (None, False)
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["name"]
    schema = response_format["json_schema"]["schema"]
    assert schema["required"] == ["sentiment", "score", "reason", "segment_ids"]
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert properties["sentiment"] == {"type": "string", "enum": ["positive", "neutral", "negative"]}
    assert properties["score"] == {"type": "number", "minimum": -1, "maximum": 1}
    assert properties["reason"] == {"type": "string", "maxLength": REASON_CHARS}
    assert properties["segment_ids"] == {"type": "array", "items": {"type": "integer"}}
    assert [m["role"] for m in sent.messages] == ["system", "user"]
    system = sent.content("system")
    assert "CUSTOMER" in system and "JSON" in system and "overall sentiment" in system


def test_the_prompt_has_one_line_per_segment_with_its_fields():
    _, _, requests, _ = run_judge(content_reply(GOOD))
    user = requests[0].content("user")
    lines = user.splitlines()
    assert lines[0].startswith("A call of 4 segments") and "agent" in lines[0] and "customer" in lines[0]
    segment_lines = [line for line in lines if line.startswith("[")]
    assert segment_lines == [
        '[0] agent en 0:00.0 "Thank you for calling, how can I help?" text=+0.44 tone=neutral(+0.05)',
        '[1] customer en 0:04.0 "My \\"refund\\" never arrived and I am furious." text=-0.61 tone=angry(-0.72)',
        '[2] agent en 0:08.0 "I am sorry, I will send it today." text=-0.07 tone=sad(-0.20)',
        '[3] customer nospeech 0:12.0 "" text=unscored tone=unknown',
    ]
    assert "<|" not in user and "left out" not in user


def test_no_key_sends_no_authorization_and_never_the_openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-this-server")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-not-for-this-server")
    verdict, warning, requests, _ = run_judge(content_reply(GOOD), api_key=None)
    assert warning is None and verdict is not None
    headers = {name.lower(): value for name, value in requests[0].headers.items()}
    assert "authorization" not in headers
    assert "openai-organization" not in headers
    assert "sk-not-for-this-server" not in json.dumps(headers)


def test_a_long_reason_is_cut_to_160_characters_and_made_one_line():
    long = dict(GOOD, reason="angry\nabout the refund " * 20, segment_ids=[1, 1, 3])
    verdict, warning, _, _ = run_judge(content_reply(long))
    assert warning is None
    assert len(verdict.reason) == REASON_CHARS and verdict.reason.endswith("…") and "\n" not in verdict.reason
    assert list(verdict.segment_ids) == [1, 3]


def test_a_fenced_json_reply_is_read():
    verdict, warning, _, _ = run_judge(Reply(content="```json\n" + json.dumps(GOOD) + "\n```"))
    assert warning is None and verdict.sentiment == "negative"


# -------------------------------------------------------------------------------------------- judge failures


def test_invalid_json_is_a_warning():
    verdict, warning, _, _ = run_judge(Reply(content='{"sentiment": "negative", "score": '))
    assert verdict is None
    assert "judge-7b" in warning and "not valid JSON" in warning and "\n" not in warning


def test_invalid_json_cut_at_max_tokens_says_so():
    verdict, warning, _, _ = run_judge(Reply(content='{"sentiment": "neg', finish_reason="length"))
    assert verdict is None and "not valid JSON" in warning and "max_tokens=150" in warning


@pytest.mark.parametrize("reply, expected", [
    ({**GOOD, "sentiment": "furious"}, "sentiment 'furious' is not one of"),
    ({**GOOD, "score": 1.5}, "score 1.5 is not a number in [-1, 1]"),
    ({**GOOD, "score": "-0.5"}, "is not a number"),
    ({**GOOD, "score": 0.7}, "contradicts sentiment negative"),
    ({k: v for k, v in GOOD.items() if k != "reason"}, "lacks reason"),
    ({**GOOD, "reason": 3}, "reason 3 is not a string"),
    ({**GOOD, "segment_ids": [1, 99]}, "segment_ids [99] are not among the segments given (0-3)"),
    ({**GOOD, "segment_ids": [-1]}, "are not among the segments given"),
    ({**GOOD, "segment_ids": ["1"]}, "is not an array of integers"),
    ({**GOOD, "segment_ids": [True]}, "is not an array of integers"),
    ([GOOD], "not an object"),
], ids=["sentiment", "score-range", "score-type", "contradiction", "missing", "reason-type", "unknown-id",
        "negative-id", "id-type", "id-bool", "array"])
def test_a_schema_violation_is_a_warning(reply, expected):
    verdict, warning = read_verdict(json.dumps(reply), range(4), "m")
    assert verdict is None and "schema violation" in warning and expected in warning


def test_a_schema_violation_from_the_server_is_a_warning():
    verdict, warning, _, _ = run_judge(content_reply({**GOOD, "sentiment": "furious"}))
    assert verdict is None and "schema violation" in warning and "furious" in warning


def test_http_500_is_a_warning_with_the_status_and_the_servers_message():
    verdict, warning, requests, _ = run_judge(Reply(status=500, error="CUDA out of memory"))
    assert verdict is None
    assert "HTTP 500" in warning and "CUDA out of memory" in warning
    assert len(requests) == 1  # never retried


@pytest.mark.parametrize("reply, expected", [
    (Reply(content=""), "empty reply"),
    (Reply(content=None), "empty reply"),
    (Reply(choices=False), "empty reply (no choices)"),
    (Reply(body="this is not a chat completion"), "gave no verdict"),
], ids=["empty", "null", "no-choices", "not-json"])
def test_an_empty_or_malformed_reply_is_a_warning(reply, expected):
    verdict, warning, _, _ = run_judge(reply)
    assert verdict is None and expected in warning


def test_no_segments_is_a_warning_without_a_request():
    verdict, warning, requests, _ = run_judge(content_reply(GOOD), segments=[])
    assert verdict is None and "no segments" in warning and requests == []


def test_a_server_that_is_not_there_is_a_warning():
    async def scenario():
        async with LLMStandin() as llm:
            url = llm.url  # the port is closed once the stand-in stops
        async with Judge(JudgeSettings(url=url, model="m", timeout_seconds=2)) as judge:
            return await judge.verdict(CALL)
    verdict, warning = asyncio.run(scenario())
    assert verdict is None and "cannot reach" in warning


def test_a_slow_reply_times_out_within_the_bound_and_the_request_is_abandoned():
    async def scenario():
        async with LLMStandin(Reply(content=json.dumps(GOOD), delay=30)) as llm:
            async with Judge(settings(llm, timeout_seconds=0.5)) as judge:
                start = time.monotonic()
                result = await judge.verdict(CALL)
                took = time.monotonic() - start
            await asyncio.wait_for(llm.disconnected.wait(), 2)
            return result, took, llm.answered
    (verdict, warning), took, answered = asyncio.run(scenario())
    assert verdict is None and "no reply within 0.5 s" in warning
    assert took < 0.5 + SLACK
    assert answered == 0


def test_the_asyncio_timeout_bounds_what_the_client_timeout_does_not(monkeypatch):
    """A server that trickles its reply resets the client's read timeout at each byte; the overall bound
    still holds. Stood in for by a client call that never returns."""
    async def scenario():
        async with LLMStandin() as llm:
            async with Judge(settings(llm, timeout_seconds=0.3)) as judge:
                async def forever(**kwargs):
                    await asyncio.sleep(3600)
                monkeypatch.setattr(judge._client.chat.completions, "create", forever)
                start = time.monotonic()
                result = await judge.verdict(CALL)
                return result, time.monotonic() - start
    (verdict, warning), took = asyncio.run(scenario())
    assert verdict is None and "no reply within 0.3 s" in warning
    assert took < 0.3 + SLACK


def test_cancelling_the_caller_propagates_promptly_and_the_server_sees_the_client_leave():
    async def scenario():
        async with LLMStandin(Reply(content=json.dumps(GOOD), delay=30)) as llm:
            async with Judge(settings(llm, timeout_seconds=10)) as judge:
                task = asyncio.create_task(judge.verdict(CALL))
                await asyncio.wait_for(llm.arrived.wait(), 5)
                await asyncio.sleep(0.05)
                start = time.monotonic()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                cancelled_in = time.monotonic() - start
                await asyncio.wait_for(llm.disconnected.wait(), 2)
                return cancelled_in, llm.answered
    cancelled_in, answered = asyncio.run(scenario())
    assert cancelled_in < 0.5
    assert answered == 0


# ----------------------------------------------------------------------------------------- the input budget


def long_call(n: int, chars: int) -> list[pb.Segment]:
    return [segment(i, f"segment {i} says " + "word " * (chars // 5), speaker=("agent", "customer")[i % 2],
                    score=-0.3, emotion="angry", tone=-0.5) for i in range(n)]


def test_the_prompt_sent_respects_the_budget_and_keeps_the_first_and_last_segments():
    call = long_call(300, 600)
    last = len(call) - 1

    def answer(body):  # cite the first and the last segments: both must have been shown
        return content_reply({**GOOD, "segment_ids": [0, last]})
    verdict, warning, requests, _ = run_judge(answer, segments=call, input_chars=6000)
    assert warning is None and list(verdict.segment_ids) == [0, last]
    user = requests[0].content("user")
    assert len(user) <= 6000
    ids = [int(line[1:line.index("]")]) for line in user.splitlines() if line.startswith("[")]
    assert ids[0] == 0 and ids[-1] == last and 2 < len(ids) < len(call)
    assert f"{len(call) - len(ids)} of the {len(call)} segments are left out" in user
    gaps = [b - a for a, b in zip(ids, ids[1:])]
    assert max(gaps) - min(gaps) <= 1  # evenly spread over the call


def test_segments_not_shown_cannot_be_cited():
    call = long_call(300, 600)
    prompt = build_prompt(call, 6000)
    hidden = next(i for i in range(len(call)) if i not in prompt.shown)
    verdict, warning = read_verdict(json.dumps({**GOOD, "segment_ids": [hidden]}), prompt.shown, "m")
    assert verdict is None and "not among the segments given" in warning


def test_long_transcripts_are_cut_before_segments_are_left_out():
    call = long_call(8, 3000)
    prompt = build_prompt(call, 12000)
    assert prompt.shown == tuple(range(8)) and prompt.left_out == 0
    assert prompt.cut_at is not None and prompt.cut_at >= verdict_module.CUT_FLOOR
    assert len(prompt.user) <= 12000
    assert "are cut" in prompt.user and "…" in prompt.user


@pytest.mark.parametrize("n, chars", [(1, 20000), (2, 5000), (50, 0), (400, 40), (2000, 300), (3, 10)])
@pytest.mark.parametrize("budget", [MIN_INPUT_CHARS, 1500, 4000, 12000, 50000])
def test_the_prompt_never_exceeds_the_budget(n, chars, budget):
    call = long_call(n, chars)
    # Long speaker names and control characters do not break the bound or the one-line-per-segment rule.
    call[0].speaker = "a very long speaker name " * 10
    call[-1].transcript += "\n\x00\ttail"
    prompt = build_prompt(call, budget)
    assert len(prompt.user) <= budget
    assert prompt.shown[0] == 0 and prompt.shown[-1] == n - 1
    lines = [line for line in prompt.user.splitlines() if line.startswith("[")]
    assert len(lines) == len(prompt.shown)
    assert (prompt.left_out > 0) == ("left out" in prompt.user)


def test_a_call_that_fits_is_sent_whole():
    prompt = build_prompt(CALL, MIN_INPUT_CHARS)
    assert prompt.shown == (0, 1, 2, 3) and prompt.cut_at is None and prompt.left_out == 0


# ------------------------------------------------------------------------------------ settings and the API key


def test_api_key_from_a_file_is_stripped_and_wins_over_the_environment(tmp_path):
    key_file = tmp_path / "judge.key"
    key_file.write_text("  sk-from-file\n")
    assert api_key_from(str(key_file), {API_KEY_ENV: "sk-from-env"}) == "sk-from-file"


def test_api_key_from_the_environment_or_none():
    assert api_key_from(None, {API_KEY_ENV: " sk-from-env \n"}) == "sk-from-env"
    assert api_key_from(None, {API_KEY_ENV: ""}) is None
    assert api_key_from(None, {}) is None


@pytest.mark.parametrize("content, expected", [
    (None, "cannot read the judge API key file"),  # missing
    ("", "is empty"),
    (" \n\t", "is empty"),
    ("sk-one\nsk-two", "must hold one key"),
])
def test_api_key_from_a_bad_file_names_the_file(tmp_path, content, expected):
    key_file = tmp_path / "judge.key"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(ValueError, match=expected) as raised:
        api_key_from(str(key_file), {API_KEY_ENV: "sk-from-env"})
    assert str(key_file) in str(raised.value)


def test_api_key_from_a_directory_names_it(tmp_path):
    with pytest.raises(ValueError, match="cannot read the judge API key file") as raised:
        api_key_from(str(tmp_path))
    assert str(tmp_path) in str(raised.value)


@pytest.mark.parametrize("changes, expected", [
    ({"url": "127.0.0.1:8000/v1"}, "http:// or https://"),
    ({"url": "ftp://host/v1"}, "http:// or https://"),
    ({"url": "http:///v1"}, "with a host"),
    ({"url": "http://host/v1?x=1"}, "without a query"),
    ({"model": " "}, "model must be a non-empty"),
    ({"api_key": ""}, "api_key must be a non-empty"),
    ({"api_key": "sk bad"}, "whitespace"),
    ({"timeout_seconds": 0}, "timeout_seconds must be a finite number > 0"),
    ({"timeout_seconds": float("inf")}, "timeout_seconds"),
    ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"input_chars": 10}, f"input_chars must be an integer >= {MIN_INPUT_CHARS}"),
])
def test_settings_are_checked(changes, expected):
    values = {"url": "http://127.0.0.1:8000/v1", "model": "m", **changes}
    with pytest.raises(ValueError, match=expected.replace("?", r"\?").replace("+", r"\+")):
        JudgeSettings(**values)


def test_settings_defaults():
    judge = JudgeSettings(url="https://llm.internal/v1", model="m")
    assert (judge.api_key, judge.timeout_seconds, judge.max_tokens, judge.input_chars) == (None, 10, 200, 12000)
