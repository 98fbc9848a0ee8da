"""The words' sentiment: sentences and words, the scorers (the served model, the lexicons), AnalyzeText."""
from __future__ import annotations

import asyncio
import contextlib

import grpc
import numpy as np
import pytest

from tests.unit.test_pipeline import TEXT_LABELS, Aborted, FakeBackend, FakeContext, fake_text_probs
from toneserve import contract
from toneserve.contract import Code, ToneserveError
from toneserve.gateway import sentiment
from toneserve.gateway.backend import ModelInfo
from toneserve.gateway.calls import TritonCalls
from toneserve.gateway.fair_queue import FairPools, FairSlots
from toneserve.gateway.metrics import Metrics
from toneserve.gateway.sentiment import ModelScorer, label, polarity, sentences, text_sentiment
from toneserve.gateway.service import AnalyzerService
from toneserve.gateway.settings import Settings
from toneserve.v1 import toneserve_pb2 as pb

BREAK = 1 / 3


class _Unbounded(dict):
    def __missing__(self, model: str) -> contextlib.nullcontext:
        return contextlib.nullcontext()


direct = TritonCalls(_Unbounded(), "test", None)  # calls without slots or deadline


def split(text: str, language: str) -> list[tuple[str, int, int]]:
    return [(s.text, s.start_word, s.end_word) for s in sentences(text, language)]


# --- sentences and words -------------------------------------------------------------------------

@pytest.mark.parametrize("text, language, expected", [
    ("Great, just great. Another week of waiting, wonderful service.", "en",
     [("Great, just great.", 0, 3), ("Another week of waiting, wonderful service.", 3, 9)]),
    ("您好，请问有什么可以帮您？今天就给您发快递，运费全免。", "zh",
     [("您好，请问有什么可以帮您？", 0, 11), ("今天就给您发快递，运费全免。", 11, 23)]),
    # A decimal point and an abbreviation's inner dots end nothing; "?!" is one end.
    ("It costs 3.5 dollars! Really?! ok", "en", [("It costs 3.5 dollars!", 0, 4), ("Really?!", 4, 5), ("ok", 5, 6)]),
    ("I live in the U.S. now", "en", [("I live in the U.S.", 0, 5), ("now", 5, 6)]),
    # Leading quotes come with their sentence; the closing ones stay with the one they close.
    ("「はい」と言った。次", "ja", [("「はい」と言った。", 0, 6), ("次", 6, 7)]),
    ("안녕하세요. 감사합니다", "ko", [("안녕하세요.", 0, 1), ("감사합니다", 1, 2)]),
    ("係咪呀 ok 好嘢", "yue", [("係咪呀 ok 好嘢", 0, 6)]),
    ("first line\nsecond line", "en", [("first line", 0, 2), ("second line", 2, 4)]),
    # auto: counted by characters where there are Han or kana, else by spaces.
    ("我们开会 meeting 吧", "auto", [("我们开会 meeting 吧", 0, 6)]),
    ("hello there. bye", "auto", [("hello there.", 0, 2), ("bye", 2, 3)]),
    ("", "en", []), ("...!?", "en", []), ("，。！", "zh", []), ("   ", "ko", []),
])
def test_sentences(text, language, expected):
    assert split(text, language) == expected


def test_a_long_sentence_is_cut_into_pieces_that_cover_every_word():
    text = " ".join(f"w{i}" for i in range(130)) + "."
    parts = sentences(text, "en")
    assert [(s.start_word, s.end_word) for s in parts] == [(0, 48), (48, 96), (96, 130)]
    assert " ".join(s.text for s in parts) == text
    assert all(s.end_word - s.start_word <= sentiment.MAX_SENTENCE_WORDS for s in parts)


def test_label_at_break_points():
    assert label(BREAK, BREAK) == "positive"
    assert label(-BREAK, BREAK) == "negative"
    assert label(0.0, BREAK) == "neutral"
    assert label(0.5, 0.6) == "neutral"
    assert label(1.0, 1.0) == "positive"
    assert label(0.9999, 1.0) == "neutral"


# --- the served model's scores --------------------------------------------------------------------

def test_polarity_finds_the_labels_by_name_whatever_their_order():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert polarity(["positive", "neutral", "negative"], probs) == pytest.approx([0.6, -0.5])
    assert polarity(["NEGATIVE", "Neutral", "Positive"], probs) == pytest.approx([-0.6, 0.5])
    with pytest.raises(ToneserveError) as error:
        polarity(["LABEL_0", "LABEL_1", "LABEL_2"], probs)
    assert error.value.code is Code.INTERNAL


