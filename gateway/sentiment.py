"""The sentiment of words: a text cut into sentences, each sentence scored, their scores averaged.

One path for both users of it: the audio pipeline's transcripts (`Segment.text_sentiment`) and
`AnalyzeText` (Deepgram's text-sentiment shape: segments with start_word / end_word, and an average).

* Sentences end at . ! ? ; and their CJK forms (a Latin mark only before a space, a quote or the end:
  not in 3.5 or U.S.A), or a line break. A sentence of more than MAX_SENTENCE_WORDS words is cut into pieces of at most that many, so
  that the model's token bound (contract.MAX_TOKENS, 128 by default: a longer input is cut there and its
  tail not read) is rarely reached. Words are counted as gateway/words.py says.
* Each sentence's score is in [-1, 1]; the text's is the mean of its sentences' weighted by their words.
  Labels: positive at >= +break, negative at <= -break, else neutral (the request's sentiment_break).
* Who scores (`Scorer`): the text-sentiment model Triton serves (`ModelScorer`, the default: every
  language, score = P(positive) - P(negative), one request per sentence, sent together), or
  the lexicons toneserve had before (gateway/lexicon.py, `--text-sentiment lexicon`): VADER for English,
  SnowNLP for Chinese, no other language. They are kept for comparison (`toneserve eval sentiment`) and
  for a server without a text model; they are not in the gateway image (SnowNLP alone holds about
  410 MB), but in the `lexicon` extra.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from toneserve import contract
from toneserve.contract import Code, ToneserveError
from toneserve.gateway import words
from toneserve.gateway.backend import Backend
from toneserve.gateway.calls import TritonCalls as Call
from toneserve.gateway.words import strip_tags
from toneserve.v1 import toneserve_pb2 as pb

__all__ = ["strip_tags", "label", "sentences", "text_sentiment", "ModelScorer", "scorer"]

MAX_SENTENCE_WORDS = 48
# Sentences per Triton request (see ModelScorer.score).
SENTENCES_PER_CALL = 1
MODES = ("model", "lexicon")
# Sentence ends: CJK end marks; Latin ones (. ! ? ;) only before a space, a closing quote or the end of the
# text (so not in 3.5 or U.S.A); either with the closing quotes and brackets after them; or a line break.
_CLOSE = "\"'”’)）」』"
_END = re.compile(rf"[。！？；…]+[{_CLOSE}]*|[.!?;]+(?=[\s{_CLOSE}]|$)[{_CLOSE}]*|\n")


@dataclass(frozen=True)
class Sentence:
    text: str
    start_word: int  # index of its first word in the whole text
    end_word: int  # one past its last word


def label(score: float, sentiment_break: float) -> str:
    """positive at >= +break, negative at <= -break, else neutral (both break points inclusive)."""
    if score >= sentiment_break:
        return "positive"
    if score <= -sentiment_break:
        return "negative"
    return "neutral"


def sentences(text: str, language: str) -> list[Sentence]:
    """The sentences of `text` (tags already stripped) that hold a word, each with its word range."""
    spans = words.spans(text, language)
    ends = [m.end() for m in _END.finditer(text)]
    out: list[Sentence] = []
    first, end_at, begin = 0, 0, 0  # begin: where the previous sentence ended (so leading quotes come along)
    while first < len(spans):
        # The sentence runs to the first end mark after its first word, or to the end of the text.
        while end_at < len(ends) and ends[end_at] <= spans[first][0]:
            end_at += 1
        stop = ends[end_at] if end_at < len(ends) else len(text)
        last = first
        while last < len(spans) and spans[last][1] <= stop and last - first < MAX_SENTENCE_WORDS:
            last += 1
        last = max(last, first + 1)  # a word running across the end mark still belongs to a sentence
        # A cut piece ends with its last word; a whole sentence with its end marks.
        cut = last < len(spans) and spans[last][0] < stop
        tail = spans[last - 1][1] if cut else max(stop, spans[last - 1][1])
        out.append(Sentence(text[begin:tail].strip(), first, last))
        first, begin = last, tail
    return out


class Scorer(Protocol):
    def method(self, language: str) -> str | None:
        """What scores text in `language` (TextSentiment.method), or None: no score for it."""
        ...

    def warning(self, language: str) -> str:
        """The metadata warning for text in `language` that is left unscored."""
        ...

    async def score(self, texts: Sequence[str], language: str, call: Call) -> list[float]:
        """One score in [-1, 1] per text, in order."""
        ...


class ModelScorer:
    """The text-sentiment model Triton serves: every language (it is multilingual)."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def method(self, language: str) -> str | None:
        info = self.backend.models.get(contract.TEXT_SENTIMENT)
        return None if info is None else f"{info.family}/{info.preset} {info.precision}"

    def warning(self, language: str) -> str:
        return "no text sentiment: this server serves no text-sentiment model (transcripts carry no text score)"

    async def score(self, texts: Sequence[str], language: str, call: Call) -> list[float]:
        # One request per sentence, all at once: Triton's dynamic batcher merges them with the other segments'
        # and calls' sentences, and its runner pads only sentences of similar length together. Measured
        # (docs/BENCHMARKS.md): 2.75x the sentences per second of one at a time, while requests of 32 rows
        # padded to their longest sentence ran at 0.9x (1.18x sorted by length).
        step = max(1, min(SENTENCES_PER_CALL, self.backend.models[contract.TEXT_SENTIMENT].max_batch_size or 1))
        parts = await asyncio.gather(*(call(self.backend.sentiment, list(texts[i:i + step]))
                                       for i in range(0, len(texts), step)))
        scores: list[float] = []
        for labels, probs in parts:
            scores.extend(polarity(labels, probs).tolist())
        return scores


