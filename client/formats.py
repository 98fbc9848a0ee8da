"""What `toneserve analyze` writes: JSON documents per file, or one JSONL line / CSV row per segment."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO

from toneserve.client.results import Result, Segment

FORMATS = ("json", "jsonl", "csv")

# One row per segment, the same columns in JSONL and CSV (README, "Using the client"). "words" is the prosody's
# word count; "word_times" the words themselves with their times, [[text, start_s, end_s], ...].
COLUMNS = ("file", "speaker", "channel", "start_s", "end_s", "transcript", "language", "emotion",
           "emotion_probability", "text_sentiment_score", "text_sentiment_label", "tone_score", "sentiment",
           "sentiment_score", "flags", "pitch_hz", "pitch_std_semitones", "loudness_dbfs", "speaking_rate_wpm",
           "voiced_fraction", "words", "word_times")


def word_times(segment: Segment) -> list[list]:
    """The segment's words with their times: [[text, start_s, end_s], ...] (seconds from the recording's start)."""
    return [[word.text, word.start, word.end] for word in segment.words]


def segment_row(file: str, segment: Segment) -> dict:
    """A segment as flat values; `flags` is a list (CSV joins it with ';'), `word_times` a list of
    [text, start_s, end_s] (CSV writes it as that JSON text). The embedding is left out: it is in the JSON
    output only."""
    text, judgement, prosody = segment.text_sentiment, segment.judgement, segment.prosody
    return {"file": file, "speaker": segment.speaker, "channel": segment.channel,
            "start_s": segment.start, "end_s": segment.end, "transcript": segment.transcript,
            "language": segment.language.top, "emotion": segment.emotion.top,
            "emotion_probability": segment.emotion.probability,
            # No text model for the language: no score, rather than a neutral 0 that was never measured.
            "text_sentiment_score": text.score if text.scored else None,
            "text_sentiment_label": text.label if text.scored else None,
            "tone_score": judgement.tone_score, "sentiment": judgement.sentiment, "sentiment_score": judgement.score,
            "flags": list(judgement.flags), "pitch_hz": prosody.pitch_hz,
            "pitch_std_semitones": prosody.pitch_std_semitones, "loudness_dbfs": prosody.loudness_dbfs,
            "speaking_rate_wpm": prosody.speaking_rate_wpm, "voiced_fraction": prosody.voiced_fraction,
            "words": prosody.words, "word_times": word_times(segment)}


def document(file: str, result: Result) -> dict:
    """`--format json`: the whole result, with the file it is about."""
    return {"file": file, **result.to_dict()}


class _Sink:
    """Writes to `path`, or to stdout when there is none."""

    def __init__(self, path: str | None):
        self.stream: IO[str] = open(path, "w", encoding="utf-8", newline="") if path else sys.stdout

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


class SegmentLines(_Sink):
    """--format jsonl: one JSON object per segment and line."""

    def write(self, file: str, name: str, result: Result) -> None:
        for segment in result.segments:
            self.stream.write(json.dumps(segment_row(file, segment), ensure_ascii=False) + "\n")
        self.stream.flush()


class SegmentCsv(_Sink):
    """--format csv: a header, then one row per segment (quoted by the csv module wherever a value needs it)."""

    def __init__(self, path: str | None):
        super().__init__(path)
        self.writer = csv.DictWriter(self.stream, COLUMNS, lineterminator="\n")
        self.writer.writeheader()
        self.stream.flush()

    def write(self, file: str, name: str, result: Result) -> None:
        for segment in result.segments:
            row = segment_row(file, segment)
            self.writer.writerow({**row, "flags": ";".join(row["flags"]),
                                  "word_times": json.dumps(row["word_times"], ensure_ascii=False)})
        self.stream.flush()


class JsonStream(_Sink):
    """--format json to one place: indented for a single file, else one document per line (JSON Lines)."""

    def __init__(self, path: str | None, indent: int | None):
        super().__init__(path)
        self.indent = indent

    def write(self, file: str, name: str, result: Result) -> None:
        self.stream.write(json.dumps(document(file, result), indent=self.indent, ensure_ascii=False) + "\n")
        self.stream.flush()


class JsonFolder:
    """--format json --out FOLDER: FOLDER/<name>.json per file."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, file: str, name: str, result: Result) -> None:
        text = json.dumps(document(file, result), indent=2, ensure_ascii=False) + "\n"
        (self.folder / f"{name}.json").write_text(text, encoding="utf-8")

    def close(self) -> None:
        pass


def open_output(fmt: str, out: str | None, several: bool):
    """The writer for `--format fmt --out out`. For json, `out` is a folder unless it names a .json file
    and there is a single input."""
    if fmt == "jsonl":
        return SegmentLines(out)
    if fmt == "csv":
        return SegmentCsv(out)
    if out is None or (not several and out.endswith(".json")):
        return JsonStream(out, indent=None if several else 2)
    return JsonFolder(out)
