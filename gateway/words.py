"""Words of a text, as every part of the gateway counts them (speaking rate, sentences, start_word/end_word).

zh, yue and ja are written without spaces between words: there each Han or kana character is a word, and
a run of other letters or digits mixed in (an English word, a number) is one word. Elsewhere (en, ko, ...)
a word is a whitespace-separated token holding a letter or digit, so a lone "-" or "..." is no word.
Punctuation is never a word of its own: it belongs to the word before it. Text whose language is not
known ("auto", "") is counted by characters when it holds Han or kana, else by spaces.

`timed` gives those words their times (Segment.words), from the pieces SenseVoice decoded the transcript from.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import NamedTuple

from toneserve.v1 import toneserve_pb2 as pb

# SenseVoice leaves markup such as <|en|><|NEUTRAL|><|Speech|><|woitn|> in some transcripts.
_TAG = re.compile(r"<\|[^|]*\|>")
# Languages written without spaces between words, where each character counts as a word.
CHARACTER_LANGUAGES = frozenset({"zh", "yue", "ja"})
# Han ideographs (basic, extension A, compatibility, supplementary planes) and kana;
# the kana ranges leave out the middle dot (U+30FB), which is punctuation.
_CJK = ("\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
        "\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
# One CJK character, or a run of other letters/digits (a latin word or number mixed in).
_CJK_WORD = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+")
_TOKEN = re.compile(r"\S+")
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def strip_tags(text: str) -> str:
    """The transcript without SenseVoice's <|...|> tags."""
    return _TAG.sub("", text)


def by_characters(text: str, language: str) -> bool:
    """Whether `text` in `language` is counted a character a word (module docstring)."""
    if language in CHARACTER_LANGUAGES:
        return True
    return language in ("", "auto") and _CJK_CHAR.search(text) is not None


def spans(text: str, language: str) -> list[tuple[int, int]]:
    """The (start, end) character offsets of the words of `text` (tags already stripped), in order."""
    if by_characters(text, language):
        return [m.span() for m in _CJK_WORD.finditer(text)]
    return [m.span() for m in _TOKEN.finditer(text) if _LETTER_OR_DIGIT.search(m.group())]


def count(text: str, language: str) -> int:
    """The number of words of a transcript (its tags stripped)."""
    return len(spans(strip_tags(text), language))


# --- Words with times --------------------------------------------------------------------------

# sentencepiece's word-start marker (decoded as a space), its byte-fallback pieces, and its control pieces
# (<unk>, <s>, </s>) and SenseVoice's tags, which decode to no text of the transcript's.
WORD_START = "\u2581"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_CONTROL_PIECE = re.compile(r"<[^<>\s]+>")


class Piece(NamedTuple):
    """One of SenseVoice's CTC pieces ("▁he", "llo", "你好") and when it was spoken: ms from the start of the clip
    it was decoded from (Triton's asr TOKENS, TOKEN_MS and TOKEN_END_MS)."""
    text: str
    start_ms: int
    end_ms: int


def _decoded(pieces: Sequence[Piece]) -> tuple[str, list[int], list[tuple[int, int]]]:
    """The text `pieces` decode to (the word-start marker as a space; tags and control pieces dropped; a run of
    byte pieces decoded together), the unit each of its characters came from, and each unit's (start, end). A unit
    is a piece, or a run of byte pieces."""
    chars: list[str] = []
    owner: list[int] = []
    times: list[tuple[int, int]] = []
    pending = bytearray()
    pending_times: list[int] = []

    def add(text: str, start: int, end: int) -> None:
        chars.append(text)
        owner.extend([len(times)] * len(text))
        times.append((start, end))

    def flush() -> None:
        if pending:
            add(pending.decode("utf-8", errors="replace"), pending_times[0], pending_times[-1])
            pending.clear()
            pending_times.clear()

    for piece in pieces:
        byte = _BYTE_PIECE.fullmatch(piece.text)
        if byte:
            pending.append(int(byte.group(1), 16))
            pending_times.extend((piece.start_ms, piece.end_ms))
            continue
        flush()
        if not _CONTROL_PIECE.fullmatch(piece.text):
            add(piece.text.replace(WORD_START, " "), piece.start_ms, piece.end_ms)
    flush()
    return "".join(chars), owner, times


