"""`toneserve eval sentiment` (loadtest/eval_sentiment.py) and the labelled call-centre set it ships with
(tests/data/sentiment/callcentre.tsv): the metrics, the TSV checks, the set's shape, and a run against a real
in-process gRPC server with a fake AnalyzeText."""
from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from toneserve.console import CommandError
from toneserve.loadtest import eval_sentiment as es
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

SET = Path(__file__).resolve().parents[1] / "data" / "sentiment" / "callcentre.tsv"
KINDS = ("formula", "question", "backchannel", "numbers", "complaint", "explicit", "sarcasm", "thanks", "resolved",
         "codeswitch")
NEG, NEU, POS = es.LABELS


def rows_of(labels):
    return [es.Row(lang="en", label=label, text=f"sentence {i}", line=i + 2) for i, label in enumerate(labels)]


# --- metrics -------------------------------------------------------------------------------------------------

def test_figures_by_hand():
    truth = [NEG, NEG, NEG, NEU, NEU, POS, POS, POS]
    guess = [NEG, NEU, NEG, NEU, POS, POS, POS, NEG]
    f = es.figures(truth, guess)
    assert f["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]  # rows true, columns predicted: neg, neu, pos
    assert f["other"] == [0, 0, 0]
    assert (f["n"], f["correct"]) == (8, 5)
    assert f["accuracy"] == pytest.approx(5 / 8)
    # negative: tp 2, fp 1, fn 1 -> 2/3; neutral: tp 1, fp 1, fn 1 -> 1/2; positive: tp 2, fp 1, fn 1 -> 2/3
    assert f["f1"] == pytest.approx({NEG: 2 / 3, NEU: 1 / 2, POS: 2 / 3})
    assert f["macro_f1"] == pytest.approx(11 / 18)


def test_figures_prediction_outside_the_labels_and_an_absent_class():
    f = es.figures([POS, NEU, NEU], [POS, "", NEU])
    assert f["confusion"] == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert f["other"] == [0, 1, 0]
    assert f["accuracy"] == pytest.approx(2 / 3)
    # positive 1; neutral: tp 1, fn 1 -> 2/3; negative: no sentence either way -> 0
    assert f["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert "other" in es.confusion_table(f)
    with pytest.raises(ValueError):
        es.figures([POS], [])


def test_score_groups_by_language_and_kind():
    rows = [es.Row("zh", POS, "a", "thanks", 2), es.Row("zh", NEG, "b", "sarcasm", 3),
            es.Row("ko", NEU, "c", "backchannel", 4), es.Row("ko", NEG, "d", "sarcasm", 5)]
    s = es.score(rows, [POS, POS, NEU, NEG])
    assert list(s["languages"]) == ["zh", "ko"]  # LANGUAGES order, only those present
    assert s["overall"]["accuracy"] == pytest.approx(3 / 4)
    assert s["languages"]["zh"]["accuracy"] == pytest.approx(1 / 2)
    assert s["languages"]["ko"]["accuracy"] == 1.0
    assert s["kinds"]["sarcasm"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert s["languages"]["zh"]["kinds"]["sarcasm"]["correct"] == 0
    assert "kinds" not in es.score(rows_of([POS]), [POS])  # no kind column, no kind breakdown
    text = es.report(s)
    assert "correct per kind" in text and "sarcasm" in text and "0/1" in text


# --- the TSV checks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ("language\tlabel\ttext\nen\tpositive\tthanks\n", ":1: the header must name"),
    ("lang\tlabel\ttext\nen\tpositive\tthanks\nfr\tneutral\tbonjour\n", ":3: unknown language 'fr'"),
    ("lang\tlabel\ttext\nen\tpositive\tthanks\n\nen\thappy\tgreat\n", ":4: unknown label 'happy'"),
    ("lang\tlabel\ttext\tkind\nen\tneutral\t \tbackchannel\n", ":2: empty text"),
    ("lang\tlabel\ttext\nen\tneutral\n", ":2: 2 column(s)"),
    ("lang\tlabel\ttext\n", "a header but no sentences"),
    ("", "empty"),
])
def test_read_set_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "set.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError) as error:
        es.read_set(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_read_set_columns_in_any_order(tmp_path):
    path = tmp_path / "set.tsv"
    path.write_text("\ufefftext\tlang\tlabel\tnote\nok then\ten\tneutral\tx\n", encoding="utf-8")
    assert es.read_set(path) == [es.Row(lang="en", label="neutral", text="ok then", kind="", line=2)]
    with pytest.raises(CommandError, match="no such file"):
        es.read_set(tmp_path / "missing.tsv")


def test_languages_filter():
    assert es.languages_wanted(None) is None
    assert es.languages_wanted("yue, zh,yue") == ("yue", "zh")
    with pytest.raises(CommandError, match="fr"):
        es.languages_wanted("zh,fr")


# --- the shipped set ----------------------------------------------------------------------------------------

def test_shipped_set_shape():
    rows = es.read_set(SET)
    texts = [row.text for row in rows]
    assert not [t for t, n in Counter(texts).items() if n > 1], "duplicate texts"
    for lang in es.LANGUAGES:
        mine = [row for row in rows if row.lang == lang]
        assert len(mine) >= 40, lang
        labels = Counter(row.label for row in mine)
        assert set(labels) == set(es.LABELS), lang
        assert min(labels.values()) >= 0.25 * len(mine), (lang, labels)
        kinds = Counter(row.kind for row in mine)
        assert set(kinds) == set(KINDS), (lang, kinds)
        # the codeswitch kind carries every label; every other kind has one label
        assert {row.label for row in mine if row.kind == "codeswitch"} == set(es.LABELS), lang
    by_kind = {kind: {row.label for row in rows if row.kind == kind} for kind in KINDS if kind != "codeswitch"}
    assert by_kind == {"formula": {NEU}, "question": {NEU}, "backchannel": {NEU}, "numbers": {NEU},
                       "complaint": {NEG}, "explicit": {NEG}, "sarcasm": {NEG}, "thanks": {POS}, "resolved": {POS}}
    readme = (SET.parent / "README.md").read_text(encoding="utf-8")
    for lang in es.LANGUAGES:
        counts = Counter(row.label for row in rows if row.lang == lang)
        assert f"| {lang} | {counts[NEG]} | {counts[NEU]} | {counts[POS]} | {sum(counts.values())} |" in readme


def test_loadtest_stays_off_the_client_package():
    source = Path(es.__file__).read_text(encoding="utf-8")
    assert "toneserve.client" not in source


# --- a run against a real gRPC server -----------------------------------------------------------------------

class FakeAnalyzer(pb_grpc.AnalyzerServicer):
    """AnalyzeText by a fixed rule: "good" positive, "bad" negative, "???" no label, anything else neutral (or
    `constant` for everything). Checks the API key when given one; counts the requests in flight."""

    def __init__(self, api_key=None, constant=None, random_weights=False, delay=0.0):
        self.api_key, self.constant, self.random_weights, self.delay = api_key, constant, random_weights, delay
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.requests: list[pb.AnalyzeTextRequest] = []

    def AnalyzeText(self, request, context):
        if self.api_key and dict(context.invocation_metadata()).get("authorization") != f"Bearer {self.api_key}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        with self.lock:
            self.requests.append(request)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay)
        text = request.text.lower()
        label = self.constant or ("" if "???" in text else POS if "good" in text else NEG if "bad" in text else NEU)
        value = {POS: 0.8, NEG: -0.6}.get(label, 0.0)
        with self.lock:
            self.in_flight -= 1
        return pb.AnalyzeTextResponse(
            segments=[pb.TextSegment(text=request.text, start_word=0, end_word=len(request.text.split()),
                                     sentiment=label, sentiment_score=value)],
            average=pb.SentimentAverage(sentiment=label, sentiment_score=value),
            metadata=pb.Metadata(request_id=request.request_id, random_weights=self.random_weights,
                                 models=[pb.ModelInfo(name="text_sentiment", family="text_sentiment",
                                                      preset="distilbert_multilingual", precision="fp32",
                                                      runtime="onnxruntime", weights_origin="hub")]),
            language=request.language)


@pytest.fixture
def serve():
    servers = []

    def start(servicer):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_AnalyzerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def parse(*argv):
    p = argparse.ArgumentParser()
    es.add_arguments(p)
    return p.parse_args([str(a) for a in argv])


SMALL = ("lang\tlabel\ttext\tkind\n"
         "en\tpositive\tgood stuff\tthanks\n"
         "en\tpositive\tfine I guess\tthanks\n"
         "en\tnegative\tbad day\tcomplaint\n"
         "en\tneutral\tuh-huh\tbackchannel\n"
         "zh\tneutral\t嗯 ???\tbackchannel\n"
         "zh\tnegative\t真 good 啊\tsarcasm\n"
         "zh\tpositive\tgood 谢谢\tthanks\n"
         "ko\tneutral\t네\tbackchannel\n")


def test_run_end_to_end(serve, tmp_path, capsys):
    servicer = FakeAnalyzer(delay=0.02)
    address = serve(servicer)
    path = tmp_path / "small.tsv"
    path.write_text(SMALL, encoding="utf-8")
    out = tmp_path / "eval.json"
    assert es.run(parse(path, "--address", address, "--json", out, "--concurrency", 2, "--languages", "en,zh",
                        "--sentiment-break", 0.25)) == 0
    printed = capsys.readouterr().out
    assert len(servicer.requests) == 7 and 1 <= servicer.most_in_flight <= 2
    assert {(r.language, r.thresholds.sentiment_break) for r in servicer.requests} == {("en", 0.25), ("zh", 0.25)}
    # en: pos pos neg neu -> predicted pos neu neg neu: 3/4; F1 neg 1, neu 2/3, pos 2/3 -> 7/9
    # zh: neu neg pos -> predicted '' pos pos: 1/3; F1 neg 0, neu 0, pos 2/3 -> 2/9
    # all: 4/7; neg: tp 1 fn 1 -> 2/3; neu: tp 1 fp 1 fn 1 -> 1/2; pos: tp 2 fp 1 fn 1 -> 2/3; macro 11/18
    lines = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip()}
    assert lines["en"][1:4] == ["4", "0.750", f"{7 / 9:.3f}"]
    assert lines["zh"][1:4] == ["3", "0.333", f"{2 / 9:.3f}"]
    assert lines["all"][1:4] == ["7", "0.571", f"{11 / 18:.3f}"]
    assert "ko" not in lines
    assert "scored by: text_sentiment: text_sentiment/distilbert_multilingual fp32 (onnxruntime, hub weights)" \
        in printed
    assert "RANDOM" not in printed
    assert "confusion, all (rows: true, columns: predicted)" in printed
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["scores"]["overall"]["accuracy"] == pytest.approx(4 / 7)
    assert data["scores"]["overall"]["macro_f1"] == pytest.approx(11 / 18)
    assert data["scores"]["overall"]["confusion"] == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]
    assert data["scores"]["overall"]["other"] == [0, 1, 0]
    assert data["scores"]["kinds"]["thanks"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}
    assert data["random_weights"] is False
    assert [(r["line"], r["text"], r["predicted"], r["score"], r["correct"]) for r in data["rows"]] == [
        (2, "good stuff", POS, pytest.approx(0.8), True), (3, "fine I guess", NEU, 0.0, False),
        (4, "bad day", NEG, pytest.approx(-0.6), True), (5, "uh-huh", NEU, 0.0, True),
        (6, "嗯 ???", "", 0.0, False), (7, "真 good 啊", POS, pytest.approx(0.8), False),
        (8, "good 谢谢", POS, pytest.approx(0.8), True)]