def polarity(labels: Sequence[str], probs: np.ndarray) -> np.ndarray:
    """P(positive) - P(negative) of each row of `probs` [n, labels], clipped to [-1, 1]; the labels are
    found by name (any case), so the model's own id2label order is kept."""
    names = [name.lower() for name in labels]
    try:
        positive, negative = names.index("positive"), names.index("negative")
    except ValueError:
        raise ToneserveError(Code.INTERNAL, f"the text-sentiment model's labels {list(labels)} name no positive "
                                            f"and negative class") from None
    probs = np.asarray(probs, np.float64).reshape(len(probs), len(names))
    return np.clip(probs[:, positive] - probs[:, negative], -1.0, 1.0)


def lexicon_installed() -> bool:
    """Whether the lexicon extra (VADER, SnowNLP) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("vaderSentiment", "snownlp"))


def scorer(mode: str, backend: Backend) -> Scorer:
    """The scorer `--text-sentiment MODE` names."""
    if mode == "model":
        return ModelScorer(backend)
    if mode == "lexicon":
        from toneserve.gateway.lexicon import LexiconScorer  # the lexicon extra: only when asked for

        return LexiconScorer()
    raise ValueError(f"text sentiment {mode!r}: choose one of {MODES}")


async def text_sentiment(text: str, language: str, scorer: Scorer, sentiment_break: float,
                         call: Call) -> pb.TextSentiment:
    """`text` (a transcript: tags are stripped) cut into sentences and scored; scored=False when it holds no
    word or nothing scores `language`."""
    method = scorer.method(language)
    parts = sentences(strip_tags(text), language)
    if method is None or not parts:
        return pb.TextSentiment(scored=False)
    scores = await scorer.score([p.text for p in parts], language, call)
    weights = np.array([p.end_word - p.start_word for p in parts], np.float64)
    mean = float(np.dot(weights, scores) / weights.sum())
    return pb.TextSentiment(
        scored=True, score=mean, label=label(mean, sentiment_break), method=method,
        sentences=[pb.TextSegment(text=p.text, start_word=p.start_word, end_word=p.end_word,
                                  sentiment=label(s, sentiment_break), sentiment_score=s)
                   for p, s in zip(parts, scores)])


def text_language(language: str) -> str:
    """AnalyzeText's language ("" is "auto"); INVALID_ARGUMENT for one toneserve does not transcribe."""
    language = language or "auto"
    if language != "auto" and language not in contract.TEXT_LANGUAGES:
        raise ToneserveError(Code.INVALID_ARGUMENT, f"language {language!r} is not supported; choose auto or one of "
                                                    f"{', '.join(contract.TEXT_LANGUAGES)}")
    return language


def check_text(text: str, max_chars: int) -> None:
    """INVALID_ARGUMENT for a text that is empty (no word) or longer than `max_chars`."""
    if len(text) > max_chars:
        raise ToneserveError(Code.INVALID_ARGUMENT, f"the text is {len(text)} characters; at most {max_chars} are "
                                                    f"allowed (send a longer text in parts)")
    if not text.strip():
        raise ToneserveError(Code.INVALID_ARGUMENT, "the text is empty")
