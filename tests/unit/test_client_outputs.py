"""The client's pieces that need no server: typed results, input discovery, JSONL / CSV rows and reports,
on responses built by hand (the edge cases a generated call does not reliably produce)."""
from __future__ import annotations

import csv
import json
import re

import pytest

from toneserve.client.formats import COLUMNS, JsonFolder, JsonStream, SegmentCsv, SegmentLines, open_output
from toneserve.client.inputs import expand, output_names
from toneserve.client.report import TABLE_ROWS, write_report
from toneserve.client.results import Result, Thresholds
from toneserve.v1 import toneserve_pb2 as pb

EMOTIONS = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]


def segment(start: float, speaker: str, channel: int, transcript: str = "ok", flags=(), scored=True,
            embedding=()) -> pb.Segment:
    """A 1.5 s segment whose words (whitespace-separated) take 0.25 s each from its start."""
    probabilities = [0.02] * 9
    probabilities[channel % 9] = 0.84
    begin = int(start * 1000)
    words = [pb.Word(text=text, start_ms=begin + 250 * i, end_ms=begin + 250 * i + 200)
             for i, text in enumerate(transcript.split())]
    return pb.Segment(
        start_ms=begin, end_ms=begin + 1500, channel=channel, speaker=speaker,
        transcript=transcript, words=words, embedding=embedding,
        emotion=pb.Distribution(labels=EMOTIONS, probabilities=probabilities, top=EMOTIONS[channel % 9]),
        language=pb.Distribution(labels=["en", "zh"], probabilities=[0.9, 0.1], top="en"),
        text_sentiment=pb.TextSentiment(scored=scored, score=0.5 if scored else 0.0,
                                        label="positive" if scored else "", method="vader" if scored else ""),
        judgement=pb.Judgement(sentiment="negative", score=-0.3, tone_score=-0.7, flags=list(flags)),
        prosody=pb.Prosody(pitch_hz=150.0, loudness_dbfs=-20.0, words=3))


def response(segments: list[pb.Segment], speakers: list[tuple[str, int]], random_weights=True) -> pb.AnalyzeResponse:
    return pb.AnalyzeResponse(
        segments=segments,
        speakers=[pb.SpeakerSummary(speaker=name, channel=channel, talk_seconds=3.0, overlap_seconds=0.5,
                                    non_talk_seconds=27.0) for name, channel in speakers],
        call=pb.CallSummary(duration_seconds=30.0, talk_seconds=5.5, overlap_seconds=0.5, non_talk_seconds=24.5),
        metadata=pb.Metadata(random_weights=random_weights, audio_seconds=30.0, emotion_labels=EMOTIONS,
                             thresholds=pb.Thresholds(sentiment_break=1 / 3, min_silence_ms=300),
                             warnings=["RANDOM WEIGHTS: ..."] if random_weights else []))


TRICKY = 'polite, "very" polite\nand 非常好'
EMBEDDING = [0.25, -1.5, 0.1]  # 0.1: float32 0.10000000149011612, read back as 0.1


@pytest.fixture
def result() -> Result:
    return Result.from_proto(response(
        [segment(1.0, "agent", 0, TRICKY, flags=[pb.TONE_TEXT_MISMATCH, pb.ABSTAINED], embedding=EMBEDDING),
         segment(3.0, "customer", 1, scored=False), segment(5.0, "agent", 0, flags=[pb.ESCALATION])],
        [("agent", 0), ("customer", 1)]))


def test_typed_results_are_plain_python(result):
    first = result.segments[0]
    assert first.judgement.flags == ("tone_text_mismatch", "abstained")
    assert first.judgement.score == -0.3  # float32 -0.30000001192092896, shown as the proto's JSON shows it
    assert first.emotion.as_dict()["angry"] == 0.84 and first.emotion.probability == 0.84
    assert (first.start, first.end) == (1.0, 2.5)
    assert result.metadata.thresholds == Thresholds(min_silence_ms=300, sentiment_break=0.33333334)
    assert [s.start for s in result.flagged()] == [1.0, 5.0]  # abstained alone is no finding
    plain = result.to_dict()
    assert json.loads(json.dumps(plain)) == plain and "raw" not in plain
    assert plain["segments"][0]["judgement"]["flags"] == ["tone_text_mismatch", "abstained"]
    assert plain["metadata"]["thresholds"]["vad_threshold"] is None
    assert result.raw.segments[0].transcript == TRICKY
    with pytest.raises(AttributeError):
        first.transcript = "changed"  # frozen


