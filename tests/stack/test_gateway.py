"""The Analyze API end to end: speakers, utterances, rollups, formats, uploads, limits and errors.

A real gateway and a real tritonserver (cpu profile, tiny random-weight emotion2vec+ and
SenseVoice, silero VAD with its real weights): segmentation, talk time and overlaps are
real; transcripts and emotions are meaningless but must be plumbed faithfully.
"""
from __future__ import annotations

import numpy as np
import pytest

from toneserve.client.sdk import Client
from toneserve.samples import FORMATS, SPEAKER_F0, call, encode, wav_bytes

ROLES = {0: "agent", 1: "customer"}


@pytest.fixture(scope="module")
def client(stack):
    with Client(stack.gateway) as c:
        yield c


@pytest.fixture(scope="module")
def conversation():
    return call(40.0, rate=16000, seed=5)


@pytest.fixture(scope="module")
def analysed(client, conversation):
    return client.analyze(wav_bytes(conversation.samples, 16000), channel_roles=ROLES)


def intervals_length(intervals) -> float:
    """Length of the union of (start, end) intervals."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def test_each_channel_is_a_speaker_with_its_role(analysed):
    assert [(s.speaker, s.channel) for s in analysed.speakers] == [("agent", 0), ("customer", 1)]
    assert {s.speaker for s in analysed.segments} == {"agent", "customer"}
    for segment in analysed.segments:
        assert ROLES[segment.channel] == segment.speaker


def merged_turns(conversation, speaker: int, gap: float) -> list[tuple[float, float]]:
    """A speaker's turns, with pauses shorter than `gap` (which VAD does not split at) closed."""
    merged = []
    for who, start, end in sorted(conversation.turns, key=lambda t: t[1]):
        if who != speaker:
            continue
        if merged and start - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def test_segments_follow_the_turns_of_their_channel(analysed, conversation):
    """Every segment lies inside (or within VAD padding of) a turn of its own speaker."""
    pad = 0.15  # 30 ms VAD padding, 32 ms frames, and the fade-out of a turn still heard as speech
    for segment in analysed.segments:
        start, end = segment.start_ms / 1000, segment.end_ms / 1000
        turns = merged_turns(conversation, segment.channel, gap=0.3 + 2 * pad)
        assert any(a - pad <= start and end <= b + pad for a, b in turns), (segment.speaker, start, end, turns)
        assert end - start <= 30.0


def test_talk_time_and_overlaps_match_the_recording(analysed, conversation):
    for summary in analysed.speakers:
        truth = conversation.talk_seconds(summary.channel)
        # VAD pads 30 ms at each end of an utterance and drops the quietest syllable edges.
        assert summary.talk_seconds == pytest.approx(truth, rel=0.1), summary.speaker
        assert summary.non_talk_seconds == pytest.approx(analysed.call.duration_seconds - summary.talk_seconds)
    assert conversation.overlap_seconds() > 1.0, "the generated call has overlaps to find"
    assert analysed.call.overlap_seconds == pytest.approx(conversation.overlap_seconds(), abs=0.5)
    assert analysed.call.interruptions >= 1
    union = intervals_length([(a, b) for _, a, b in conversation.turns])
    assert analysed.call.talk_seconds == pytest.approx(union, rel=0.1)
    assert analysed.call.duration_seconds == pytest.approx(40.0, abs=0.01)


def test_every_segment_carries_every_field(analysed):
    emotion_labels = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
    for segment in analysed.segments:
        for name in ("language", "asr_emotion", "event", "itn", "emotion"):
            dist = getattr(segment, name)
            assert len(dist.labels) == len(dist.probabilities) > 1
            assert sum(dist.probabilities) == pytest.approx(1.0, abs=1e-4)
            assert dist.top == dist.labels[int(np.argmax(dist.probabilities))]
        assert list(segment.emotion.labels) == emotion_labels
        assert segment.emotion_windows == int(np.ceil((segment.end_ms - segment.start_ms) / 5000 - 1e-9))
        assert -1 <= segment.judgement.score <= 1 and 0 <= segment.judgement.arousal <= 1
        assert segment.judgement.sentiment in ("positive", "neutral", "negative")
        assert segment.prosody.loudness_dbfs < 0 and segment.prosody.voiced_fraction > 0


def test_pitch_tells_the_speakers_apart(analysed, conversation):
    """The generated speakers talk at different pitches; prosody measures each on its own channel."""
    pitch = {s.speaker: np.median([x.prosody.pitch_hz for x in analysed.segments if x.speaker == s.speaker])
             for s in analysed.speakers}
    for channel, name in ROLES.items():
        assert pitch[name] == pytest.approx(SPEAKER_F0[channel], rel=0.2)


