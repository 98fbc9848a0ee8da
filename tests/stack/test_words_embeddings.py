"""Segment.words and Segment.embedding end to end: a real gateway and tritonserver on the tiny repository.

- words: Analyze and AnalyzeStream segments carry the transcript's words (exactly `words.spans` of it, which
  TextSegment.start_word / end_word index), timed inside their segment; they are what `words.timed` makes of
  the pieces Triton's asr ensemble returns for the segment's samples, moved to the segment's start;
- embeddings: `include_embeddings` returns each segment's emotion2vec+ embedding, of the emotion model's
  dimension (its EMBEDDING output), equal to what Triton's emotion ensemble gives for the segment's samples
  (one window per segment here); without it, none.
"""
from __future__ import annotations

import io
import json
import wave

import numpy as np
import pytest

from toneserve import contract
from toneserve.client import Client, Result, Segment, live_wav_header
from toneserve.gateway import words
from toneserve.samples import call, wav_bytes

ROLES = {0: "agent", 1: "customer"}
RATE = contract.SAMPLE_RATE
WHOLE = 30.0  # window_seconds: each segment is one emotion window (utterances are cut at 30 s)


@pytest.fixture(scope="module")
def recording() -> bytes:
    return wav_bytes(call(16.0, rate=RATE, seed=3).samples, RATE)


@pytest.fixture(scope="module")
def channels(recording) -> np.ndarray:
    """[channels, n] float32: the samples as the gateway decodes the WAV (s16 / 32768)."""
    with wave.open(io.BytesIO(recording)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, w.getnchannels())
    return (pcm.T.astype(np.float32) / 32768).astype(np.float32)


@pytest.fixture(scope="module")
def triton(stack):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    yield grpcclient, client
    client.close()


@pytest.fixture(scope="module")
def with_embeddings(stack, recording) -> Result:
    with Client(stack.gateway) as client:
        return client.analyze(recording, channel_roles=ROLES, window_seconds=WHOLE, include_embeddings=True)


@pytest.fixture(scope="module")
def without_embeddings(stack, recording) -> Result:
    with Client(stack.gateway) as client:
        return client.analyze(recording, channel_roles=ROLES, window_seconds=WHOLE)


def samples_of(segment: Segment, channels: np.ndarray) -> np.ndarray:
    """The segment's samples: its start and end are whole ms (utterances start and end on 32 ms VAD frames, with
    30 ms of padding), so they map back to samples exactly."""
    return channels[segment.channel, segment.start_ms * RATE // 1000:segment.end_ms * RATE // 1000]


def asr_pieces(triton, wav: np.ndarray) -> tuple[str, list[words.Piece]]:
    """Triton's asr ensemble on one clip as the gateway asks it (language auto, no ITN): text and pieces."""
    grpcclient, client = triton
    parameters = client.get_model_config(contract.ASR, as_json=True)["config"]["parameters"]
    ids = {name: json.loads(parameters[key]["string_value"]) for name, key in
           (("language", contract.LANGUAGE_QUERY_IDS), ("textnorm", contract.TEXTNORM_QUERY_IDS))}
    arrays = {contract.WAV: wav[None, :].astype(np.float32), contract.WAV_LENS: np.array([[len(wav)]], np.int64),
              contract.LANGUAGE: np.array([[ids["language"]["auto"]]], np.int64),
              contract.TEXTNORM: np.array([[ids["textnorm"]["woitn"]]], np.int64)}
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    names = [contract.TEXT, contract.TOKENS, contract.TOKEN_MS, contract.TOKEN_END_MS]
    result = client.infer(contract.ASR, inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in names])
    pieces = [words.Piece(p.decode("utf-8"), int(s), int(e)) for p, s, e in
              zip(*(result.as_numpy(n)[0] for n in names[1:])) if s >= 0]
    return result.as_numpy(contract.TEXT).reshape(-1)[0].decode("utf-8"), pieces


def assert_words_of(segment: Segment) -> None:
    """The segment's words are its transcript's (in the language the gateway counted it in: the detected one),
    their times inside the segment and never going back; its sentences' word ranges index into them."""
    text = words.strip_tags(segment.transcript)
    spans = words.spans(text, segment.language.top)
    assert [w.text[:b - a] for w, (a, b) in zip(segment.words, spans)] == [text[a:b] for a, b in spans]
    assert len(segment.words) == len(spans), (segment.transcript, [w.text for w in segment.words])
    for word in segment.words:
        assert segment.start_ms <= word.start_ms <= word.end_ms <= segment.end_ms, (word, segment.start_ms,
                                                                                   segment.end_ms)
    starts = [w.start_ms for w in segment.words]
    assert starts == sorted(starts)
    sentences = segment.text_sentiment.sentences
    if sentences:
        assert sentences[-1].end_word == len(segment.words)