def test_words_and_embeddings_are_typed_and_in_the_json(result):
    first, second = result.segments[:2]
    assert [w.text for w in first.words] == ["polite,", '"very"', "polite", "and", "非常好"]
    assert (first.words[1].start_ms, first.words[1].end_ms) == (1250, 1450)
    assert (first.words[1].start, first.words[1].end) == (1.25, 1.45)  # seconds, as Segment.start / end
    assert first.embedding == (0.25, -1.5, 0.1)
    assert second.embedding is None  # not asked for: None, not an empty vector
    plain = result.to_dict()
    assert plain["segments"][0]["words"][1] == {"text": '"very"', "start_ms": 1250, "end_ms": 1450}
    assert plain["segments"][0]["embedding"] == [0.25, -1.5, 0.1] and plain["segments"][1]["embedding"] is None
    from toneserve.client.formats import document
    assert json.loads(json.dumps(document("a.wav", result)))["segments"][0]["embedding"] == [0.25, -1.5, 0.1]


def test_csv_round_trips_commas_quotes_newlines_and_unicode(result, tmp_path):
    path = tmp_path / "out.csv"
    output = open_output("csv", str(path), several=True)
    assert isinstance(output, SegmentCsv)
    output.write("calls/a.wav", "a", result)
    output.close()
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS and len(rows) == 3
    assert rows[0]["transcript"] == TRICKY and rows[0]["flags"] == "tone_text_mismatch;abstained"
    assert rows[0]["file"] == "calls/a.wav" and float(rows[0]["start_s"]) == 1.0
    assert rows[1]["text_sentiment_score"] == "" and rows[1]["text_sentiment_label"] == ""
    # "words" stays the prosody's count; "word_times" holds the words themselves, as JSON text.
    assert rows[0]["words"] == "3"
    assert json.loads(rows[0]["word_times"])[:2] == [["polite,", 1.0, 1.2], ['"very"', 1.25, 1.45]]
    assert json.loads(rows[0]["word_times"])[-1] == ["非常好", 2.0, 2.2]
    assert "0.25" not in "".join(rows[0].values())  # no embedding in CSV


def test_jsonl_has_one_line_per_segment_with_the_csv_columns(result, tmp_path):
    path = tmp_path / "out.jsonl"
    output = open_output("jsonl", str(path), several=False)
    assert isinstance(output, SegmentLines)
    output.write("a.wav", "a", result)
    output.close()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(tuple(row) == COLUMNS for row in rows)
    assert rows[0]["flags"] == ["tone_text_mismatch", "abstained"] and rows[0]["transcript"] == TRICKY
    assert rows[1]["text_sentiment_score"] is None and rows[0]["text_sentiment_score"] == 0.5
    assert (rows[0]["emotion"], rows[0]["emotion_probability"]) == ("angry", 0.84)
    assert rows[0]["word_times"][4] == ["非常好", 2.0, 2.2] and rows[1]["word_times"] == [["ok", 3.0, 3.2]]
    assert "embedding" not in rows[0]


def test_json_goes_to_a_folder_or_to_one_place(tmp_path):
    assert isinstance(open_output("json", None, several=False), JsonStream)
    assert isinstance(open_output("json", str(tmp_path / "one.json"), several=False), JsonStream)
    assert isinstance(open_output("json", str(tmp_path / "docs"), several=True), JsonFolder)
    assert isinstance(open_output("json", str(tmp_path / "docs.json"), several=True), JsonFolder)


