"""The words of a transcript with their times (gateway/words.py `timed`), from SenseVoice's pieces.

The pieces are what Triton's asr ensemble returns (TOKENS, TOKEN_MS, TOKEN_END_MS: ms from the clip start); the
words must be exactly `words.spans` of the transcript (the words TextSegment.start_word / end_word count), each
timed by the pieces of its letters and digits, in ms from the start of the recording, inside the segment.
"""
from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toneserve.gateway import sentiment, words
from toneserve.gateway.words import Piece, strip_tags, timed

START, END = 10_000, 14_000  # the segment: ms from the start of the recording


def ptimes(*pieces: tuple[str, int, int]) -> list[Piece]:
    return [Piece(*p) for p in pieces]


def table(found) -> list[tuple[str, int, int]]:
    return [(w.text, w.start_ms, w.end_ms) for w in found]


def assert_well_formed(found, transcript: str, language: str, start: int = START, end: int = END) -> None:
    """The words are the transcript's (one per span, in order), and their times never go back and stay inside the
    segment."""
    text = strip_tags(transcript)
    spans = words.spans(text, language)
    assert len(found) == len(spans)
    for word, (a, b) in zip(found, spans):
        assert word.text.startswith(text[a:b]), (word.text, text[a:b])
        assert not any(c.isalnum() for c in word.text[b - a:]), word.text  # only punctuation after the span
    for word in found:
        assert start <= word.start_ms <= word.end_ms <= end, table(found)
    assert [w.start_ms for w in found] == sorted(w.start_ms for w in found)


def test_english_pieces_join_at_the_word_start_marker():
    pieces = ptimes(("▁I", 30, 90), ("▁will", 150, 270), ("▁ch", 330, 390), ("eck", 390, 510), ("▁it", 570, 630))
    found = timed("I will check it", "en", pieces, START, END)
    assert table(found) == [("I", START + 30, START + 90), ("will", START + 150, START + 270),
                            ("check", START + 330, START + 510), ("it", START + 570, START + 630)]
    assert_well_formed(found, "I will check it", "en")


def test_a_piece_of_several_cjk_characters_is_divided_evenly_between_them():
    pieces = ptimes(("▁我", 30, 90), ("想问", 150, 270), ("一下", 330, 420))
    found = timed("我想问一下", "zh", pieces, START, END)
    assert table(found) == [("我", START + 30, START + 90), ("想", START + 150, START + 210),
                            ("问", START + 210, START + 270), ("一", START + 330, START + 375),
                            ("下", START + 375, START + 420)]
    assert_well_formed(found, "我想问一下", "zh")


def test_punctuation_after_a_word_belongs_to_it_and_carries_no_time():
    # ITN's comma and full stop come as pieces of their own, later than the word they follow.
    pieces = ptimes(("▁Hello", 30, 210), (",", 210, 270), ("▁world", 450, 630), (".", 630, 900))
    found = timed("Hello, world.", "en", pieces, START, END)
    assert table(found) == [("Hello,", START + 30, START + 210), ("world.", START + 450, START + 630)]
    # In zh the punctuation is no word either: it joins the character before it.
    pieces = ptimes(("▁你", 30, 90), ("好", 90, 150), ("，", 150, 210), ("世", 270, 330), ("界", 330, 390), ("。", 390, 600))
    found = timed("你好，世界。", "zh", pieces, START, END)
    assert table(found) == [("你", START + 30, START + 90), ("好，", START + 90, START + 150),
                            ("世", START + 270, START + 330), ("界。", START + 330, START + 390)]
    assert_well_formed(found, "你好，世界。", "zh")


