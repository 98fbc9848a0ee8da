"""Diarization through the real stack: a mono conversation of real voices (LibriSpeech readers, real
speaker-model weights from Resemblyzer's wheel) comes back with its speakers, through the SDK, a whole
upload and a live stream; the served speaker model equals the exported graph run locally; bad hints
are refused by the gateway itself; `toneserve eval diarization` scores a folder."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import soundfile
import tritonclient.grpc as triton

from toneserve import contract
from toneserve.client import Client
from toneserve.client.sdk import live_wav_header
from toneserve.loadtest import der, diarization_corpus
from toneserve.samples import wav_bytes
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

RATE = 16000


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory):
    """A 35 s mono conversation of two LibriSpeech readers: (path, reference turns)."""
    readers = diarization_corpus.load_readers()
    audio, turns, _ = diarization_corpus.conversation(readers, 2, 35.0, np.random.default_rng(7))
    path = tmp_path_factory.mktemp("diarization") / "two.wav"
    path.write_bytes(wav_bytes(audio[:, None], RATE))
    return path, turns


def _der(turns, result) -> float:
    report = der.score({"two": turns}, {"two": [(s.start, s.end, s.speaker) for s in result.segments]})
    return report.der


def test_a_mono_conversation_comes_back_with_its_two_speakers(stack, two_voices):
    path, turns = two_voices
    with Client(stack.gateway) as client:
        result = client.analyze(path)
        uploaded = client.analyze(path, upload=True)
    assert [s.speaker for s in result.speakers] == ["speaker_1", "speaker_2"]
    assert {s.speaker for s in result.segments} == {"speaker_1", "speaker_2"}
    assert _der(turns, result) < 0.25, der.format_table(der.score({"two": turns}, {"two": [
        (s.start, s.end, s.speaker) for s in result.segments]}))
    speaker = next(m for m in result.metadata.models if m.name == contract.SPEAKER)
    assert speaker.family == "speaker" and speaker.weights_origin == "package"
    # The same audio through AnalyzeUpload: the same speakers on the same segments.
    assert [(s.start_ms, s.speaker) for s in uploaded.segments] == [(s.start_ms, s.speaker) for s in result.segments]
    # The rollups count the diarized speakers: their talk adds up to the segments'.
    for summary in result.speakers:
        own = [s for s in result.segments if s.speaker == summary.speaker]
        assert summary.segments == len(own)
        assert summary.talk_seconds == pytest.approx(sum(s.end - s.start for s in own), abs=0.01)


def test_hints_are_honoured(stack, two_voices):
    path, _ = two_voices
    with Client(stack.gateway) as client:
        one = client.analyze(path, speakers_expected=1)
        off = client.analyze(path, diarization="off")
    assert [s.speaker for s in one.speakers] == ["channel_0"]
    assert [s.speaker for s in off.speakers] == ["channel_0"]


def test_a_live_stream_gets_provisional_speakers_then_the_clustered_ones(stack, two_voices):
    path, _ = two_voices
    pcm = soundfile.read(path, dtype="int16")[0].tobytes()
    chunks = [live_wav_header(RATE)] + [pcm[i:i + 16000] for i in range(0, len(pcm), 16000)]
    with Client(stack.gateway) as client:
        events = list(client.analyze_stream(iter(chunks)))
    *segments, result = events
    assert segments and all(s.provisional_speaker == s.speaker for s in segments)
    assert {s.provisional_speaker for s in segments} >= {"speaker_1"}
    assert [s.speaker for s in result.speakers] == ["speaker_1", "speaker_2"]
    sent = {s.start_ms: s.provisional_speaker for s in segments}
    assert {s.start_ms: s.provisional_speaker for s in result.segments} == sent


@pytest.mark.parametrize("hints", [dict(min_speakers=3, max_speakers=2), dict(speakers_expected=31),
                                   dict(speakers_expected=-2)])
def test_bad_hints_are_refused_by_the_gateway(stack, hints):
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Analyze(pb.AnalyzeRequest(audio=b"not even audio", diarization=pb.Diarization(**hints)), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.value.trailing_metadata())[contract.ERROR_CODE_METADATA] == "INVALID_ARGUMENT"


def test_the_served_speaker_model_equals_the_exported_graph(stack, models_root, two_voices):
    """Clips of different lengths sent at once (Triton batches them, padded) give what the exported graph
    gives each alone in ONNX Runtime."""
    path, _ = two_voices
    audio = soundfile.read(path, dtype="float32")[0]
    clips = [audio[RATE * k: RATE * k + n] for k, n in enumerate((8000, 19200, 25600, 40000, 70000))]
    session = ort.InferenceSession(str(models_root / "speaker" / "model.onnx"), providers=["CPUExecutionProvider"])
    client = triton.InferenceServerClient(stack.triton_grpc)
    results = []

    def done(result, error):
        results.append((result, error))

    for clip in clips:
        inputs = [triton.InferInput(contract.WAV, [1, len(clip)], "FP32"),
                  triton.InferInput(contract.WAV_LENS, [1, 1], "INT64")]
        inputs[0].set_data_from_numpy(clip[None])
        inputs[1].set_data_from_numpy(np.array([[len(clip)]], np.int64))
        client.async_infer(contract.SPEAKER, inputs, done, request_id=str(len(clip)))
    for _ in range(600):
        if len(results) == len(clips):
            break
        time.sleep(0.05)
    assert len(results) == len(clips) and all(error is None for _, error in results)
    for result, _ in results:
        n = int(result.get_response().id)
        clip = next(c for c in clips if len(c) == n)
        local = session.run(["embedding"], {"wav": clip[None], "wav_lens": np.array([n], np.int64)})[0][0]
        np.testing.assert_allclose(result.as_numpy(contract.EMBEDDING)[0], local, atol=1e-5)


def test_eval_diarization_scores_a_folder(stack, tmp_path, two_voices):
    path, turns = two_voices
    (tmp_path / "two.wav").write_bytes(path.read_bytes())
    der.write_rttm(tmp_path / "two.rttm", "two", turns)
    out = subprocess.run([sys.executable, "-m", "toneserve", "eval", "diarization", str(tmp_path),
                          "--address", stack.gateway, "--json", str(tmp_path / "der.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "overall" in out.stdout and "DER %" in out.stdout
    figures = json.loads((tmp_path / "der.json").read_text())
    assert figures["overlap_not_scored"]["collar"] == 0.5
    assert figures["overlap_not_scored"]["files"][0]["hyp_speakers"] == 2
