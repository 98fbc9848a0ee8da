"""Words of a text, as every part of the gateway counts them (speaking rate, sentences, start_word/end_word).

zh, yue and ja are written without spaces between words: there each Han or kana character is a word, and
a run of other letters or digits mixed in (an English word, a number) is one word. Elsewhere (en, ko, ...)
a word is a whitespace-separated token holding a letter or digit, so a lone "-" or "..." is no word.
Punctuation is never a word of its own: it belongs to the word before it. Text whose language is not
known ("auto", "") is counted by characters when it holds Han or kana, else by spaces.
"""
from __future__ import annotations

import re

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
