"""End to end: client -> real gateway -> real tritonserver (cpu profile, tiny random-weight models)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from toneserve.client.sdk import AnalyzeError, Client
from toneserve.gateway.audio import decode, fixed_windows
from toneserve.samples import speechlike, wav_bytes

DISTRIBUTIONS = ("language", "asr_emotion", "event", "itn", "emotion")


@pytest.fixture(scope="module")
def clip() -> bytes:
    return wav_bytes(speechlike(7.3, rate=16000, seed=3), 16000)


@pytest.fixture(scope="module")
def client(stack):
    with Client(stack.gateway) as c:
        yield c


@pytest.fixture(scope="module")
def analysed(client, clip):
    return client.analyze(clip, window_seconds=2.0)


def test_one_result_per_window_with_every_field(analysed):
    # 7.3 s in 2 s windows: 2 + 2 + 2 + 1.3.
    assert [(s.start_ms, s.end_ms) for s in analysed.segments] == [(0, 2000), (2000, 4000), (4000, 6000), (6000, 7300)]
    for segment in analysed.segments:
        assert segment.channel == -1  # mixed down: per-channel speakers come with the gateway issue
        for name in DISTRIBUTIONS:
            assert segment.HasField(name)
            dist = getattr(segment, name)
            assert len(dist.labels) == len(dist.probabilities) > 1
            assert math.isclose(sum(dist.probabilities), 1.0, abs_tol=1e-4)
            assert dist.top == dist.labels[int(np.argmax(dist.probabilities))]
        assert list(segment.emotion.labels) == ["angry", "disgusted", "fearful", "happy", "neutral",
                                                "other", "sad", "surprised", "unknown"]
        assert {"zh", "en", "yue", "ja", "ko"} <= set(segment.language.labels)
        assert isinstance(segment.transcript, str)


def test_metadata_says_random_weights_loudly(analysed):
    meta = analysed.metadata
    assert meta.random_weights
    assert any("RANDOM WEIGHTS" in w for w in meta.warnings)
    assert {(m.name, m.family, m.weights_origin) for m in meta.models} == {
        ("emotion", "emotion2vec", "random"), ("asr", "sensevoice", "random")}
    assert meta.request_id and meta.audio_seconds == pytest.approx(7.3, abs=1e-3)
    assert list(meta.emotion_labels) == list(analysed.segments[0].emotion.labels)


def _windows(clip: bytes, seconds: float):
    samples = decode(clip).samples
    return [samples[a:b] for a, b in fixed_windows(len(samples), seconds)]


def test_emotion_through_triton_equals_local_onnxruntime(analysed, clip, models_root):
    encoder = ort.InferenceSession(str(models_root / "emotion2vec" / "model.onnx"), providers=["CPUExecutionProvider"])
    for segment, wav in zip(analysed.segments, _windows(clip, 2.0)):
        logits, _ = encoder.run(None, {"wav": wav[None, :], "wav_lens": np.array([len(wav)], np.int64)})
        local = np.exp(logits[0] - logits[0].max())
        local /= local.sum()
        np.testing.assert_allclose(np.array(segment.emotion.probabilities), local, atol=1e-4, rtol=0)


def test_asr_through_triton_equals_local_pipeline(analysed, clip, models_root):
    from toneserve.export.sensevoice_decode import ctc_greedy_decode, load_decode_assets

    folder = models_root / "sensevoice"
    frontend = ort.InferenceSession(str(folder / "frontend.onnx"), providers=["CPUExecutionProvider"])
    encoder = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assets = load_decode_assets(folder / "decode_assets.json")
    ids = assets["language_query_ids"], assets["textnorm_query_ids"]
    for segment, wav in zip(analysed.segments, _windows(clip, 2.0)):
        feats, feat_lens = frontend.run(None, {"wav": wav[None, :], "wav_lens": np.array([len(wav)], np.int64)})
        logits, lens = encoder.run(None, {"speech": feats, "speech_lengths": feat_lens,
                                          "language": np.array([ids[0]["auto"]], np.int64),
                                          "textnorm": np.array([ids[1]["woitn"]], np.int64)})
        local = ctc_greedy_decode(logits[0], int(lens[0]), assets)
        assert segment.transcript == local["text"]
        for name in ("language", "event", "itn"):
            dist = getattr(segment, name)
            np.testing.assert_allclose(dist.probabilities, [local[name][label] for label in dist.labels], atol=1e-4)
        np.testing.assert_allclose(segment.asr_emotion.probabilities,
                                   [local["emotion"][label] for label in segment.asr_emotion.labels], atol=1e-4)


def test_garbage_is_invalid_argument_and_the_server_keeps_serving(client, clip):
    with pytest.raises(AnalyzeError) as error:
        client.analyze(b"\x00\x01 this is not audio " * 200)
    assert error.value.status == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.code == "INVALID_AUDIO"
    assert "could not" in str(error.value) or "not a recognised audio container" in str(error.value)
    assert len(client.analyze(clip).segments) >= 1


@pytest.mark.parametrize("kwargs, code", [({"window_seconds": 0.01}, "INVALID_ARGUMENT"),
                                          ({"language": "xx"}, "INVALID_ARGUMENT")])
def test_bad_fields_are_rejected_with_their_code(client, clip, kwargs, code):
    with pytest.raises(AnalyzeError) as error:
        client.analyze(clip, **kwargs)
    assert error.value.status == grpc.StatusCode.INVALID_ARGUMENT and error.value.code == code


def test_8khz_stereo_is_resampled_and_analysed(client):
    stereo = np.stack([speechlike(3.0, rate=8000, seed=1), speechlike(3.0, rate=8000, seed=2)], axis=1)
    response = client.analyze(wav_bytes(stereo, 8000))
    assert response.metadata.sample_rate_in == 8000 and response.metadata.channels_in == 2
    assert response.metadata.audio_seconds == pytest.approx(3.0, abs=0.01)
    assert len(response.segments) == 1 and response.segments[0].end_ms == 3000


def test_cli_analyze_prints_json(stack, tmp_path, clip):
    path = tmp_path / "clip.wav"
    path.write_bytes(clip)
    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "analyze", str(path), "--address", stack.gateway,
                           "--window-seconds", "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert len(result["segments"]) == 2 and result["metadata"]["random_weights"] is True


def test_cli_analyze_against_no_server_is_a_clear_error(tmp_path, clip):
    from toneserve.triton import free_port

    path = tmp_path / "clip.wav"
    path.write_bytes(clip)
    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "analyze", str(path),
                           "--address", f"127.0.0.1:{free_port()}", "--timeout", "5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot reach the toneserve gateway" in done.stderr and "Traceback" not in done.stderr