def test_punctuation_at_the_start_has_no_word_before_it_and_is_left_out():
    found = timed("¿Qué? ... sí", "en", ptimes(("▁¿", 0, 60), ("Qué", 60, 180), ("?", 180, 200), ("▁...", 200, 260),
                                               ("▁sí", 300, 420)), START, END)
    # "¿Qué?" is one whitespace token holding letters; "..." holds none, so is no word.
    assert table(found) == [("¿Qué?", START + 60, START + 180), ("sí", START + 300, START + 420)]
    found = timed("「你好", "zh", ptimes(("▁「", 0, 60), ("你", 60, 120), ("好", 120, 180)), START, END)
    assert table(found) == [("你", START + 60, START + 120), ("好", START + 120, START + 180)]


@pytest.mark.parametrize("transcript,pieces", [
    # The tags in both (random weights emit them as pieces, and the transcript shows them).
    ("<|en|><|NEUTRAL|>good morning", [("<|en|>", 0, 30), ("<|NEUTRAL|>", 30, 90), ("▁good", 90, 210),
                                       ("▁morning", 270, 450)]),
    # In the transcript only.
    ("<|en|><|NEUTRAL|><|Speech|><|woitn|>good morning", [("▁good", 90, 210), ("▁morning", 270, 450)]),
    # In the pieces only, in the middle of a word.
    ("good morning", [("▁good", 90, 210), ("▁mor", 270, 330), ("<|HAPPY|>", 330, 360), ("ning", 360, 450)]),
])
def test_tags_in_the_pieces_or_the_transcript_are_no_words_and_move_no_time(transcript, pieces):
    found = timed(transcript, "en", ptimes(*pieces), START, END)
    assert table(found) == [("good", START + 90, START + 210), ("morning", START + 270, START + 450)]


def test_an_empty_transcript_has_no_words():
    assert timed("", "en", [], START, END) == []
    assert timed("<|nospeech|><|EMO_UNKNOWN|>", "auto", ptimes(("<|nospeech|>", 0, 60)), START, END) == []
    assert timed("...", "en", ptimes(("▁...", 0, 60)), START, END) == []


def test_mixed_language_text_counts_each_han_character_and_each_latin_run():
    pieces = ptimes(("▁我", 0, 60), ("▁love", 120, 300), ("▁你", 360, 420), ("们", 420, 480), ("▁2024", 540, 780))
    found = timed("我 love 你们 2024", "auto", pieces, START, END)
    assert table(found) == [("我", START + 0, START + 60), ("love", START + 120, START + 300),
                            ("你", START + 360, START + 420), ("们", START + 420, START + 480),
                            ("2024", START + 540, START + 780)]
    assert_well_formed(found, "我 love 你们 2024", "auto")
    # Without Han or kana, "auto" text is counted by spaces.
    found = timed("hello 2024 world", "auto", ptimes(("▁hello", 0, 60), ("▁20", 90, 150), ("24", 150, 210),
                                                     ("▁world", 240, 300)), START, END)
    assert [w.text for w in found] == ["hello", "2024", "world"]
    assert (found[1].start_ms, found[1].end_ms) == (START + 90, START + 210)


def test_byte_pieces_decode_together_and_time_their_character():
    # sentencepiece's byte fallback: "é" as the two pieces of its UTF-8 bytes.
    pieces = ptimes(("▁caf", 0, 120), ("<0xC3>", 120, 150), ("<0xA9>", 150, 180), ("▁au", 240, 300), ("▁lait", 300, 420))
    found = timed("café au lait", "en", pieces, START, END)
    assert table(found) == [("café", START, START + 180), ("au", START + 240, START + 300),
                            ("lait", START + 300, START + 420)]


def test_times_are_clipped_to_the_segment():
    # The last CTC frame may reach past the samples the segment holds.
    found = timed("one two", "en", ptimes(("▁one", 0, 300), ("▁two", 3_900, 4_030)), START, END)
    assert table(found) == [("one", START, START + 300), ("two", START + 3_900, END)]
    assert_well_formed(found, "one two", "en")


