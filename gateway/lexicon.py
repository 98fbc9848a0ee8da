"""`--text-sentiment lexicon`: the lexicons toneserve scored words with before its text model.

VADER for English and SnowNLP for Chinese, inside the gateway; yue, ja and ko are not scored. Kept to
compare against (`toneserve eval sentiment`) and for a server without a text model. The `lexicon` extra
(pip install 'toneserve[lexicon]'); not in the gateway image, where SnowNLP alone would hold about 410 MB.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

from toneserve.gateway.sentiment import Call


class LexiconScorer:
    """VADER (English) and SnowNLP (Chinese) inside the gateway; nothing for yue, ja, ko."""

    METHODS = {"en": "vader", "zh": "snownlp"}

    def method(self, language: str) -> str | None:
        return self.METHODS.get(language)

    def warning(self, language: str) -> str:
        return (f"no text sentiment model for language {language or 'unknown'!r} (the lexicons score en and zh "
                f"only): segments in it carry no text score")

    async def score(self, texts: Sequence[str], language: str, call: Call) -> list[float]:
        # CPU work of the gateway: in a worker thread, holding one of the tenant's fair CPU slots.
        return await call.compute(_scores, self.METHODS[language], list(texts))


def _scores(method: str, texts: list[str]) -> list[float]:
    return [_vader(t) if method == "vader" else _snownlp(t) for t in texts]


def _vader(text: str) -> float:
    return float(_vader_analyzer().polarity_scores(text)["compound"])


@functools.cache
def _vader_analyzer():
    # Imported on first use (the lexicon extra); reading the lexicon takes ~15 ms, read-only afterwards.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _snownlp(text: str) -> float:
    # Importing snownlp loads its models (about 2 s, 410 MB); the import lock makes it thread safe.
    from snownlp import SnowNLP
    # .sentiments is P(positive) in [0, 1]; mapped onto [-1, 1].
    return 2.0 * float(SnowNLP(text).sentiments) - 1.0
