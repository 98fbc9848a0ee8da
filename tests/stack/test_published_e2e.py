"""End to end on checkpoint folders in the published layouts, against FunASR on the same folders.

The folders are those of ``iic/emotion2vec_plus_large`` and ``iic/SenseVoiceSmall`` with random weights
(tests/published_layout.py: the real config.yaml, configuration.json and vocabulary). ``toneserve export``
exports them, a real tritonserver and gateway (``toneserve serve``) serve them, and what they answer is
compared with ``funasr.AutoModel(model=FOLDER).generate(...)`` run here on the same samples:

- emotion2vec+: the served probabilities (Triton's ``emotion`` ensemble on the whole clip, and the
  gateway's per segment when the segment is one emotion window) equal FunASR's scores within 1e-4;
- SenseVoice: the token ids (Triton's ``asr`` ensemble, its pieces mapped back to ids) equal the ones
  FunASR's greedy CTC search emits for the speech frames, and the transcripts (Triton's and the gateway's)
  equal FunASR's tokenizer's text for them. SenseVoice is asked for ``language="auto"``, ``use_itn=False``
  on both sides, and FunASR's frontend is given ``dither=0`` (the published config leaves FunASR's random
  dither on, which the export leaves off: README, "Dither 0").

With random weights the first four output frames of SenseVoice (its language / emotion / event / ITN
queries) are not tags, so FunASR's text starts with whatever they argmax to; the comparison takes FunASR's
emitted ids from its own per-frame argmax (a hook on its CTC projection, checked against the text it returns) and
compares the speech frames'. Clips: synthetic speech (always), and real speech from the
shared speech folder when it is there. The largest differences are printed (``-s``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.published_layout import published, read_real_tokens
from tests.support import SHARED_SPEECH, Stack, processes_using, stop_stack, wait_for_health
from toneserve import contract
from toneserve.samples import speechlike

SR = contract.SAMPLE_RATE
EMOTION_TOLERANCE = 1e-4
# Real speech of the shared folder (when present): short enough that VAD keeps each in a few segments.
REAL_CLIPS = ("en/librispeech-1221-135766-0002.wav", "zh/aishell-long.wav")
LARGEST: dict[str, float] = {}
COMPARED: dict[str, int] = {}


def _note(name: str, value: float) -> None:
    LARGEST[name] = max(LARGEST.get(name, 0.0), float(value))


def _count(name: str, n: int = 1) -> None:
    COMPARED[name] = COMPARED.get(name, 0) + n


# ------------------------------------------------------------------------------------------- clips


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def _synthetic() -> np.ndarray:
    rng = np.random.default_rng(7)
    quiet = 0.002 * rng.standard_normal(SR // 2)
    return _pcm16(np.concatenate([quiet, speechlike(3.0, seed=11, pauses=False), quiet]))


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def _wav_bytes(pcm: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """Name -> int16 samples, each a whole number of VAD frames long (so that every segment the gateway
    reports in ms maps back to whole samples)."""
    out = {"synthetic": _synthetic()}
    if (SHARED_SPEECH / "MANIFEST.tsv").is_file():
        for name in REAL_CLIPS:
            out[name] = _read_wav(SHARED_SPEECH / name)
    return {name: pcm[:len(pcm) // contract.VAD_FRAME * contract.VAD_FRAME] for name, pcm in out.items()}


def _float(pcm: np.ndarray) -> np.ndarray:
    """What the gateway decodes s16 PCM to (and what FunASR is given here)."""
    return (pcm.astype(np.float32) / 32768).astype(np.float32)


# ------------------------------------------------------------------------------- export and serve


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return {"emotion2vec": published(tmp_path_factory, "emotion2vec_plus_large"),
            "sensevoice": published(tmp_path_factory, "SenseVoiceSmall")}


@pytest.fixture(scope="module")
def published_repository(folders, toneserve_home, tmp_path_factory) -> Path:
    """`toneserve export` of both folders (fp32 only, the cpu profile)."""
    from toneserve import paths

    out = tmp_path_factory.mktemp("published-export")
    command = [sys.executable, "-m", "toneserve.cli", "export", "--emotion2vec", str(folders["emotion2vec"]),
               "--sensevoice", str(folders["sensevoice"]), "--variants", "--profiles", "cpu",
               "--models-dir", str(out / "models"), "--repository", str(out / "repository")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"toneserve export failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    for family, folder in folders.items():
        manifest = json.loads((out / "models" / family / "manifest.json").read_text())
        assert manifest["source"] == {"kind": "local", "ref": str(folder.resolve())}, manifest["source"]
    return out / "repository" / paths.repository_name("cpu", "fp32")


@pytest.fixture(scope="module")
def published_stack(published_repository, toneserve_home) -> Stack:
    from toneserve.triton import free_port

    ports = {name: free_port() for name in ("gateway", "http", "grpc", "metrics", "gateway_metrics")}
    log = toneserve_home / "serve-published.log"
    command = [sys.executable, "-m", "toneserve.cli", "serve", "--repository", str(published_repository),
               "--port", str(ports["gateway"]), "--triton-http-port", str(ports["http"]),
               "--triton-grpc-port", str(ports["grpc"]), "--triton-metrics-port", str(ports["metrics"]),
               "--metrics-port", str(ports["gateway_metrics"])]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    stack = Stack(f"127.0.0.1:{ports['gateway']}", f"127.0.0.1:{ports['grpc']}", f"127.0.0.1:{ports['http']}",
                  process, log, f"http://127.0.0.1:{ports['gateway_metrics']}/metrics")
    try:
        wait_for_health(stack.gateway, process, log, timeout=600)
        yield stack
    finally:
        code = stop_stack(process)
        leftovers = processes_using(published_repository)
        assert code == 0, f"serve exited with {code} on Ctrl-C:\n{log.read_text()}"
        assert not leftovers, f"processes outlived the stack: {leftovers}"


# ------------------------------------------------------------------------------------------ FunASR


class FunASR:
    """FunASR's AutoModel on the two folders, with what its SenseVoice search emitted recorded."""

    def __init__(self, folders: dict[str, Path]):
        from funasr import AutoModel

        common = {"device": "cpu", "disable_update": True, "log_level": "ERROR", "disable_pbar": True}
        self.emotion2vec = AutoModel(model=str(folders["emotion2vec"]), **common)
        self.sensevoice = AutoModel(model=str(folders["sensevoice"]), frontend_conf={"dither": 0.0}, **common)
        self.tokenizer = self.sensevoice.kwargs["tokenizer"]
        self.logits: list[np.ndarray] = []
        self.sensevoice.model.ctc.ctc_lo.register_forward_hook(
            lambda module, inputs, output: self.logits.append(output.detach().float().numpy()))

    def emotion(self, wav: np.ndarray) -> tuple[list[str], np.ndarray]:
        [result] = self.emotion2vec.generate(wav, granularity="utterance", extract_embedding=False)
        return result["labels"], np.asarray(result["scores"], np.float64)

    def asr(self, wav: np.ndarray) -> dict:
        """FunASR's text, the ids it emitted (all frames), the speech frames' ids and their text, and the
        logits of the four query frames."""
        self.logits.clear()
        [result] = self.sensevoice.generate(wav, language="auto", use_itn=False)
        [logits] = self.logits
        path = logits[0].argmax(-1)
        blank = self.sensevoice.model.blank_id

        def emitted(frames: np.ndarray) -> list[int]:
            keep = np.concatenate([[True], frames[1:] != frames[:-1]]) if frames.size else frames.astype(bool)
            return [int(t) for t in frames[keep] if t != blank]

        every = emitted(path)
        assert self.tokenizer.decode(every) == result["text"], "the hook saw other frames than FunASR decoded"
        speech = emitted(path[4:])
        # Where each emitted speech token starts, in ms as FunASR's timestamps put it (max(frame * 60 - 30, 0)).
        frames = path[4:]
        starts = [s for s in range(len(frames)) if frames[s] != blank and (s == 0 or frames[s] != frames[s - 1])]
        return {"text": result["text"], "ids": every, "speech_ids": speech,
                "speech_ms": [max(s * 60 - 30, 0) for s in starts],
                "speech_text": self.tokenizer.decode(speech) if speech else "", "query_logits": logits[0, :4]}