def test_an_odd_piece_or_a_word_without_pieces_does_not_break_the_others():
    # A piece the transcript does not show ("⁇" for <unk>), and a transcript word no piece gave ("extra").
    pieces = ptimes(("▁please", 0, 180), ("<unk>", 180, 240), ("▁hold", 300, 420), ("▁on", 480, 540))
    found = timed("please hold extra on", "en", pieces, START, END)
    assert table(found) == [("please", START, START + 180), ("hold", START + 300, START + 420),
                            ("extra", START + 420, START + 420), ("on", START + 480, START + 540)]
    assert_well_formed(found, "please hold extra on", "en")
    # No pieces at all (a backend that returns none): no words, rather than words with made-up times.
    assert timed("please hold on", "en", [], START, END) == []


def test_sentences_index_into_the_words():
    """TextSegment.start_word / end_word of the transcript's sentences pick the words of each sentence."""
    transcript = "Thank you. I will check the account for you! 好的，谢谢。"
    pieces, clock = [], 0
    for token in transcript.split(" "):
        pieces.append(Piece("▁" + token, clock, clock + 240))
        clock += 300
    for language in ("en", "auto"):
        found = timed(transcript, language, pieces, START, END)
        sentences = sentiment.sentences(strip_tags(transcript), language)
        assert sentences and sentences[-1].end_word == len(found)
        for sentence in sentences:
            joined = ("" if language == "auto" else " ").join(w.text for w in found[sentence.start_word:sentence.end_word])
            assert joined.replace(" ", "") == sentence.text.replace(" ", ""), (language, sentence)


# --- any pieces -----------------------------------------------------------------------------------

LATIN = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=5)
CJK = st.text(alphabet="我你好的是在中国人们", min_size=1, max_size=3)
PUNCTUATION = st.sampled_from([",", ".", "?", "，", "。", "!"])
TAG = st.sampled_from(["<|en|>", "<|zh|>", "<|NEUTRAL|>", "<|Speech|>", "<|woitn|>", "<unk>"])
PIECE = st.one_of(LATIN, LATIN.map(lambda t: "▁" + t), CJK, CJK.map(lambda t: "▁" + t), PUNCTUATION, TAG)


def decode(texts: list[str]) -> str:
    """What sentencepiece's DecodeIds makes of the pieces (<unk> shown as " ⁇ "; tags kept)."""
    return "".join(" ⁇ " if t == "<unk>" else t for t in texts).replace("▁", " ").lstrip(" ")


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(PIECE, max_size=25), gaps=st.lists(st.integers(0, 200), min_size=25, max_size=25),
       lengths=st.lists(st.integers(0, 300), min_size=25, max_size=25),
       language=st.sampled_from(["en", "zh", "auto", "ko"]), noise=st.sampled_from(["", "xyz ", "。"]))
def test_any_pieces_give_the_transcripts_words_with_times_inside_the_segment(texts, gaps, lengths, language, noise):
    """Pieces as CTC emits them (in time order, each after the one before), decoded to the transcript or to a
    transcript with text no piece gave (`noise`): the words are always the transcript's, in order, their times
    inside the segment and never going back; where the transcript is the pieces' own text, every word with a
    letter or digit starts within its first piece and ends within its last."""
    pieces, clock = [], 0
    for text, gap, length in zip(texts, gaps, lengths):
        pieces.append(Piece(text, clock + gap, clock + gap + length))
        clock += gap + length
    end = START + min(clock, 2_000)  # the segment may end before the last piece does
    transcript = decode(texts)
    found = timed(noise + transcript, language, pieces, START, end)
    if pieces:
        assert_well_formed(found, noise + transcript, language, START, end)
    found = timed(transcript, language, pieces, START, end)
    if not pieces:
        assert found == []
        return
    assert_well_formed(found, transcript, language, START, end)
    first, last = pieces[0].start_ms + START, pieces[-1].end_ms + START
    for word in found:
        assert min(first, end) <= word.start_ms and word.end_ms <= min(last, end)
