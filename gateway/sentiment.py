"""Text sentiment of a transcript: VADER for English, SnowNLP for Chinese, nothing else.

Both models are lexicon/naive-Bayes models on the CPU: microseconds to a millisecond per
utterance, so they run inline in the gateway rather than as Triton models.
"""
from __future__ import annotations

import functools
import re

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from toneserve.v1 import toneserve_pb2 as pb

# The one table of which SenseVoice language is scored by which text model; every other
# label ("yue", "ja", "ko", "nospeech", "") is left unscored with a warning.
SCORED_LANGUAGES = {"en": "vader", "zh": "snownlp"}

# SenseVoice leaves markup such as <|en|><|NEUTRAL|><|Speech|><|woitn|> in some transcripts.
_TAG = re.compile(r"<\|[^|]*\|>")
# A Unicode letter (CJK ideographs and kana are letters too): text without one has nothing to
# score, and VADER/SnowNLP would still return a number for it.
_LETTER = re.compile(r"[^\W\d_]")


def strip_tags(text: str) -> str:
    """The transcript without SenseVoice's <|...|> tags."""
    return _TAG.sub("", text)


def label(score: float, sentiment_break: float) -> str:
    """positive at >= +break, negative at <= -break, else neutral (both break points inclusive)."""
    if score >= sentiment_break:
        return "positive"
    if score <= -sentiment_break:
        return "negative"
    return "neutral"


def unscored_warning(language: str) -> str:
    """The metadata warning for a language that SCORED_LANGUAGES has no model for."""
    return (f"no text sentiment model for language {language or 'unknown'!r}: "
            f"segments in it carry no text score")


def text_sentiment(text: str, language: str, sentiment_break: float) -> pb.TextSentiment:
    """Score `text` in [-1, 1] with the model for `language`; scored=False when there is none."""
    method = SCORED_LANGUAGES.get(language)
    text = strip_tags(text).strip()
    if method is None or not _LETTER.search(text):
        return pb.TextSentiment(scored=False)
    score = _vader().polarity_scores(text)["compound"] if method == "vader" else _snownlp(text)
    return pb.TextSentiment(scored=True, score=score, label=label(score, sentiment_break), method=method)


@functools.cache
def _vader() -> SentimentIntensityAnalyzer:
    # Building it reads the lexicon file (~15 ms); it is read-only afterwards, so one instance
    # serves every thread. A race on first use can at worst build a second, identical one.
    return SentimentIntensityAnalyzer()


def _snownlp(text: str) -> float:
    # Imported on first use: importing snownlp loads its models (about 2 s), which a gateway
    # serving only English should not pay. The import lock makes this safe across threads.
    from snownlp import SnowNLP
    # .sentiments is P(positive) in [0, 1]; map it onto VADER's [-1, 1].
    return 2.0 * SnowNLP(text).sentiments - 1.0
