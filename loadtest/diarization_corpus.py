"""Mono conversations of real voices with exact references, for diarization (`toneserve eval diarization`).

    python -m toneserve.loadtest.diarization_corpus OUT_DIR [--seed 0] [--conversations 12]
                                                        [--no-pyannote-sample]

Each conversation mixes 2, 3 or 4 LibriSpeech readers (tests/data/librispeech: 50 clips of 10 readers,
``READER-CHAPTER-UTT.flac``) into one channel, 30-60 s long. Turns are cut from the readers' clips at
low-energy points between words, so they run from backchannels (0.5-1 s) to long turns (up to ~8 s), with
gaps, a few overlaps (0.2-1 s) and runs of the same speaker (a pause, then the same voice again). The
reference of each turn is the cut's speech extent (its leading and trailing low-energy frames trimmed), so
the RTTM is exact to 10 ms.

Written into OUT_DIR, for each conversation ``NAME``:

* ``NAME.wav`` (16 kHz, 16-bit) and ``NAME.rttm`` (file id ``NAME``);
* ``NAME-8k.wav``: the same audio resampled down to 8 kHz with soxr (a telephone copy; the gateway
  resamples it up) and ``NAME-8k.rttm`` (the same turns, file id ``NAME-8k``);
* ``corpus.json``: every file with its rate, length, readers, turn count, overlaps and speech seconds.

With network access to a package index, pyannote.audio's bundled 30 s two-speaker sample
(``pyannote/audio/sample/sample.wav`` + ``sample.rttm`` inside its wheel, fetched with
``pip download --no-deps``) is added as ``pyannote-sample``; without it, it is skipped with a note.
Everything else is a function of ``--seed``: the same command writes the same bytes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from toneserve.loadtest.der import format_rttm, read_rttm

RATE = 16000
PHONE_RATE = 8000
CLIPS = Path(__file__).resolve().parent.parent / "tests" / "data" / "librispeech"
CORPUS_JSON = "corpus.json"
# 10 ms frames for the energy envelope; a frame more than this far below the clip's loud frames is a pause.
HOP = RATE // 100
PAUSE_DB = 30.0
# Speaker counts of the conversations, in turn.
SPEAKER_COUNTS = (2, 3, 4)
# Turn lengths: (probability, shortest s, longest s): backchannels, short, medium and long turns.
TURN_KINDS = ((0.2, 0.5, 1.0), (0.3, 1.0, 3.0), (0.3, 3.0, 6.0), (0.2, 6.0, 8.0))
SAME_SPEAKER = 0.15  # probability that the next turn is the same voice again after a pause
MIN_TURN = 0.4  # a cut with less speech than this (a click, a breath) is passed over
OVERLAP = 0.12  # probability that the next turn starts before the last one ends (0.2-1 s)


@dataclass(frozen=True)
class Conversation:
    name: str
    file: str
    rttm: str
    rate: int
    seconds: float
    speakers: tuple[str, ...]  # LibriSpeech reader ids, in order of first turn
    turns: int
    overlaps: int
    speech_seconds: float
    source: str = "librispeech"


def load_readers(clips: Path = CLIPS) -> dict[str, list[np.ndarray]]:
    """{reader: [float32 16 kHz clip]} in file-name order."""
    import soundfile as sf

    readers: dict[str, list[np.ndarray]] = {}
    for path in sorted(clips.glob("*.flac")):
        audio, rate = sf.read(path, dtype="float32")
        if rate != RATE or audio.ndim != 1:
            raise ValueError(f"{path}: expected 16 kHz mono, got {rate} Hz shape {audio.shape}")
        readers.setdefault(path.name.split("-")[0], []).append(audio)
    if len(readers) < max(SPEAKER_COUNTS):
        raise ValueError(f"{clips} holds {len(readers)} readers, need {max(SPEAKER_COUNTS)}")
    return readers


def frame_db(audio: np.ndarray) -> np.ndarray:
    """Level of each 10 ms frame in dB relative to the clip's 95th-percentile frame."""
    frames = len(audio) // HOP
    power = (audio[:frames * HOP].reshape(frames, HOP).astype(np.float64) ** 2).mean(axis=1) + 1e-12
    db = 10 * np.log10(power)
    return db - np.percentile(db, 95)


