"""Diarization error rate: RTTM in and out, and the score of a hypothesis against a reference.

    from toneserve.loadtest import der
    reference = der.read_rttm("corpus/conv-00.rttm")          # {file id: [(start s, end s, speaker)]}
    report = der.score(reference, {"conv-00": hypothesis_turns})
    print(der.format_table(report))

Scoring is pyannote.metrics' ``DiarizationErrorRate`` (the NIST md-eval definition):

* ``collar=0.5``: pyannote's collar is the *total* width, so 0.25 s either side of every reference
  boundary is not scored, which is md-eval's ``-c 0.25`` (the convention of most published DERs);
* ``skip_overlap=True`` by default: regions where two or more reference speakers talk at once are not
  scored (a single-label hypothesis cannot be right there); ``score(..., skip_overlap=False)`` scores them
  too and ``score_both`` gives both.

DER = (missed + false alarm + confusion) / scored reference speech; each component is reported as a
fraction of the same scored reference time, per file and over all files (time-weighted: the sums of the
components over the sum of scored time, as md-eval does; not the mean of the files' DERs). Speaker counts
are the distinct labels of reference and hypothesis in each file; ``count_correct`` is whether they agree.
"""
from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

Turn = tuple[float, float, str]  # (start s, end s, speaker)

COLLAR = 0.5  # total width (pyannote's convention): +-0.25 s around reference boundaries, md-eval's -c 0.25
SKIP_OVERLAP = True


def _as_turns(turns: Iterable[tuple[float, float, object]]) -> list[Turn]:
    return [(float(start), float(end), str(speaker)) for start, end, speaker in turns]


def read_rttm(source: str | Path | TextIO) -> dict[str, list[Turn]]:
    """An RTTM file's SPEAKER lines: {file id: [(start, end, speaker)]} in file order."""
    text = source.read() if hasattr(source, "read") else Path(source).read_text()
    out: dict[str, list[Turn]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith(";") or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"RTTM line {number}: expected at least 8 fields, got {line!r}")
        start, duration = float(fields[3]), float(fields[4])
        out.setdefault(fields[1], []).append((start, start + duration, fields[7]))
    return out


def format_rttm(file_id: str, turns: Iterable[tuple[float, float, object]]) -> str:
    """RTTM SPEAKER lines (channel 1) for one file's turns, sorted by start."""
    if not file_id or any(c.isspace() for c in file_id):
        raise ValueError(f"an RTTM file id needs to be one word, got {file_id!r}")
    lines = []
    for start, end, speaker in sorted(_as_turns(turns)):
        if end <= start:
            continue
        lines.append(f"SPEAKER {file_id} 1 {start:.3f} {end - start:.3f} <NA> <NA> {speaker} <NA> <NA>\n")
    return "".join(lines)


def write_rttm(path: str | Path, file_id: str, turns: Iterable[tuple[float, float, object]]) -> None:
    Path(path).write_text(format_rttm(file_id, turns))


def annotation(turns: Iterable[tuple[float, float, object]], uri: str = "file"):
    """A pyannote.core Annotation of the turns."""
    from pyannote.core import Annotation, Segment

    out = Annotation(uri=uri)
    for index, (start, end, speaker) in enumerate(_as_turns(turns)):
        if end > start:
            out[Segment(start, end), index] = speaker
    return out


@dataclass(frozen=True)
class FileScore:
    file: str
    scored: float  # seconds of reference speech scored (after collar / overlap removal)
    missed: float  # seconds
    false_alarm: float
    confusion: float
    ref_speakers: int
    hyp_speakers: int

    @property
    def der(self) -> float:
        return (self.missed + self.false_alarm + self.confusion) / self.scored if self.scored else 0.0

    @property
    def count_correct(self) -> bool:
        return self.ref_speakers == self.hyp_speakers

    def fractions(self) -> dict[str, float]:
        total = self.scored or 1.0
        return {"der": self.der, "missed": self.missed / total, "false_alarm": self.false_alarm / total,
                "confusion": self.confusion / total}