def test_metadata_names_models_labels_and_thresholds(analysed):
    meta = analysed.metadata
    assert meta.random_weights and any("RANDOM WEIGHTS" in w for w in meta.warnings)
    assert {(m.name, m.weights_origin) for m in meta.models} == {
        ("emotion", "random"), ("asr", "random"), ("vad", "package"), ("speaker", "package"),
        ("text_sentiment", "random")}
    assert {s.name for s in meta.label_sets} == {"emotion", "asr_emotion", "event", "language", "itn"}
    assert meta.thresholds.min_silence_ms == 300 and meta.thresholds.vad_threshold == 0.5
    assert meta.channels_in == 2 and meta.sample_rate_in == 16000 and meta.codec == "pcm_s16le"


def test_rollups_are_consistent_with_the_segments(analysed):
    for summary in analysed.speakers:
        mine = [s for s in analysed.segments if s.speaker == summary.speaker]
        assert summary.segments == len(mine) == len(summary.emotion_timeline)
        talk = sum(s.end_ms - s.start_ms for s in mine) / 1000
        assert summary.talk_seconds == pytest.approx(talk, abs=1e-3)
        weights = np.array([s.end_ms - s.start_ms for s in mine], float)
        assert summary.average_sentiment == pytest.approx(
            np.average([s.judgement.score for s in mine], weights=weights), abs=1e-5)
        assert [q.index for q in summary.quarters] == [0, 1, 2, 3]
        assert sum(q.talk_seconds for q in summary.quarters) == pytest.approx(talk, abs=1e-3)
    assert analysed.call.segments == len(analysed.segments)


def test_thresholds_are_applied_per_request(client, conversation):
    audio = wav_bytes(conversation.samples, 16000)
    strict = client.analyze(audio, thresholds={"min_silence_ms": 2000, "vad_threshold": 0.9})
    assert strict.metadata.thresholds.min_silence_ms == 2000
    assert strict.metadata.thresholds.vad_threshold == pytest.approx(0.9)
    loose = client.analyze(audio, thresholds={"min_silence_ms": 100})
    assert len(loose.segments) > len(strict.segments)


def test_one_recording_copied_to_both_channels_is_one_speaker(client, conversation):
    mono = conversation.mono()
    response = client.analyze(wav_bytes(np.stack([mono, mono], axis=1), 16000), channel_roles=ROLES)
    assert [(s.speaker, s.channel) for s in response.speakers] == [("mix", -1)]
    assert any("carry the same audio" in w for w in response.metadata.warnings)
    silent_start = np.concatenate([np.zeros((16000 * 31, 2), np.float32), conversation.samples[:16000 * 10]])
    assert [s.speaker for s in client.analyze(wav_bytes(silent_start, 16000), channel_roles=ROLES).speakers] == \
        ["agent", "customer"]  # equal only in the silence: two speakers still


def test_mixing_channels_gives_one_speaker(client, conversation):
    mixed = client.analyze(wav_bytes(conversation.samples, 16000), mix_channels=True)
    assert [(s.speaker, s.channel) for s in mixed.speakers] == [("mix", -1)]
    assert {s.channel for s in mixed.segments} == {-1}


@pytest.fixture(scope="module")
def short_call():
    return call(12.0, rate=16000, seed=8)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_gives_the_segments_of_the_wav(client, short_call, fmt):
    """The same call in each container / codec: same speakers, same utterances within 100 ms."""
    reference = client.analyze(wav_bytes(short_call.samples, 16000))
    response = client.analyze(encode(short_call.samples, 16000, fmt))
    assert len(response.segments) == len(reference.segments), fmt
    for ours, theirs in zip(response.segments, reference.segments):
        assert ours.channel == theirs.channel
        assert abs(ours.start_ms - theirs.start_ms) <= 100 and abs(ours.end_ms - theirs.end_ms) <= 100


def test_8khz_telephone_audio_is_analysed(client):
    """Resampled to 16 kHz, not analysed as if it were 16 kHz (which gives empty transcripts and no speech)."""
    phone = call(15.0, rate=8000, seed=9)
    response = client.analyze(encode(phone.samples, 8000, "wav"))
    assert response.metadata.sample_rate_in == 8000
    assert response.metadata.audio_seconds == pytest.approx(15.0, abs=0.01)
    assert {s.channel for s in response.segments} == {0, 1}
    for summary in response.speakers:
        # silero hears the synthetic 210 Hz voice less surely once band-limited to 4 kHz: at least half
        # of its talk time is found here (real 8 kHz speech: see the test below).
        assert 0.5 * phone.talk_seconds(summary.channel) <= summary.talk_seconds <= 1.1 * phone.talk_seconds(summary.channel)
    assert all(s.transcript for s in response.segments)