def pauses(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cut points, speech mask) of a clip: cut points are frame indices at the middle of each run of quiet
    frames (word boundaries), including the clip's two ends; the mask is True where a frame is speech."""
    speech = frame_db(audio) > -PAUSE_DB
    quiet = ~speech
    cuts = []
    index = 0
    while index < len(quiet):
        if quiet[index]:
            end = index
            while end < len(quiet) and quiet[end]:
                end += 1
            cuts.append((index + end) // 2)
            index = end
        else:
            index += 1
    return np.unique(np.array([0, *cuts, len(speech)])), speech


class Reader:
    """One voice's material: its clips as pieces between pauses, handed out in order (wrapping round)."""

    def __init__(self, clips: list[np.ndarray], rng: np.random.Generator):
        self.clips = [(clip, *pauses(clip)) for clip in clips]
        self.order = list(rng.permutation(len(clips)))
        self.clip = 0
        self.cut = int(rng.integers(0, 4))  # index into the current clip's cut points

    def take(self, seconds: float) -> np.ndarray:
        """The next piece from one pause to another closest to `seconds` long (at least one cut)."""
        for _ in range(2 * len(self.clips) + 1):
            audio, cuts, speech = self.clips[self.order[self.clip]]
            if self.cut < len(cuts) - 1:
                start = cuts[self.cut]
                later = cuts[self.cut + 1:]
                end = int(later[np.argmin(np.abs((later - start) * HOP / RATE - seconds))])
                self.cut = int(np.searchsorted(cuts, end))
                piece = speech[start:end]
                if piece.any():
                    first = start + int(np.argmax(piece))
                    last = start + len(piece) - int(np.argmax(piece[::-1]))
                    if (last - first) * HOP >= MIN_TURN * RATE:
                        return audio[first * HOP:last * HOP]
                continue
            self.clip = (self.clip + 1) % len(self.clips)
            self.cut = 0
        raise ValueError("a reader without speech")


def conversation(readers: dict[str, list[np.ndarray]], speakers: int, seconds: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, str]], tuple[str, ...]]:
    """Mix one conversation: (16 kHz float32 audio, reference turns (start, end, reader), readers)."""
    names = [str(n) for n in rng.choice(sorted(readers), size=speakers, replace=False)]
    voices = {name: Reader(readers[name], rng) for name in names}
    gains = {name: float(10 ** (rng.uniform(-4, 2) / 20)) for name in names}
    pieces: list[tuple[int, str, np.ndarray]] = []
    turns: list[tuple[float, float, str]] = []
    last_end = float(rng.uniform(0.0, 0.7))  # leading silence (plus the first gap)
    previous: str | None = None
    kinds = np.array([kind[0] for kind in TURN_KINDS])
    while True:
        # every voice speaks early on: the first turns go round all of them once
        if len(turns) < speakers:
            speaker = names[len(turns)]
        elif previous is not None and rng.random() < SAME_SPEAKER:
            speaker = previous
        else:
            speaker = str(rng.choice([n for n in names if n != previous]))
        _, shortest, longest = TURN_KINDS[int(rng.choice(len(TURN_KINDS), p=kinds / kinds.sum()))]
        target = float(rng.uniform(shortest, longest))
        if speaker == previous:
            start = last_end + float(rng.uniform(0.6, 1.5))
        elif previous is not None and rng.random() < OVERLAP and turns[-1][1] - turns[-1][0] > 1.5 and target > 1.0:
            start = last_end - float(rng.uniform(0.2, min(1.0, turns[-1][1] - turns[-1][0] - 1.0)))
        elif rng.random() < 0.15:
            start = last_end + float(rng.uniform(1.0, 2.5))
        else:
            start = last_end + float(rng.uniform(0.15, 0.8))
        start = round(start * 100) / 100  # on the 10 ms grid of the cuts
        if len(turns) >= speakers and seconds - start < 1.0:
            break
        if len(turns) >= speakers:
            target = min(target, seconds - start)  # the last turn ends about on time
        audio = voices[speaker].take(target) * gains[speaker]
        length = len(audio) / RATE
        begin = int(round(start * RATE))
        pieces.append((begin, speaker, audio))
        turns.append((start, start + length, speaker))
        last_end = max(last_end, start + length)
        previous = speaker
    total = int(round((last_end + float(rng.uniform(0.3, 1.0))) * RATE))
    mix = np.zeros(total, np.float64)
    for begin, _, audio in pieces:
        mix[begin:begin + len(audio)] += audio
    mix += rng.normal(0.0, 10 ** (-70 / 20), total)  # a faint noise floor: never digital silence
    peak = np.abs(mix).max()
    if peak > 0.95:
        mix *= 0.95 / peak
    return mix.astype(np.float32), turns, tuple(names)


