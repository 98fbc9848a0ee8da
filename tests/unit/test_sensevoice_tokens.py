"""The special tokens SenseVoice's decoder looks up by name, against the real SenseVoiceSmall vocabulary.

The decoder never holds an id table: it finds each tag's id by its piece ("<|HAPPY|>") in the tokenizer the
model ships. Here every name it uses is looked up in the published token list (the 25055 pieces of
``chn_jpn_yue_eng_ko_spectok.bpe.model`` in id order, tests/data/real-model-files) and must land on the
id FunASR's SenseVoiceSmall hard-codes for it, so a renamed or missing tag fails here, not in production.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toneserve.model_repository.runners.sensevoice_decode import (
    FAMILY_FRAME,
    NUM_QUERY_FRAMES,
    OPTIONAL_EVENT_TAGS,
    OPTIONAL_OTHER_TAGS,
    TAG_FAMILIES,
    ctc_greedy_decode,
    tag_piece,
    token_times,
)

TOKEN_LIST = Path(__file__).resolve().parents[1] / "data" / "real-model-files" / "SenseVoiceSmall" / "tokens-from-bpe.txt"

# The ids of the published vocabulary, as FunASR's SenseVoiceSmall uses them (funasr/models/sense_voice/model.py:
# lid_int_dict, textnorm_int_dict, emo_dict; blank_id 0) and as its rich-transcription tables name them.
REAL_IDS = {
    "zh": 24884, "en": 24885, "yue": 24888, "ja": 24892, "ko": 24896, "nospeech": 24992,
    "HAPPY": 25001, "SAD": 25002, "ANGRY": 25003, "NEUTRAL": 25004, "FEARFUL": 25005, "DISGUSTED": 25006,
    "SURPRISED": 25007, "OTHER": 25008, "EMO_UNKNOWN": 25009,
    "Speech": 24993, "BGM": 24995, "Laughter": 24997, "Applause": 24999, "Cry": 25010, "Sneeze": 25011,
    "Breath": 25012, "Cough": 25013, "Sing": 25014, "Speech_Noise": 25015, "GBG": 25018, "Event_UNK": 25019,
    "withitn": 25016, "woitn": 25017,
}
VOCAB_SIZE = 25055


@pytest.fixture(scope="module")
def pieces() -> list[str]:
    if not TOKEN_LIST.is_file():
        pytest.skip(f"{TOKEN_LIST} is not present")
    lines = TOKEN_LIST.read_text(encoding="utf-8").split("\n")
    return [line.replace(" ", "\u2581") for line in (lines[:-1] if lines[-1] == "" else lines)]


def test_the_published_list_is_the_whole_vocabulary(pieces):
    assert len(pieces) == VOCAB_SIZE
    assert len(set(pieces)) == VOCAB_SIZE
    # <unk> is the CTC blank (FunASR's SenseVoiceSmall: blank_id 0); <s>, </s> follow.
    assert pieces[:3] == ["<unk>", "<s>", "</s>"]


def test_every_tag_the_decoder_uses_has_its_funasr_id(pieces):
    index = {piece: i for i, piece in enumerate(pieces)}
    names = [name for family in TAG_FAMILIES.values() for name in family] + [*OPTIONAL_EVENT_TAGS,
                                                                              *OPTIONAL_OTHER_TAGS]
    assert sorted(names) == sorted(REAL_IDS), "a tag the decoder uses has no checked id, or the reverse"
    found = {name: index.get(tag_piece(name)) for name in names}
    assert found == REAL_IDS


def test_the_emotion_distribution_covers_every_emotion_tag_of_the_vocabulary(pieces):
    # The emotion tags sit in one run (HAPPY .. EMO_UNKNOWN); the decoder scores all of them, OTHER included.
    run = pieces[REAL_IDS["HAPPY"]:REAL_IDS["EMO_UNKNOWN"] + 1]
    assert run == [tag_piece(name) for name in TAG_FAMILIES["emotion"]]


def test_the_language_distribution_is_the_six_languages_funasr_can_be_asked_for(pieces):
    # FunASR's lid_dict: auto (no tag), zh, en, yue, ja, ko, nospeech. The other language tags of the vocabulary
    # are left out of the distribution (README: language renormalisation).
    assert TAG_FAMILIES["language"] == ("zh", "en", "yue", "ja", "ko", "nospeech")
    others = [p for p in pieces[REAL_IDS["zh"]:REAL_IDS["nospeech"]]
              if p not in {tag_piece(n) for n in TAG_FAMILIES["language"]}]
    assert tag_piece("de") in others and len(others) > 50


def test_the_query_frames_are_language_emotion_event_itn():
    # FunASR's SenseVoiceSmall prepends [language, event/emotion (embedding rows 1, 2), textnorm] queries and
    # prints the tags as <|lang|><|EMO|><|Event|><|itn|>.
    assert FAMILY_FRAME == {"language": 0, "emotion": 1, "event": 2, "itn": 3}
    assert NUM_QUERY_FRAMES == 4


@pytest.mark.parametrize("start, end, frames, expected", [
    (0, 1, 10, (0, 30)),        # the first frame starts at 0, not -30
    (1, 3, 10, (30, 150)),
    (7, 10, 10, (390, 570)),    # the last frame ends at frames * 60 - 30
    (9, 12, 10, (510, 570)),
])
def test_token_times_are_funasrs(start, end, frames, expected):
    assert token_times(start, end, frames) == expected


def test_decoded_tokens_carry_funasrs_times():
    # Four query frames, then CTC frames: blank, A A, blank, B.
    vocab = ["<unk>", "a", "b", *[tag_piece(n) for family in TAG_FAMILIES.values() for n in family]]
    assets = {"tokens": vocab, "blank_id": 0,
              **{family: {n: vocab.index(tag_piece(n)) for n in names} for family, names in TAG_FAMILIES.items()}}
    path = [3, 3, 3, 3, 0, 1, 1, 0, 2]
    logits = np.full((len(path), len(vocab)), -5.0, np.float32)
    logits[np.arange(len(path)), path] = 5.0

    class Pieces:
        def DecodeIds(self, ids):  # noqa: N802 (sentencepiece's name)
            return "".join(vocab[i] for i in ids)

    out = ctc_greedy_decode(logits, len(path), assets, sp=Pieces())
    assert out["token_ids"] == [1, 2]
    assert [(t["start_ms"], t["end_ms"]) for t in out["tokens"]] == [(30, 150), (210, 270)]
    assert out["text"] == "ab"
    assert abs(sum(out["emotion"].values()) - 1) < 1e-6 and set(out["emotion"]) == set(TAG_FAMILIES["emotion"])