@dataclass(frozen=True)
class Report:
    files: tuple[FileScore, ...]
    collar: float
    skip_overlap: bool

    @property
    def scored(self) -> float:
        return sum(f.scored for f in self.files)

    def _total(self, name: str) -> float:
        return sum(getattr(f, name) for f in self.files) / self.scored if self.scored else 0.0

    @property
    def der(self) -> float:
        return self._total("missed") + self._total("false_alarm") + self._total("confusion")

    @property
    def missed(self) -> float:
        return self._total("missed")

    @property
    def false_alarm(self) -> float:
        return self._total("false_alarm")

    @property
    def confusion(self) -> float:
        return self._total("confusion")

    @property
    def count_accuracy(self) -> float:
        return sum(f.count_correct for f in self.files) / len(self.files) if self.files else 0.0

    def as_dict(self) -> dict:
        return {"collar": self.collar, "skip_overlap": self.skip_overlap,
                "overall": {"der": self.der, "missed": self.missed, "false_alarm": self.false_alarm,
                            "confusion": self.confusion, "scored_s": self.scored,
                            "count_accuracy": self.count_accuracy},
                "files": [{"file": f.file, **f.fractions(), "scored_s": f.scored, "ref_speakers": f.ref_speakers,
                           "hyp_speakers": f.hyp_speakers, "count_correct": f.count_correct} for f in self.files]}


def score(reference: Mapping[str, Iterable[tuple[float, float, object]]],
          hypothesis: Mapping[str, Iterable[tuple[float, float, object]]],
          collar: float = COLLAR, skip_overlap: bool = SKIP_OVERLAP) -> Report:
    """Score every reference file (a file missing from `hypothesis` scores as all missed); a hypothesis
    file with no reference is an error (a typo would otherwise go unnoticed)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    unknown = sorted(set(hypothesis) - set(reference))
    if unknown:
        raise ValueError(f"hypothesis files without a reference: {unknown}")
    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    files = []
    for file_id in sorted(reference):
        ref_turns = _as_turns(reference[file_id])
        hyp_turns = _as_turns(hypothesis.get(file_id, ()))
        detail = metric(annotation(ref_turns, file_id), annotation(hyp_turns, file_id), detailed=True)
        files.append(FileScore(file_id, float(detail["total"]), float(detail["missed detection"]),
                               float(detail["false alarm"]), float(detail["confusion"]),
                               len({s for a, b, s in ref_turns if b > a}),
                               len({s for a, b, s in hyp_turns if b > a})))
    return Report(tuple(files), collar, skip_overlap)


def score_both(reference, hypothesis, collar: float = COLLAR) -> tuple[Report, Report]:
    """(overlap not scored, overlap scored)."""
    return score(reference, hypothesis, collar, True), score(reference, hypothesis, collar, False)


def format_table(report: Report, per_file: bool = True) -> str:
    """A plain-text table: one row per file and the overall row (percentages of scored reference time)."""
    out = io.StringIO()
    width = max([len(f.file) for f in report.files] + [7])
    out.write(f"collar {report.collar:g} s total (+-{report.collar / 2:g} s), overlap "
              f"{'not scored' if report.skip_overlap else 'scored'}\n")
    header = (f"{'file':<{width}}  {'scored s':>8}  {'DER %':>6}  {'miss %':>6}  {'FA %':>6}  {'conf %':>6}  "
              f"{'ref':>3}  {'hyp':>3}  count")
    out.write(header + "\n" + "-" * len(header) + "\n")
    rows = list(report.files) if per_file else []
    for f in rows:
        fr = f.fractions()
        out.write(f"{f.file:<{width}}  {f.scored:8.1f}  {100 * fr['der']:6.1f}  {100 * fr['missed']:6.1f}  "
                  f"{100 * fr['false_alarm']:6.1f}  {100 * fr['confusion']:6.1f}  {f.ref_speakers:3d}  "
                  f"{f.hyp_speakers:3d}  {'ok' if f.count_correct else 'WRONG'}\n")
    correct = sum(f.count_correct for f in report.files)
    out.write(f"{'overall':<{width}}  {report.scored:8.1f}  {100 * report.der:6.1f}  {100 * report.missed:6.1f}  "
              f"{100 * report.false_alarm:6.1f}  {100 * report.confusion:6.1f}  {'':>3}  {'':>3}  "
              f"{correct}/{len(report.files)}\n")
    return out.getvalue()


def print_table(report: Report, per_file: bool = True, file: TextIO | None = None) -> None:
    print(format_table(report, per_file), end="", file=file)


__all__ = ["COLLAR", "SKIP_OVERLAP", "FileScore", "Report", "Turn", "annotation", "format_rttm", "format_table",
           "print_table", "read_rttm", "score", "score_both", "write_rttm"]