def test_inputs_folders_globs_and_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["calls/a.wav", "calls/b.MP3", "calls/deep/c.opus", "calls/notes.txt", "calls/.hidden.wav",
                 "calls/.git/x.wav", "other/d.flac", "other/e.bin"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = expand(["calls", "other/*", "calls/a.wav", "missing.wav", "nothing/*.wav"])
    assert [str(p) for p in found.files] == ["calls/a.wav", "calls/b.MP3", "calls/deep/c.opus", "other/d.flac",
                                            "other/e.bin"]  # a glob takes what it matches; a folder, audio
    assert found.unmatched == ["missing.wav", "nothing/*.wav"]
    assert [str(p) for p in expand(["calls/**/*.opus"]).files] == ["calls/deep/c.opus"]
    assert expand(["calls/notes.txt"]).files  # named explicitly: analysed (and refused by the server if not audio)


def test_output_names_are_unique():
    from pathlib import Path

    names = output_names([Path("a/call.wav"), Path("b/call.wav"), Path("call.mp3"), Path("x/call-2.wav")])
    assert list(names.values()) == ["call", "call-2", "call-3", "call-2-2"]


def test_report_has_a_trace_per_speaker_even_a_silent_one_and_every_flagged_segment(tmp_path):
    many = [segment(1.0 + 0.01 * i, "agent", 0, f"line {i} <b>&", flags=[pb.TONE_TEXT_MISMATCH])
            for i in range(TABLE_ROWS + 5)]
    result = Result.from_proto(response(many, [("agent", 0), ("silent one", 1)]))
    html_path, png_path = write_report(result, "calls/a.wav", tmp_path / "r", "a")
    page = html_path.read_text(encoding="utf-8")
    assert re.findall(r'<g id="timeline-([^"]+)"', page) == ["agent", "silent_one"]
    assert page.count("<svg") == 1 and not re.search(r'(?:src|href)="(?!#)', page) and "<script" not in page
    text = re.sub(r'<span class="word"[^>]*>|</span>', "", page)  # each word in a span of its own
    assert f"line {TABLE_ROWS + 4} &lt;b&gt;&amp;" in text  # all flagged segments, escaped
    assert "5 more" in page  # the figure's table stops at TABLE_ROWS
    assert "RANDOM WEIGHTS" in page
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_shows_each_words_time_in_a_tooltip(tmp_path):
    result = Result.from_proto(response([segment(1.0, "agent", 0, 'say <hi> & "bye"', flags=[pb.ESCALATION]),
                                         segment(4.0, "agent", 0, "all fine")], [("agent", 0)]))
    page = write_report(result, "a.wav", tmp_path, "a")[0].read_text(encoding="utf-8")
    # The flagged segment (its table) and every segment (the folded list) show their words, escaped.
    assert page.count('<span class="word" title="1.25–1.45 s">&lt;hi&gt;</span>') == 2
    assert page.count('<span class="word" title="1.75–1.95 s">&quot;bye&quot;</span>') == 2
    assert '<span class="word" title="4.25–4.45 s">fine</span>' in page
    assert "All segments (2)" in page


def test_report_without_random_weights_or_flags_says_neither(tmp_path):
    result = Result.from_proto(response([segment(1.0, "agent", 0)], [("agent", 0)], random_weights=False))
    page = write_report(result, "a.wav", tmp_path, "a")[0].read_text(encoding="utf-8")
    assert "RANDOM WEIGHTS" not in page and "Flagged segments (0)" in page


def test_the_verdict_is_in_the_result_the_report_and_the_summary(tmp_path):
    from toneserve.cli import summary

    message = response([segment(1.0, "agent", 0), segment(3.0, "customer", 1, "it <never> came")],
                       [("agent", 0), ("customer", 1)])
    without = Result.from_proto(message)
    assert without.call.verdict is None and without.to_dict()["call"]["verdict"] is None
    assert "Verdict" not in write_report(without, "a.wav", tmp_path / "none", "a")[0].read_text(encoding="utf-8")
    message.call.verdict.CopyFrom(pb.Verdict(sentiment="negative", score=-0.5, reason="The parcel <never> came.",
                                             segment_ids=[1], model="judge-1"))
    result = Result.from_proto(message)
    assert result.call.verdict.segment_ids == (1,) and result.to_dict()["call"]["verdict"]["model"] == "judge-1"
    page = write_report(result, "a.wav", tmp_path / "with", "a")[0].read_text(encoding="utf-8")
    assert "<strong>Verdict</strong> (judge-1): negative -0.50. The parcel &lt;never&gt; came." in page
    assert "Resting on 3.0" in page
    assert "verdict (judge-1): negative -0.50: The parcel <never> came. (segments 1)" in summary(result.to_dict())