def test_a_text_is_scored_sentence_by_sentence_and_averaged_by_words():
    backend = FakeBackend()
    text = "<|en|><|NEUTRAL|>Thank you so much. My order never arrived and nobody fixed it. Okay."
    result = asyncio.run(text_sentiment(text, "en", ModelScorer(backend), BREAK, direct))
    assert [t for batch in backend.texts for t in batch] == [
        "Thank you so much.", "My order never arrived and nobody fixed it.", "Okay."]
    scores = [0.9 - 0.02, 0.05 - 0.8, 0.0]
    assert [(s.sentiment, s.start_word, s.end_word) for s in result.sentences] == [
        ("positive", 0, 4), ("negative", 4, 12), ("neutral", 12, 13)]
    assert [s.sentiment_score for s in result.sentences] == pytest.approx(scores, abs=1e-6)
    mean = (4 * scores[0] + 8 * scores[1] + 1 * scores[2]) / 13
    assert result.scored and result.score == pytest.approx(mean, abs=1e-6)
    assert result.label == label(mean, BREAK) == "neutral"
    assert result.method == "fake-text_sentiment/test fp32"


@pytest.mark.parametrize("per_call, max_batch, sizes", [(1, 4, [1] * 10), (4, 4, [4, 4, 2]), (8, 4, [4, 4, 2])])
def test_the_sentences_go_in_concurrent_calls_of_at_most_the_models_batch_size(monkeypatch, per_call, max_batch,
                                                                              sizes):
    monkeypatch.setattr(sentiment, "SENTENCES_PER_CALL", per_call)
    backend = FakeBackend(hang=("sentiment",))
    backend.models[contract.TEXT_SENTIMENT] = ModelInfo(
        name=contract.TEXT_SENTIMENT, version="1", family="f", preset="p", weights_origin="random",
        precision="int8", max_batch_size=max_batch)
    text = " ".join(f"Sentence number {i} is here." for i in range(10))

    async def main():
        task = asyncio.create_task(text_sentiment(text, "en", ModelScorer(backend), BREAK, direct))
        await asyncio.sleep(0.05)
        in_flight = [len(batch) for batch in backend.texts]  # every call is out before any answers
        backend.hang = ()
        task.cancel()
        return in_flight

    assert asyncio.run(main()) == sizes
    backend.texts.clear()
    result = asyncio.run(text_sentiment(text, "en", ModelScorer(backend), BREAK, direct))
    assert [t for batch in backend.texts for t in batch] == [s.text for s in result.sentences]
    assert result.method == "f/p int8"


@pytest.mark.parametrize("text", ["", "   ", "...!?", "，。！", "<|en|><|NEUTRAL|>"])
def test_text_without_words_is_unscored_and_costs_no_call(text):
    backend = FakeBackend()
    result = asyncio.run(text_sentiment(text, "en", ModelScorer(backend), BREAK, direct))
    assert not result.scored and backend.texts == []


@pytest.mark.parametrize("language", contract.TEXT_LANGUAGES)
def test_the_model_scores_every_language(language):
    assert ModelScorer(FakeBackend()).method(language) == "fake-text_sentiment/test fp32"


def test_without_a_served_model_nothing_is_scored_and_a_warning_says_so():
    backend = FakeBackend()
    del backend.models[contract.TEXT_SENTIMENT]
    scorer = ModelScorer(backend)
    assert scorer.method("en") is None
    assert not asyncio.run(text_sentiment("Thank you.", "en", scorer, BREAK, direct)).scored
    assert "no text-sentiment model" in scorer.warning("en")


# --- the lexicons (--text-sentiment lexicon) -------------------------------------------------------

lexicon = pytest.mark.skipif(not sentiment.lexicon_installed(), reason="the lexicon extra is not installed")


def LexiconScorer():
    from toneserve.gateway.lexicon import LexiconScorer

    return LexiconScorer()


@lexicon
@pytest.mark.parametrize("text, expected", [
    ("I love this product, it is wonderful!", "positive"),
    ("This is terrible, I hate it and I am very angry.", "negative"),
    ("The meeting is at three pm on Tuesday.", "neutral"),
])
def test_vader_scores_english(text, expected):
    result = asyncio.run(text_sentiment(text, "en", LexiconScorer(), BREAK, direct))
    assert result.method == "vader" and result.label == expected


@lexicon
def test_snownlp_scores_chinese_and_nothing_else_is_scored():
    scorer = LexiconScorer()
    good = asyncio.run(text_sentiment("非常好，谢谢你", "zh", scorer, BREAK, direct))
    bad = asyncio.run(text_sentiment("这个服务太差了，我很生气", "zh", scorer, BREAK, direct))
    assert good.method == bad.method == "snownlp" and good.score > 0 > bad.score
    for language in ("yue", "ja", "ko", "nospeech", ""):
        assert scorer.method(language) is None
        assert not asyncio.run(text_sentiment("今日はとても良い日です", language, scorer, BREAK, direct)).scored