def test_real_speech_at_8khz_gives_the_segments_of_16khz(client, shared_speech):
    """A real recording, once at 16 kHz and once band-limited to telephone 8 kHz: the same utterances."""
    import soxr

    from toneserve.gateway.audio import decode

    wide = decode((shared_speech / "zh" / "funasr-sample.wav").read_bytes()).samples[0]
    narrow = soxr.resample(wide, 16000, 8000)
    at16 = client.analyze(wav_bytes(wide, 16000))
    at8 = client.analyze(wav_bytes(narrow, 8000))
    assert len(at8.segments) == len(at16.segments) >= 1
    for a, b in zip(at8.segments, at16.segments):
        assert abs(a.start_ms - b.start_ms) <= 100 and abs(a.end_ms - b.end_ms) <= 100


def test_upload_gives_what_analyze_gives(client, conversation):
    audio = wav_bytes(conversation.samples, 16000)
    unary = client.analyze(audio, channel_roles=ROLES)
    streamed = client.analyze(audio, channel_roles=ROLES, upload=True)
    strip = lambda r: [(s.start_ms, s.end_ms, s.speaker, s.transcript) for s in r.segments]
    assert strip(streamed) == strip(unary)
    for ours, theirs in zip(streamed.segments, unary.segments):  # batched with other requests or not: 1e-5
        np.testing.assert_allclose(ours.emotion.probabilities, theirs.emotion.probabilities, atol=1e-5)


def test_triton_results_equal_local_onnxruntime(client, short_call, models_root):
    """A segment's emotion (duration-weighted over its windows) and transcript equal local ORT runs."""
    import onnxruntime as ort

    from toneserve.gateway.audio import decode
    from toneserve.gateway.pipeline import emotion_windows
    from toneserve.model_repository.runners.sensevoice_decode import ctc_greedy_decode, load_decode_assets

    audio = wav_bytes(short_call.samples, 16000)
    response = client.analyze(audio, window_seconds=1.0)
    samples = decode(audio).samples
    emotion = ort.InferenceSession(str(models_root / "emotion2vec" / "model.onnx"), providers=["CPUExecutionProvider"])
    folder = models_root / "sensevoice"
    frontend = ort.InferenceSession(str(folder / "frontend.onnx"), providers=["CPUExecutionProvider"])
    encoder = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assets = load_decode_assets(folder / "decode_assets.json")
    assert len(response.segments) >= 2
    for segment in response.segments:
        # silero cuts on 512-sample frames plus 30 ms (480-sample) padding: whole milliseconds.
        wav = samples[segment.channel, segment.start_ms * 16:segment.end_ms * 16]
        probs, weights = [], []
        for a, b in emotion_windows(len(wav), 1.0):
            (logits,) = emotion.run(["logits"], {"wav": wav[None, a:b], "wav_lens": np.array([b - a], np.int64)})
            p = np.exp(logits[0] - logits[0].max())
            probs.append(p / p.sum())
            weights.append(b - a)
        np.testing.assert_allclose(segment.emotion.probabilities, np.average(probs, axis=0, weights=weights),
                                   atol=1e-4)
        feats, lens = frontend.run(None, {"wav": wav[None], "wav_lens": np.array([len(wav)], np.int64)})
        logits, out_lens = encoder.run(None, {"speech": feats, "speech_lengths": lens,
                                              "language": np.array([assets["language_query_ids"]["auto"]], np.int64),
                                              "textnorm": np.array([assets["textnorm_query_ids"]["woitn"]], np.int64)})
        assert segment.transcript == ctc_greedy_decode(logits[0], int(out_lens[0]), assets)["text"]


def test_padding_to_length_buckets_changes_nothing(stack):
    """Where the server batches only equal shapes (gpu profile), the gateway pads clips to length
    buckets and passes the true length: results equal the unpadded call (here on the cpu Triton,
    whose runner would pad by itself, so both paths can be compared)."""
    import asyncio
    from dataclasses import replace

    from toneserve import contract
    from toneserve.gateway.inference import Inference, bucket_samples
    from toneserve.samples import speechlike

    async def both(wav):
        inference = Inference(stack.triton_grpc)
        await inference.load()
        try:
            exact = await inference.emotion(wav), await inference.asr(wav)
            for name in (contract.EMOTION, contract.ASR):
                inference.models[name] = replace(inference.models[name], ragged=False)
            padded = await inference.emotion(wav), await inference.asr(wav)
        finally:
            await inference.close()
        return exact, padded

    wav = speechlike(2.3, seed=4)
    assert bucket_samples(len(wav)) == 3 * 16000
    (emotion, asr), (emotion_padded, asr_padded) = asyncio.run(both(wav))
    np.testing.assert_allclose(emotion_padded[1], emotion[1], atol=1e-5)
    assert asr_padded.text == asr.text
    for name, (labels, probs) in asr.distributions.items():
        np.testing.assert_allclose(asr_padded.distributions[name][1], probs, atol=1e-5)
