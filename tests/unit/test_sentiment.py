"""Text sentiment: VADER for English, SnowNLP for Chinese, unscored elsewhere."""
from __future__ import annotations

import pytest

from toneserve.gateway.sentiment import SCORED_LANGUAGES, label, text_sentiment, unscored_warning

BREAK = 1 / 3


@pytest.mark.parametrize("text, expected", [
    ("I love this product, it is wonderful!", "positive"),
    ("This is terrible, I hate it and I am very angry.", "negative"),
    ("The meeting is at three pm on Tuesday.", "neutral"),
    # No ITN: lowercase, no punctuation.
    ("thank you so much this is great", "positive"),
    ("the service was awful and nobody helped me", "negative"),
])
def test_english_labels(text, expected):
    result = text_sentiment(text, "en", BREAK)
    assert result.scored and result.method == "vader"
    assert result.label == expected
    if expected == "positive":
        assert result.score >= BREAK
    elif expected == "negative":
        assert result.score <= -BREAK
    else:
        assert abs(result.score) < BREAK


def test_chinese_opposite_signs():
    good = text_sentiment("非常好，谢谢你", "zh", BREAK)
    bad = text_sentiment("这个服务太差了，我很生气", "zh", BREAK)
    assert good.scored and bad.scored
    assert good.method == bad.method == "snownlp"
    assert good.score > 0 > bad.score
    assert bad.label == "negative"


@pytest.mark.parametrize("language", ["ja", "ko", "yue", "nospeech", ""])
def test_languages_without_a_model_are_unscored(language):
    result = text_sentiment("今日はとても良い日です I love it", language, BREAK)
    assert not result.scored
    assert (result.score, result.label, result.method) == (0.0, "", "")


@pytest.mark.parametrize("text", ["", "   ", "...!?", "，。！", "<|en|><|NEUTRAL|>", "123"])
@pytest.mark.parametrize("language", ["en", "zh"])
def test_text_without_letters_is_unscored(text, language):
    assert not text_sentiment(text, language, BREAK).scored


def test_sensevoice_tags_are_stripped():
    tagged = text_sentiment("<|en|><|NEUTRAL|><|Speech|><|woitn|>I love this", "en", BREAK)
    plain = text_sentiment("I love this", "en", BREAK)
    assert tagged.label == "positive"
    assert tagged.score == plain.score


def test_label_at_break_points():
    assert label(BREAK, BREAK) == "positive"
    assert label(-BREAK, BREAK) == "negative"
    assert label(0.0, BREAK) == "neutral"
    assert label(0.5, 0.6) == "neutral"
    assert label(-0.5, 0.6) == "neutral"
    assert label(1.0, 1.0) == "positive"
    assert label(-1.0, 1.0) == "negative"
    assert label(0.9999, 1.0) == "neutral"


def test_break_changes_the_label():
    text = "the service was awful and nobody helped me"
    score = text_sentiment(text, "en", BREAK).score
    assert text_sentiment(text, "en", abs(score) - 0.01).label == "negative"
    assert text_sentiment(text, "en", abs(score) + 0.01).label == "neutral"


@pytest.mark.parametrize("text, language", [
    ("GREAT GREAT GREAT!!! I LOVE LOVE LOVE IT, BEST EVER, AMAZING, WONDERFUL!!!", "en"),
    ("HORRIBLE!!! WORST, HATE HATE HATE, TERRIBLE, DISGUSTING, AWFUL!!!", "en"),
    ("太好了太好了，非常满意，非常感谢，完美，喜欢", "zh"),
    ("太差了，垃圾，恶心，愤怒，失望，讨厌，糟糕透了", "zh"),
])
def test_scores_within_range(text, language):
    result = text_sentiment(text, language, BREAK)
    assert result.scored
    assert -1.0 <= result.score <= 1.0


def test_scored_languages_table_matches_methods():
    assert text_sentiment("good", "en", BREAK).method == SCORED_LANGUAGES["en"]
    assert text_sentiment("好", "zh", BREAK).method == SCORED_LANGUAGES["zh"]


def test_unscored_warning_names_the_language():
    warning = unscored_warning("ja")
    assert "'ja'" in warning and "no text sentiment" in warning