@pytest.fixture(scope="module")
def funasr(folders) -> FunASR:
    return FunASR(folders)


# ------------------------------------------------------------------------------------------ Triton


class Triton:
    def __init__(self, url: str):
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        asr = self.client.get_model_config(contract.ASR, as_json=True)["config"]["parameters"]
        emotion = self.client.get_model_config(contract.EMOTION, as_json=True)["config"]["parameters"]
        self.asr_params = {k: v["string_value"] for k, v in asr.items()}
        self.emotion_labels = json.loads(emotion[contract.EMOTION_LABELS]["string_value"])

    def _input(self, name: str, array: np.ndarray):
        tensor = self.grpc.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array)
        return tensor

    def _wav(self, wav: np.ndarray) -> list:
        return [self._input(contract.WAV, wav[None, :]), self._input(contract.WAV_LENS, np.array([[len(wav)]]))]

    def emotion(self, wav: np.ndarray) -> np.ndarray:
        result = self.client.infer(contract.EMOTION, self._wav(wav),
                                   outputs=[self.grpc.InferRequestedOutput(contract.PROBS)])
        return result.as_numpy(contract.PROBS)[0].astype(np.float64)

    def asr(self, wav: np.ndarray) -> dict:
        language = json.loads(self.asr_params[contract.LANGUAGE_QUERY_IDS])["auto"]
        textnorm = json.loads(self.asr_params[contract.TEXTNORM_QUERY_IDS])["woitn"]
        inputs = [*self._wav(wav), self._input(contract.LANGUAGE, np.array([[language]], np.int64)),
                  self._input(contract.TEXTNORM, np.array([[textnorm]], np.int64))]
        names = [contract.TEXT, contract.TOKENS, contract.TOKEN_MS, *contract.ASR_DISTRIBUTIONS.values()]
        result = self.client.infer(contract.ASR, inputs, outputs=[self.grpc.InferRequestedOutput(n) for n in names])
        pieces = [p.decode("utf-8") for p in result.as_numpy(contract.TOKENS)[0] if p]
        out = {"text": result.as_numpy(contract.TEXT).reshape(-1)[0].decode("utf-8"), "pieces": pieces,
               "token_ms": [int(t) for t in result.as_numpy(contract.TOKEN_MS)[0] if t >= 0]}
        for family, name in contract.ASR_DISTRIBUTIONS.items():
            out[family] = (json.loads(self.asr_params[contract.ASR_LABELS[family]]),
                           result.as_numpy(name)[0].astype(np.float64))
        return out