def overlap_count(turns) -> int:
    ordered = sorted(turns)
    return sum(1 for (a0, a1, sa), (b0, b1, sb) in zip(ordered, ordered[1:]) if b0 < a1 and sa != sb)


def speech_seconds(turns) -> float:
    """Seconds with at least one speaker (the union of the turns)."""
    total, end = 0.0, -np.inf
    for start, stop, _ in sorted(turns):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return float(total)


def _write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    import soundfile as sf

    sf.write(path, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")


def build(out: str | Path, seed: int = 0, conversations: int = 12, phone: bool = True,
          pyannote_sample: bool = False, clips: Path = CLIPS) -> list[Conversation]:
    """Write the corpus into `out`; return what corpus.json lists."""
    import soxr

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    readers = load_readers(clips)
    entries: list[Conversation] = []
    for index in range(conversations):
        rng = np.random.default_rng([seed, 0xD1A, index])
        speakers = SPEAKER_COUNTS[index % len(SPEAKER_COUNTS)]
        seconds = float(rng.uniform(30.0, 60.0))
        audio, turns, names = conversation(readers, speakers, seconds, rng)
        name = f"conv-{index:02d}-{speakers}spk"
        copies = [(name, audio, RATE)]
        if phone:
            copies.append((f"{name}-8k", soxr.resample(audio, RATE, PHONE_RATE).astype(np.float32), PHONE_RATE))
        for file_id, data, rate in copies:
            _write_wav(out / f"{file_id}.wav", data, rate)
            (out / f"{file_id}.rttm").write_text(format_rttm(file_id, turns))
            entries.append(Conversation(file_id, f"{file_id}.wav", f"{file_id}.rttm", rate, len(data) / rate, names,
                                        len(turns), overlap_count(turns), speech_seconds(turns)))
    if pyannote_sample:
        sample = fetch_pyannote_sample(out)
        if sample is not None:
            entries.append(sample)
    (out / CORPUS_JSON).write_text(json.dumps({"seed": seed, "files": [asdict(e) for e in entries]}, indent=1) + "\n")
    return entries


def fetch_pyannote_sample(out: Path) -> Conversation | None:
    """pyannote.audio's sample.wav + sample.rttm from its wheel (pip download), or None with a note on stderr."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as scratch:
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                            "-d", scratch, "pyannote.audio"], check=True, capture_output=True, timeout=300)
            wheel = next(Path(scratch).glob("pyannote_audio-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                wav = archive.read("pyannote/audio/sample/sample.wav")
                rttm = archive.read("pyannote/audio/sample/sample.rttm").decode()
        except (OSError, subprocess.SubprocessError, StopIteration, KeyError, zipfile.BadZipFile) as error:
            print(f"pyannote sample skipped: {type(error).__name__}: {error}", file=sys.stderr)
            return None
    name = "pyannote-sample"
    (out / f"{name}.wav").write_bytes(wav)
    turns = [turn for turns in read_rttm(__import__("io").StringIO(rttm)).values() for turn in turns]
    (out / f"{name}.rttm").write_text(format_rttm(name, turns))
    info = sf.info(out / f"{name}.wav")
    return Conversation(name, f"{name}.wav", f"{name}.rttm", int(info.samplerate), float(info.duration),
                        tuple(dict.fromkeys(s for _, _, s in sorted(turns))), len(turns), overlap_count(turns),
                        speech_seconds(turns), source="pyannote.audio sample")


def load(folder: str | Path) -> list[Conversation]:
    data = json.loads((Path(folder) / CORPUS_JSON).read_text())
    return [Conversation(**{**item, "speakers": tuple(item["speakers"])}) for item in data["files"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toneserve.loadtest.diarization_corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--no-phone", action="store_true", help="no 8 kHz copies")
    parser.add_argument("--no-pyannote-sample", action="store_true", help="do not try to fetch pyannote's sample")
    args = parser.parse_args(argv)
    entries = build(args.out, args.seed, args.conversations, not args.no_phone, not args.no_pyannote_sample)
    for entry in entries:
        print(f"{entry.file:<24} {entry.rate // 1000:>2} kHz {entry.seconds:6.1f} s  {len(entry.speakers)} speakers  "
              f"{entry.turns:3d} turns  {entry.overlaps} overlaps")
    print(f"{len(entries)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