def test_run_on_the_shipped_set_with_random_weights(serve, tmp_path, capsys):
    """Every sentence answered neutral: accuracy is the neutral share, macro-F1 a third of neutral's F1."""
    address = serve(FakeAnalyzer(constant=NEU, random_weights=True))
    out = tmp_path / "eval.json"
    assert es.run(parse(SET, "--address", address, "--json", out, "--concurrency", 8)) == 0
    captured = capsys.readouterr()
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = es.read_set(SET)
    predicted = {r["line"]: r["predicted"] for r in data["rows"]}
    assert len(predicted) == len(rows)
    assert es.score(rows, [predicted[row.line] for row in rows]) == data["scores"]
    for lang in es.LANGUAGES:
        mine = [row for row in rows if row.lang == lang]
        share = sum(row.label == NEU for row in mine) / len(mine)
        figs = data["scores"]["languages"][lang]
        assert figs["accuracy"] == pytest.approx(share)
        assert figs["macro_f1"] == pytest.approx(2 * share / (1 + share) / 3)
    assert data["random_weights"] is True
    assert captured.out.count("MEANINGLESS") == 2 and "MEANINGLESS" in captured.err


def test_grpc_error_is_a_command_error(serve, tmp_path):
    address = serve(FakeAnalyzer(api_key="right"))
    path = tmp_path / "small.tsv"
    path.write_text(SMALL, encoding="utf-8")
    with pytest.raises(CommandError) as error:
        es.run(parse(path, "--address", address, "--api-key", "wrong"))
    message = str(error.value)
    assert "UNAUTHENTICATED" in message and "missing or invalid API key" in message and f"{path}:" in message
    assert es.run(parse(path, "--address", address, "--api-key", "right")) == 0