@pytest.fixture(scope="module")
def triton(published_stack) -> Triton:
    return Triton(published_stack.triton_grpc)


@pytest.fixture(scope="module")
def piece_ids() -> dict[str, int]:
    return {piece: i for i, piece in enumerate(read_real_tokens())}


def _same_labels(served: list[str], funasr_labels: list[str]) -> None:
    """The served labels are FunASR's tokens in the same order: "生气/angry" is served as "angry", the
    tokenizer's "<unk>" class as "unknown"."""
    expected = ["unknown" if token == "<unk>" else token.rsplit("/", 1)[-1] for token in funasr_labels]
    assert served == expected, (served, funasr_labels)


# ------------------------------------------------------------------------------------------- tests


def test_triton_emotion_probabilities_equal_funasrs(triton, funasr, clips):
    for name, pcm in clips.items():
        wav = _float(pcm)
        labels, expected = funasr.emotion(wav)
        _same_labels(triton.emotion_labels, labels)
        served = triton.emotion(wav)
        diff = np.abs(served - expected).max()
        _note("emotion probability, Triton vs FunASR", diff)
        assert diff <= EMOTION_TOLERANCE, f"{name}: {served} vs FunASR {expected}"
        _count("clips, Triton emotion")


def test_triton_sensevoice_tokens_and_transcript_equal_funasrs(triton, funasr, clips, piece_ids):
    from toneserve.model_repository.runners.sensevoice_decode import FAMILY_FRAME, tag_piece

    emitted = 0
    for name, pcm in clips.items():
        wav = _float(pcm)
        theirs = funasr.asr(wav)
        ours = triton.asr(wav)
        ids = [piece_ids[p] for p in ours["pieces"]]
        assert ids == theirs["speech_ids"], f"{name}: token ids differ"
        assert ours["text"] == theirs["speech_text"], f"{name}: transcripts differ"
        assert ours["token_ms"] == theirs["speech_ms"], f"{name}: token times differ"
        emitted += len(ids)
        _count("clips, Triton asr")
        _count("tokens, Triton asr", len(ids))
        # The four query frames' distributions: FunASR's logits restricted to each family's tags.
        for family, frame in FAMILY_FRAME.items():
            labels, served = ours[family]
            row = theirs["query_logits"][frame][[piece_ids[tag_piece(label)] for label in labels]].astype(np.float64)
            expected = np.exp(row - row.max())
            expected /= expected.sum()
            diff = np.abs(served - expected).max()
            _note(f"asr {family} probability, Triton vs FunASR logits", diff)
            assert diff <= EMOTION_TOLERANCE, f"{name} {family}: {served} vs {expected}"
    assert emitted, "no clip gave a single token: nothing was compared"


def test_gateway_segments_equal_funasr_on_the_same_samples(published_stack, funasr, clips):
    from toneserve.client.sdk import Client

    compared_emotion = compared_text = 0
    with Client(published_stack.gateway) as client:
        for name, pcm in clips.items():
            result = client.analyze(_wav_bytes(pcm), window_seconds=30.0, language="auto", use_itn=False)
            assert result.segments, f"{name}: the gateway found no utterance"
            for segment in result.segments:
                start, end = segment.start_ms * SR // 1000, segment.end_ms * SR // 1000
                wav = _float(pcm[start:end])
                theirs = funasr.asr(wav)
                assert segment.transcript == theirs["speech_text"], f"{name} {segment.start_ms}-{segment.end_ms}"
                compared_text += 1
                _count("segments, gateway transcript")
                _count("characters, gateway transcript", len(segment.transcript))
                if segment.emotion_windows == 1:
                    labels, expected = funasr.emotion(wav)
                    _same_labels(list(segment.emotion.labels), labels)
                    diff = np.abs(np.asarray(segment.emotion.probabilities, np.float64) - expected).max()
                    _note("emotion probability, gateway segment vs FunASR", diff)
                    assert diff <= EMOTION_TOLERANCE, f"{name} {segment.start_ms}-{segment.end_ms}"
                    compared_emotion += 1
                    _count("segments, gateway emotion")
    assert compared_text and compared_emotion
    print(f"\npublished-layout end to end: compared {COMPARED}; largest differences {LARGEST}")