@lexicon
def test_the_lexicons_score_in_a_cpu_slot_of_the_tenant():
    async def scenario():
        cpu = FairSlots(1)
        call = TritonCalls(FairPools(lambda model: 4).tenant("t"), "r", None, cpu=cpu.tenant("t"))
        await cpu.acquire("other")  # another tenant's CPU work holds the gateway's one core
        scored = asyncio.create_task(text_sentiment("I love it.", "en", LexiconScorer(), BREAK, call))
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not scored.done() and cpu.waiting("t") == 1
        cpu.release()
        assert (await asyncio.wait_for(scored, 30)).label == "positive" and cpu.free == 1
    asyncio.run(scenario())


def test_the_mode_names_the_scorer():
    assert isinstance(sentiment.scorer("model", FakeBackend()), ModelScorer)
    assert type(sentiment.scorer("lexicon", FakeBackend())).__name__ == "LexiconScorer"
    with pytest.raises(ValueError):
        sentiment.scorer("vader", FakeBackend())
    with pytest.raises(ValueError):
        Settings(text_sentiment="vader")


# --- AnalyzeText -----------------------------------------------------------------------------------

def analyze_text(request: pb.AnalyzeTextRequest, settings: Settings = Settings(), backend=None):
    service = AnalyzerService(backend or FakeBackend(), settings, Metrics())
    context = FakeContext()

    async def main():
        try:
            return await service.AnalyzeText(request, context)
        except Aborted:
            return None
        finally:
            assert service.active == 0

    return asyncio.run(main()), context


def test_analyze_text_answers_deepgrams_shape():
    text = "Thank you for calling. My order never arrived and nobody fixed it."
    response, _ = analyze_text(pb.AnalyzeTextRequest(text=text, language="en", request_id="r-1"))
    assert [(s.text, s.start_word, s.end_word, s.sentiment) for s in response.segments] == [
        ("Thank you for calling.", 0, 4, "positive"), ("My order never arrived and nobody fixed it.", 4, 12, "negative")]
    scores = [p[0] - p[2] for p in map(fake_text_probs, (s.text for s in response.segments))]
    mean = (4 * scores[0] + 8 * scores[1]) / 12
    assert response.average.sentiment_score == pytest.approx(mean, abs=1e-6)
    assert response.average.sentiment == label(mean, BREAK) == "neutral"  # -0.21: the words outweigh the thanks
    assert response.language == "en" and response.metadata.request_id == "r-1"
    assert [m.name for m in response.metadata.models] == [contract.TEXT_SENTIMENT]
    assert response.metadata.thresholds.sentiment_break == pytest.approx(BREAK)
    assert TEXT_LABELS == ["positive", "neutral", "negative"]


def test_analyze_text_takes_a_break_point():
    request = pb.AnalyzeTextRequest(text="Okay.", thresholds=pb.Thresholds(sentiment_break=0.0))
    response, _ = analyze_text(request)
    assert response.language == "auto" and response.average.sentiment == "positive"  # 0 >= +0


@pytest.mark.parametrize("request_, words", [
    (pb.AnalyzeTextRequest(text=""), "empty"),
    (pb.AnalyzeTextRequest(text="  \n "), "empty"),
    (pb.AnalyzeTextRequest(text="x" * 101), "at most 100"),
    (pb.AnalyzeTextRequest(text="hello", language="fr"), "'fr' is not supported"),
    (pb.AnalyzeTextRequest(text="...!?"), "no word"),
    (pb.AnalyzeTextRequest(text="hi", request_id="bad id!"), "request_id"),
    (pb.AnalyzeTextRequest(text="hi", thresholds=pb.Thresholds(sentiment_break=2.0)), "sentiment_break"),
])
def test_analyze_text_refuses_bad_requests_clearly(request_, words):
    response, context = analyze_text(request_, Settings(max_text_chars=100))
    assert response is None and context.status == grpc.StatusCode.INVALID_ARGUMENT
    assert context.trailing[contract.ERROR_CODE_METADATA] == Code.INVALID_ARGUMENT.name


def test_a_language_nothing_scores_is_answered_unscored_with_a_warning():
    """The lexicons score en and zh only; a server without the text model scores nothing: as in the audio path,
    the answer has no segments, an empty average and a warning that says why."""
    response, _ = analyze_text(pb.AnalyzeTextRequest(text="はい", language="ja"), Settings(text_sentiment="lexicon"))
    assert not response.segments and response.average.sentiment == "" and response.language == "ja"
    assert any("'ja'" in w for w in response.metadata.warnings)
    backend = FakeBackend()
    del backend.models[contract.TEXT_SENTIMENT]
    response, _ = analyze_text(pb.AnalyzeTextRequest(text="Thank you."), backend=backend)
    assert not response.segments and any("no text-sentiment model" in w for w in response.metadata.warnings)