def test_analyze_segments_carry_their_words_timed_by_tritons_pieces(with_embeddings, channels, triton):
    timed = 0
    for segment in with_embeddings.segments:
        assert_words_of(segment)
        text, pieces = asr_pieces(triton, samples_of(segment, channels))
        assert text == segment.transcript
        expected = words.timed(text, segment.language.top, pieces, segment.start_ms, segment.end_ms)
        assert [(w.text, w.start_ms, w.end_ms) for w in segment.words] == \
            [(w.text, w.start_ms, w.end_ms) for w in expected]
        timed += len(segment.words)
    assert timed, "no segment had a word: nothing was compared"


def test_embeddings_only_when_asked_with_the_emotion_models_dimension(with_embeddings, without_embeddings, channels,
                                                                      triton):
    grpcclient, client = triton
    outputs = client.get_model_config(contract.EMOTION, as_json=True)["config"]["output"]
    [dimension] = [int(o["dims"][-1]) for o in outputs if o["name"] == contract.EMBEDDING]
    assert with_embeddings.segments
    for segment in with_embeddings.segments:
        assert segment.embedding is not None and len(segment.embedding) == dimension
        assert segment.emotion_windows == 1
        wav = samples_of(segment, channels)
        inputs = [grpcclient.InferInput(contract.WAV, [1, len(wav)], "FP32"),
                  grpcclient.InferInput(contract.WAV_LENS, [1, 1], "INT64")]
        inputs[0].set_data_from_numpy(wav[None, :])
        inputs[1].set_data_from_numpy(np.array([[len(wav)]], np.int64))
        result = client.infer(contract.EMOTION, inputs, outputs=[grpcclient.InferRequestedOutput(contract.EMBEDDING)])
        np.testing.assert_allclose(segment.embedding, result.as_numpy(contract.EMBEDDING)[0], atol=1e-4, rtol=0)
    # Without the flag: the same segments, and no embedding anywhere (not even an empty one in the response).
    assert [(s.start_ms, s.channel) for s in without_embeddings.segments] == \
        [(s.start_ms, s.channel) for s in with_embeddings.segments]
    assert all(s.embedding is None for s in without_embeddings.segments)
    assert all(len(s.embedding) == 0 for s in without_embeddings.raw.segments)
    print(f"\nembedding: {dimension} floats, {sizes(with_embeddings)}")


def sizes(result: Result) -> str:
    """What the embedding adds to the first segment: protobuf bytes (the segment with and without it) and JSON
    bytes (the SDK's to_dict as `json.dumps` writes it, and protobuf's JSON mapping, both without indentation)."""
    from google.protobuf import json_format

    segment = result.raw.segments[0]
    bare = type(segment)()
    bare.CopyFrom(segment)
    del bare.embedding[:]

    def mapped(message) -> int:
        return len(json.dumps(json_format.MessageToDict(message), separators=(",", ":")))

    plain = result.to_dict()["segments"][0]
    return (f"protobuf {segment.ByteSize() - bare.ByteSize()} B, SDK JSON {len(json.dumps(plain['embedding']))} B, "
            f"protobuf JSON mapping {mapped(segment) - mapped(bare)} B")


def test_the_live_stream_carries_the_words(stack, recording, with_embeddings):
    live = live_wav_header(RATE, 2) + recording[44:]
    with Client(stack.gateway) as client:
        *segments, result = client.analyze_stream([live[i:i + 3200] for i in range(0, len(live), 3200)],
                                                  channel_roles=ROLES, window_seconds=WHOLE, timeout=300)
    assert segments and all(isinstance(s, Segment) for s in segments) and isinstance(result, Result)
    final = {(s.channel, s.start_ms, s.end_ms): s for s in result.segments}
    for segment in segments:
        assert_words_of(segment)
        assert segment.words == final[segment.channel, segment.start_ms, segment.end_ms].words
        assert segment.embedding is None
    assert sum(len(s.words) for s in segments), "no streamed segment had a word: nothing was compared"
