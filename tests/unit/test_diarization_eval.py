"""The diarization corpus (loadtest/diarization_corpus.py) and DER scoring (loadtest/der.py)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from toneserve.loadtest import der
from toneserve.loadtest import diarization_corpus as dc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("diarization-corpus")
    return out, dc.build(out, seed=3, conversations=3)


def test_builder_is_deterministic(corpus, tmp_path):
    out, entries = corpus
    again = dc.build(tmp_path / "again", seed=3, conversations=3)
    assert again == entries
    for entry in entries:
        assert (out / entry.file).read_bytes() == (tmp_path / "again" / entry.file).read_bytes()
        assert (out / entry.rttm).read_text() == (tmp_path / "again" / entry.rttm).read_text()
    other = dc.build(tmp_path / "other", seed=4, conversations=1, phone=False)
    assert (tmp_path / "other" / other[0].file).read_bytes() != (out / entries[0].file).read_bytes()


def test_corpus_files(corpus):
    out, entries = corpus
    assert dc.load(out) == entries
    listed = json.loads((out / dc.CORPUS_JSON).read_text())
    assert listed["seed"] == 3 and len(listed["files"]) == 6  # 3 conversations, each at 16 and 8 kHz
    assert [len(e.speakers) for e in entries if e.rate == 16000] == [2, 3, 4]
    for entry in entries:
        info = sf.info(out / entry.file)
        assert (info.samplerate, info.channels, info.subtype) == (entry.rate, 1, "PCM_16")
        assert 30.0 <= entry.seconds <= 62.0
        assert info.duration == pytest.approx(entry.seconds, abs=1e-3)
        (file_id, turns), = der.read_rttm(out / entry.rttm).items()
        assert file_id == entry.name and len(turns) == entry.turns
        assert {s for _, _, s in turns} == set(entry.speakers)
        assert max(end for _, end, _ in turns) <= entry.seconds
    # the telephone copy: the same turns, half the samples
    for wide, phone in zip(entries[::2], entries[1::2]):
        assert phone.name == f"{wide.name}-8k" and phone.rate == 8000
        assert [t[:2] for t in der.read_rttm(out / wide.rttm)[wide.name]] == \
            [t[:2] for t in der.read_rttm(out / phone.rttm)[phone.name]]
        assert abs(sf.info(out / phone.file).frames * 2 - sf.info(out / wide.file).frames) <= 2


def test_references_add_up(corpus):
    """Speech where the reference says so and nowhere else: outside every turn the mix is the -70 dBFS noise
    floor; every turn holds speech; turn lengths, gaps, overlaps and same-speaker runs all occur."""
    out, entries = corpus
    lengths, overlaps, runs = [], 0, 0
    for entry in (e for e in entries if e.rate == 16000):
        audio, rate = sf.read(out / entry.file, dtype="float64")
        turns = der.read_rttm(out / entry.rttm)[entry.name]
        inside = np.zeros(len(audio), bool)
        for start, end, _ in turns:
            a, b = int(round(start * rate)), int(round(end * rate))
            inside[max(a - 160, 0):b + 160] = True  # 10 ms either side: the cuts' grid
            piece = audio[a:b]
            assert np.sqrt(np.mean(piece ** 2)) > 10 ** (-55 / 20), (entry.name, start)
            lengths.append(end - start)
        assert np.abs(audio[~inside]).max() < 10 ** (-50 / 20), entry.name
        ordered = sorted(turns)
        overlaps += sum(b[0] < a[1] for a, b in zip(ordered, ordered[1:]))
        runs += sum(a[2] == b[2] for a, b in zip(ordered, ordered[1:]))
        assert entry.speech_seconds == pytest.approx(dc.speech_seconds(turns))
        assert entry.speech_seconds <= sum(end - start for start, end, _ in turns) + 1e-9
    assert min(lengths) < 1.0 and max(lengths) > 5.0
    assert overlaps >= 1 and runs >= 1


def test_rttm_round_trip(tmp_path):
    turns = [(0.5, 2.25, "a"), (2.0, 3.0, "b"), (4.0, 4.0, "a")]  # the empty turn is dropped
    der.write_rttm(tmp_path / "x.rttm", "call", turns)
    text = (tmp_path / "x.rttm").read_text()
    assert text.splitlines()[0] == "SPEAKER call 1 0.500 1.750 <NA> <NA> a <NA> <NA>"
    assert der.read_rttm(tmp_path / "x.rttm") == {"call": [(0.5, 2.25, "a"), (2.0, 3.0, "b")]}
    assert der.read_rttm(io.StringIO(";; comment\n" + text)) == {"call": [(0.5, 2.25, "a"), (2.0, 3.0, "b")]}
    with pytest.raises(ValueError):
        der.format_rttm("two words", turns)


REF = {"f": [(0.0, 10.0, "A"), (10.0, 20.0, "B")]}


@pytest.mark.parametrize("hypothesis, expected", [
    ([(0.0, 10.0, "x"), (10.0, 20.0, "y")], dict(der=0.0, missed=0.0, false_alarm=0.0, confusion=0.0)),
    ([(0.0, 20.0, "x")], dict(der=0.5, missed=0.0, false_alarm=0.0, confusion=0.5)),  # one speaker
    ([(0.0, 10.0, "x")], dict(der=0.5, missed=0.5, false_alarm=0.0, confusion=0.0)),
    ([(0.0, 10.0, "x"), (10.0, 25.0, "y")], dict(der=0.25, missed=0.0, false_alarm=0.25, confusion=0.0)),
    ([(0.0, 5.0, "x"), (5.0, 10.0, "y"), (10.0, 20.0, "y")], dict(der=0.25, missed=0.0, false_alarm=0.0,
                                                                    confusion=0.25)),
])
def test_der_known_cases(hypothesis, expected):
    report = der.score(REF, {"f": hypothesis}, collar=0.0)
    for name, value in expected.items():
        assert getattr(report, name) == pytest.approx(value, abs=1e-6), name
    assert report.files[0].ref_speakers == 2
    assert report.files[0].hyp_speakers == len({s for _, _, s in hypothesis})


def test_collar_and_overlap():
    # a boundary 0.2 s late is forgiven by the 0.5 s (+-0.25 s) collar, not without one
    late = {"f": [(0.0, 10.2, "x"), (10.2, 20.0, "y")]}
    assert der.score(REF, late).der == 0.0
    assert der.score(REF, late, collar=0.0).der == pytest.approx(0.2 / 20)
    # 2 s of overlapped reference speech: not scored by default, scored on request
    ref = {"f": [(0.0, 11.0, "A"), (9.0, 20.0, "B")]}
    hyp = {"f": [(0.0, 10.0, "x"), (10.0, 20.0, "y")]}
    no_overlap, with_overlap = der.score_both(ref, hyp, collar=0.0)
    assert no_overlap.der == 0.0 and no_overlap.scored == pytest.approx(18.0)
    assert with_overlap.scored == pytest.approx(22.0) and with_overlap.missed == pytest.approx(2.0 / 22)


def test_overall_is_time_weighted_and_table():
    ref = {"a": [(0.0, 30.0, "A")], "b": [(0.0, 10.0, "A"), (10.0, 20.0, "B")]}
    hyp = {"a": [(0.0, 30.0, "x")], "b": [(0.0, 20.0, "x")]}
    report = der.score(ref, hyp, collar=0.0)
    assert [f.der for f in report.files] == [0.0, 0.5]
    assert report.der == pytest.approx(10.0 / 50.0)  # not the mean of 0 and 0.5
    assert report.count_accuracy == 0.5
    assert [f.count_correct for f in report.files] == [True, False]
    table = der.format_table(report)
    assert "overall" in table and "1/2" in table and "WRONG" in table
    assert report.as_dict()["overall"]["der"] == pytest.approx(0.2)
    # a reference file without hypothesis: all missed; a hypothesis without reference: an error
    assert der.score(ref, {"a": hyp["a"]}, collar=0.0).files[1].fractions()["missed"] == 1.0
    with pytest.raises(ValueError):
        der.score(ref, {"c": []})