def _sources(text: str, decoded: str, owner: list[int]) -> list[int | None]:
    """For each character of `text`, the unit of `decoded` it is (None: none). The two are aligned by difflib's
    matching blocks, which are in order: a piece the transcript does not show, or text no piece gave, leaves the
    rest aligned."""
    lead = len(decoded) - len(decoded.lstrip(" "))  # sentencepiece drops the first word-start marker
    if decoded[lead:] == text:  # as a transcript is decoded: no alignment needed
        return list(owner[lead:])
    sources: list[int | None] = [None] * len(text)
    matcher = difflib.SequenceMatcher(None, text, decoded, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        sources[a:a + size] = owner[b:b + size]
    return sources


def _extent(text: str, spans_: list[tuple[int, int]], index: int) -> int:
    """Where word `index`'s text ends: its span, and the punctuation after it (which belongs to it) up to a space or
    the next word."""
    stop = spans_[index + 1][0] if index + 1 < len(spans_) else len(text)
    end = spans_[index][1]
    while end < stop and not text[end].isspace():
        end += 1
    return end


def timed(transcript: str, language: str, pieces: Sequence[Piece], start_ms: int, end_ms: int) -> list[pb.Word]:
    """The words of `transcript` (exactly `spans(strip_tags(transcript), language)`, each with the punctuation after
    it) and their times, from the pieces SenseVoice decoded it from; `start_ms` / `end_ms`: the segment's, in ms
    from the start of the recording.

    A word starts where the piece of its first letter or digit starts and ends where the piece of its last one
    ends (FunASR's timestamps); a piece that several words share (one holding several CJK characters) is divided
    evenly between them; punctuation carries no time of its own. A word no piece can be found for (the transcript
    and the pieces disagree) is given no length, where the word before it ended. Times are ms from the start of
    the recording (`start_ms` + the piece's), kept inside the segment, and never go back: each word starts no
    earlier than the one before it. No pieces at all (a backend that gives none): no words, rather than words
    with made-up times."""
    text = strip_tags(transcript)
    found = spans(text, language)
    if not found or not pieces:
        return []
    decoded, owner, times = _decoded(pieces)
    sources = _sources(text, decoded, owner)
    units: list[list[int]] = []  # per word: the units of its letters and digits, in order
    sharers: dict[int, list[int]] = {}  # unit -> the words whose letters or digits it holds
    for index, (a, b) in enumerate(found):
        held = [u for i in range(a, b) if (u := sources[i]) is not None and _LETTER_OR_DIGIT.match(text[i])]
        units.append(held)
        for unit in dict.fromkeys(held):
            sharers.setdefault(unit, []).append(index)

    def share(unit: int, index: int) -> tuple[int, int]:
        """Word `index`'s part of `unit`'s time."""
        start, end = times[unit]
        words = sharers[unit]
        k, n = words.index(index), len(words)
        return start + (end - start) * k // n, start + (end - start) * (k + 1) // n

    out: list[pb.Word] = []
    previous = (start_ms, start_ms)  # the previous word's (start, end)
    for index, held in enumerate(units):
        if held:
            first, last = start_ms + share(held[0], index)[0], start_ms + share(held[-1], index)[1]
        else:
            first = last = previous[1]
        first = min(max(first, previous[0], start_ms), end_ms)
        last = min(max(last, first), end_ms)
        out.append(pb.Word(text=text[found[index][0]:_extent(text, found, index)], start_ms=first, end_ms=last))
        previous = (first, last)
    return out
