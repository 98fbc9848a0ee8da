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

Words with times: the words toneserve builds (``words.timed`` on Triton's TOKENS / TOKEN_MS / TOKEN_END_MS,
and the gateway's Segment.words) are compared with FunASR's own SenseVoice timestamps
(``generate(..., output_timestamp=True)``: ``timestamp`` and ``words``). FunASR gets them by encoding its text
again with the tokenizer, dropping the first four pieces (the four query tags of a trained model), forcing a
CTC alignment of those pieces onto the speech frames, and grouping pieces into words (``SenseVoiceSmall.post``).
On these folders that cannot reproduce the pieces the model emitted, for three reasons: the stand-in
sentencepiece model has the real pieces but not the real merge scores, so text is segmented differently
(tests/published_layout.py); random weights emit piece sequences that no tokenizer would produce from their
text ("▁Plan" "Obviously" is encoded again as "▁Plan" "O" "b" "vi" "ous" "ly"); and their first four frames
are not tags, so dropping four pieces drops the wrong ones. Every clip and segment here is encoded again as
more pieces than it has speech frames (the synthetic clip: 130 for the 58 emitted, 67 frames), where no CTC
alignment exists, and FunASR answers one "word" spanning the whole clip (printed with ``-s``). So FunASR's
timestamps are taken with that one step, its tokenizer's round trip from text to ids, made the identity on the
pieces its own greedy search emitted (the tokenizer class patched for the call); everything after it (the forced alignment on its own log-probabilities, its frame-to-ms formula, the grouping
into words) is FunASR's code as it runs. Where the round trip does reproduce the emitted pieces, FunASR's
output as is is compared too; the printout counts both.

A FunASR word is compared when toneserve has a word with the same letters and digits at the same place of the
transcript (gateway/words.py counts by spaces, or by characters in zh / yue / ja, and punctuation joins the
word before; FunASR's post() starts a word at each "▁" piece, joins ASCII-letter pieces and makes every other
piece a word of its own). Skipped, and counted: FunASR's punctuation-only words and tags, and words the two
rules cut differently (a run of Hangul and Latin letters is one word to toneserve and several to FunASR, a
piece of several Han characters is divided between them by toneserve, FunASR keeps its first word's "▁" and so
never joins a piece to it). Compared words must have the same start and end, after FunASR's own float round
trip (it holds seconds as floats and truncates ``s * 1000`` back to ms, 1 ms short of the exact time at about 1 %
of frames); toneserve keeps times inside their clip or segment, where FunASR's last piece may end up to a frame
past it.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import wave
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from tests.published_layout import published, read_real_tokens
from tests.support import SHARED_SPEECH, Stack, processes_using, stop_stack, wait_for_health
from toneserve import contract
from toneserve.gateway import words
from toneserve.model_repository.runners.sensevoice_decode import FRAME_SHIFT_MS
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


def _emitted(frames: np.ndarray, blank: int) -> list[int]:
    """The ids greedy CTC emits for per-frame argmax ids: repeats collapsed, blanks dropped."""
    keep = np.concatenate([[True], frames[1:] != frames[:-1]]) if frames.size else frames.astype(bool)
    return [int(t) for t in frames[keep] if t != blank]


class FunASR:
    """FunASR's AutoModel on the two folders, with what its SenseVoice search emitted recorded."""

    def __init__(self, folders: dict[str, Path]):
        from funasr import AutoModel

        common = {"device": "cpu", "disable_update": True, "log_level": "ERROR", "disable_pbar": True}
        self.emotion2vec = AutoModel(model=str(folders["emotion2vec"]), **common)
        self.sensevoice = AutoModel(model=str(folders["sensevoice"]), frontend_conf={"dither": 0.0}, **common)
        self.tokenizer = self.sensevoice.kwargs["tokenizer"]
        self.pieces = read_real_tokens()  # the stand-in tokenizer holds the real pieces at their ids
        self.ids = {piece: i for i, piece in enumerate(self.pieces)}
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
        every = _emitted(path, blank)
        assert self.tokenizer.decode(every) == result["text"], "the hook saw other frames than FunASR decoded"
        speech = _emitted(path[4:], blank)
        # Where each emitted speech token starts, in ms as FunASR's timestamps put it (max(frame * 60 - 30, 0)).
        frames = path[4:]
        starts = [s for s in range(len(frames)) if frames[s] != blank and (s == 0 or frames[s] != frames[s - 1])]
        return {"text": result["text"], "ids": every, "speech_ids": speech,
                "speech_ms": [max(s * 60 - 30, 0) for s in starts],
                "speech_text": self.tokenizer.decode(speech) if speech else "", "query_logits": logits[0, :4]}


    def word_times(self, wav: np.ndarray) -> dict:
        """FunASR's word timestamps for SenseVoice (module docstring): `as_is`, generate(output_timestamp=True)'s
        answer; `aligned`, the same with its tokenizer's round trip made the identity on the pieces its greedy
        search emitted for the speech frames (`speech`); `reproduces`, whether the round trip gives those pieces
        by itself; `encoded`, how many it gives; `frames`, the speech frames."""
        self.logits.clear()
        [as_is] = self.sensevoice.generate(wav, language="auto", use_itn=False, output_timestamp=True)
        logits = self.logits[0]  # the CTC projection runs twice with timestamps: for the text, then to align
        frames = logits[0].argmax(-1)[4:]
        speech = [self.pieces[i] for i in _emitted(frames, self.sensevoice.model.blank_id)]
        encoded = self.tokenizer.text2tokens(as_is["text"])[4:]
        # FunASR re-encodes a deep copy of this tokenizer: its class is patched, for this one call.
        tokenizer = type(self.tokenizer)
        with mock.patch.object(tokenizer, "text2tokens", lambda _, text: ["<query>"] * 4 + speech), \
                mock.patch.object(tokenizer, "tokens2ids", lambda _, pieces: [[self.ids[p]] for p in pieces]):
            [aligned] = self.sensevoice.generate(wav, language="auto", use_itn=False, output_timestamp=True)
        assert aligned["text"] == as_is["text"]
        return {"as_is": as_is, "aligned": aligned, "speech": speech, "reproduces": encoded == speech,
                "encoded": len(encoded), "frames": len(frames)}


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
        names = [contract.TEXT, contract.TOKENS, contract.TOKEN_MS, contract.TOKEN_END_MS,
                 *contract.ASR_DISTRIBUTIONS.values()]
        result = self.client.infer(contract.ASR, inputs, outputs=[self.grpc.InferRequestedOutput(n) for n in names])
        pieces = [p.decode("utf-8") for p in result.as_numpy(contract.TOKENS)[0] if p]
        out = {"text": result.as_numpy(contract.TEXT).reshape(-1)[0].decode("utf-8"), "pieces": pieces,
               "token_ms": [int(t) for t in result.as_numpy(contract.TOKEN_MS)[0] if t >= 0],
               "token_end_ms": [int(t) for t in result.as_numpy(contract.TOKEN_END_MS)[0] if t >= 0]}
        out["timed"] = [words.Piece(*p) for p in zip(pieces, out["token_ms"], out["token_end_ms"])]
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


# ----------------------------------------------------------------------------- words with times

# A tag or control piece (<|en|>, <unk>): in FunASR's words as a word of its own, in no word of toneserve's.
_TAG = re.compile(r"<[^<>\s]+>")
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def _core(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Where the letters and digits of text[start:end] are: (first, one past the last); None when it has none."""
    inner = [i for i in range(start, end) if _LETTER_OR_DIGIT.match(text[i])]
    return (inner[0], inner[-1] + 1) if inner else None


def _funasr_ms(ms: int) -> int:
    """`ms` as FunASR's timestamps give it: seconds held as a float, truncated back (int(s * 1000))."""
    return int(ms / 1000 * 1000)


def _compare_words(where: str, ours, theirs: dict, text: str, language: str, offset: int, limit: int) -> int:
    """Asserts that every word of FunASR's answer `theirs` ("words", "timestamp": ms from the clip start) that
    toneserve's `ours` (Word, ms from the recording start = `offset` + ms from the clip start) defines the same way
    has the same times (module docstring); `limit`: the clip's length in ms. Returns how many were compared."""
    stripped = words.strip_tags(text)
    spans = words.spans(stripped, language)
    assert len(ours) == len(spans), where
    assert [w.text[:b - a] for w, (a, b) in zip(ours, spans)] == [stripped[a:b] for a, b in spans], where
    by_core = {_core(stripped, a, b): word for word, (a, b) in zip(ours, spans)}
    cursor = compared = 0
    for token, (start, end) in zip(theirs["words"], theirs["timestamp"], strict=True):
        token = token.replace(words.WORD_START, " ").strip()
        if not token or _TAG.fullmatch(token):
            _count("FunASR words skipped: tags")
            continue
        at = stripped.find(token, cursor)
        assert at >= 0, f"{where}: FunASR's word {token!r} is not in the transcript after {stripped[:cursor]!r}"
        cursor = at + len(token)
        core = _core(stripped, at, cursor)
        if core is None:
            _count("FunASR words skipped: punctuation only")
            continue
        word = by_core.get(core)
        if word is None:
            rule = "characters" if words.by_characters(stripped, language) else "spaces"
            _count(f"FunASR words skipped: cut otherwise (toneserve counting by {rule})")
            continue
        for name, funasr_ms, ours_ms in (("start", start, word.start_ms - offset), ("end", end, word.end_ms - offset)):
            if ours_ms < limit:
                assert funasr_ms == _funasr_ms(ours_ms), f"{where}: {word.text!r} {name} {ours_ms} vs FunASR {funasr_ms}"
                if _funasr_ms(ours_ms) != ours_ms:
                    _count("times FunASR truncates 1 ms short")
            else:  # toneserve keeps it inside the clip; FunASR's last frame may reach past it
                assert _funasr_ms(limit) <= funasr_ms <= limit + FRAME_SHIFT_MS, f"{where}: {word.text!r} {name}"
                _count("times kept inside their clip by toneserve")
        compared += 1
    _count("FunASR words compared", compared)
    return compared


def _funasr_as_is(where: str, theirs: dict) -> None:
    """Notes whether FunASR's own round trip reproduced the emitted pieces (then its answer as is is what
    `aligned` is), and if not, what it aligned instead."""
    if theirs["reproduces"]:
        _count("clips where FunASR's own round trip reproduces the pieces")
        assert theirs["as_is"]["timestamp"] == theirs["aligned"]["timestamp"], where
        return
    _count("clips where FunASR's own round trip does not reproduce the pieces")
    as_is = theirs["as_is"]
    print(f"\n{where}: FunASR's own round trip gives {theirs['encoded']} pieces for the {len(theirs['speech'])} "
          f"emitted ({theirs['frames']} speech frames); as is it answers {len(as_is.get('words', []))} word(s) "
          f"{list(zip(as_is.get('words', []), as_is.get('timestamp', [])))[:3]}")


def test_triton_words_equal_funasrs_timestamps(triton, funasr, clips):
    """On each whole clip, under both of toneserve's counting rules (by spaces: en; by characters: zh)."""
    compared = {"en": 0, "zh": 0}
    letters = 0  # FunASR's words holding a letter or digit
    for name, pcm in clips.items():
        wav = _float(pcm)
        ours = triton.asr(wav)
        theirs = funasr.word_times(wav)
        assert ours["pieces"] == theirs["speech"], f"{name}: Triton and FunASR emitted other pieces"
        _funasr_as_is(name, theirs)
        limit = len(wav) * 1000 // SR
        for language in compared:
            found = words.timed(ours["text"], language, ours["timed"], 0, limit)
            compared[language] += _compare_words(f"{name} ({language})", found, theirs["aligned"], ours["text"],
                                                 language, 0, limit)
        letters += sum(1 for w in theirs["aligned"]["words"] if _LETTER_OR_DIGIT.search(w))
    # Counted by characters, the two rules agree on most words (they differ on Hangul-Latin runs); a bug that made
    # words incomparable would not pass unseen.
    assert compared["zh"] >= letters // 2, (compared, letters)
    assert compared["en"] > 0, compared


def test_gateway_words_equal_funasrs_timestamps(published_stack, funasr, clips):
    """The gateway's Segment.words (counted in the segment's detected language) against FunASR on the segment's
    samples: times from the recording's start, kept inside the segment."""
    from toneserve.client.sdk import Client

    compared = 0
    with Client(published_stack.gateway) as client:
        for name, pcm in clips.items():
            result = client.analyze(_wav_bytes(pcm), window_seconds=30.0, language="auto", use_itn=False)
            for segment in result.segments:
                where = f"{name} {segment.start_ms}-{segment.end_ms}"
                wav = _float(pcm[segment.start_ms * SR // 1000:segment.end_ms * SR // 1000])
                theirs = funasr.word_times(wav)
                _funasr_as_is(where, theirs)
                compared += _compare_words(where, segment.words, theirs["aligned"], segment.transcript,
                                           segment.language.top, segment.start_ms, segment.end_ms - segment.start_ms)
    assert compared, "no word of a gateway segment was compared"
    print(f"\npublished-layout words: {COMPARED}")
