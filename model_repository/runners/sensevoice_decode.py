"""Torch-free SenseVoice CTC decoding (runs inside a Triton Python backend).

Only numpy, json and sentencepiece are imported here; never torch or funasr.

Encoder output frames 0..3 answer the four query embeddings [language, emotion, event,
textnorm]; they are read as probability distributions over the token ids of each tag
family (softmax restricted to those ids, i.e. renormalised over them).  Frames
4..length-1 are CTC frames: argmax, collapse repeats, drop blank, detokenise.  One CTC
frame is 60 ms (10 ms hop x LFR n=6); a token's times are the ones FunASR's SenseVoice reports
(``max(frame * 60 - 30, 0)`` ms for its start), so that both give the same times for a clip.

The language distribution is renormalised over the six languages FunASR's SenseVoiceSmall can be
asked for (its ``lid_dict``: zh, en, yue, ja, ko, nospeech). The real vocabulary has tags for about
a hundred more languages (de, es, fr, ...); their scores on the language frame are left out, not
counted as a seventh "other language" class, so the six probabilities sum to 1.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

FRAME_SHIFT_MS = 60  # 10 ms fbank hop x LFR n=6
NUM_QUERY_FRAMES = 4  # [language, emotion, event, textnorm]

# Tag families, in the form of the real SenseVoice vocabulary ("<|name|>"), as listed by
# funasr.utils.postprocess_utils (lang_dict / emo_dict / event_dict / emoji_dict).
LANGUAGE_TAGS = ("zh", "en", "yue", "ja", "ko", "nospeech")
# OTHER (id 25008 in the real vocabulary, between SURPRISED and EMO_UNKNOWN) is one of the classes the
# emotion frame is scored over, as in FunASR's emotion list; leaving it out would inflate the others.
EMOTION_TAGS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "OTHER", "EMO_UNKNOWN")
EVENT_TAGS = ("Speech", "BGM", "Laughter", "Applause", "Cry", "Sneeze", "Breath", "Cough", "Event_UNK")
# Listed by FunASR's emoji_dict, presence in the real vocabulary unconfirmed: used when the
# tokenizer has them, never required.
OPTIONAL_EVENT_TAGS = ("Sing", "Speech_Noise")
OPTIONAL_OTHER_TAGS = ("GBG",)
ITN_TAGS = ("withitn", "woitn")

TAG_FAMILIES = {
    "language": LANGUAGE_TAGS,
    "emotion": EMOTION_TAGS,
    "event": EVENT_TAGS,
    "itn": ITN_TAGS,
}
# Which encoder output frame answers which family.
FAMILY_FRAME = {"language": 0, "emotion": 1, "event": 2, "itn": 3}


def tag_piece(name: str) -> str:
    """'HAPPY' -> '<|HAPPY|>' (the real SenseVoice special-token form)."""
    return f"<|{name}|>"


def all_special_pieces(include_optional: bool = True) -> list[str]:
    names: list[str] = [*LANGUAGE_TAGS, *EMOTION_TAGS, *EVENT_TAGS, *ITN_TAGS]
    if include_optional:
        names += [*OPTIONAL_EVENT_TAGS, *OPTIONAL_OTHER_TAGS]
    return [tag_piece(n) for n in names]


def load_decode_assets(path: str | os.PathLike) -> dict[str, Any]:
    """Read decode_assets.json; resolves its "bpe_model" relative to the json's folder."""
    path = Path(path)
    with open(path, "r", encoding="utf-8") as f:
        assets = json.load(f)
    bpe = assets.get("bpe_model")
    if bpe:
        bpe_path = Path(bpe)
        if not bpe_path.is_absolute():
            bpe_path = path.parent / bpe_path
        assets["bpe_model_path"] = str(bpe_path)
    return assets


@functools.lru_cache(maxsize=8)
def _sentencepiece(path: str):
    sp = spm.SentencePieceProcessor()
    if not sp.Load(path):
        raise ValueError(f"cannot load sentencepiece model {path}")
    return sp


def _softmax_over(row: np.ndarray, ids: dict[str, int]) -> dict[str, float]:
    names = list(ids)
    z = np.asarray([row[ids[n]] for n in names], dtype=np.float64)
    z = z - z.max()
    p = np.exp(z)
    p /= p.sum()
    return {n: float(v) for n, v in zip(names, p)}


def token_times(start: int, end: int, frames: int) -> tuple[int, int]:
    """Milliseconds of a token spanning CTC frames [start, end) of ``frames``, as FunASR's SenseVoice
    reports them: ``max(start * 60 - 30, 0)`` and ``min(end * 60 - 30, frames * 60 - 30)``."""
    half = FRAME_SHIFT_MS // 2
    return max(start * FRAME_SHIFT_MS - half, 0), min(end * FRAME_SHIFT_MS - half, frames * FRAME_SHIFT_MS - half)


def ctc_greedy_decode(
    ctc_logits_2d: np.ndarray,
    length: int,
    assets: dict[str, Any],
    sp: Any = None,
) -> dict[str, Any]:
    """Decode ONE item of the encoder output.

    ctc_logits_2d: [T, V] logits or log-probs (either works: both are used only through
      argmax and softmax restricted to a tag family).  length: encoder_out_lens for this
      item (includes the 4 query frames); frames >= length are padding and ignored.
    assets: decode assets (see toneserve.export.sensevoice_tokenizer.decode_assets or
      load_decode_assets).  sp: optional SentencePieceProcessor; loaded from
      assets["bpe_model_path"] when omitted.

    Returns {"language"|"emotion"|"event"|"itn": {name: prob}, "text": str,
    "token_ids": [...], "tokens": [{"id", "piece", "frame", "start_ms", "end_ms"}]} where
    frame is relative to frame 4 and the times are FunASR's: start_ms = max(frame * 60 - 30, 0),
    end_ms = min(end_frame * 60 - 30, frames * 60 - 30) (:func:`token_times`).
    """
    logits = np.asarray(ctc_logits_2d)
    if logits.ndim != 2:
        raise ValueError(f"ctc_logits_2d must be [T, V], got shape {logits.shape}")
    length = int(length)
    if length < NUM_QUERY_FRAMES or length > logits.shape[0]:
        raise ValueError(f"length {length} outside [{NUM_QUERY_FRAMES}, {logits.shape[0]}]")
    vocab = len(assets["tokens"])
    if logits.shape[1] != vocab:
        raise ValueError(f"logits have {logits.shape[1]} classes, tokenizer has {vocab} pieces")

    out: dict[str, Any] = {}
    for family, frame in FAMILY_FRAME.items():
        out[family] = _softmax_over(logits[frame], assets[family])

    blank = int(assets["blank_id"])
    best = np.argmax(logits[NUM_QUERY_FRAMES:length], axis=-1)
    tokens: list[dict[str, Any]] = []
    if best.size:
        starts = np.flatnonzero(np.concatenate([[True], best[1:] != best[:-1]]))
        ends = np.concatenate([starts[1:], [best.size]])
        for s, e in zip(starts.tolist(), ends.tolist()):
            tok = int(best[s])
            if tok == blank:
                continue
            start_ms, end_ms = token_times(s, e, best.size)
            tokens.append({"id": tok, "piece": assets["tokens"][tok], "frame": s,
                           "start_ms": start_ms, "end_ms": end_ms})
    ids = [t["id"] for t in tokens]
    if sp is None:
        sp = _sentencepiece(str(assets["bpe_model_path"]))
    out["text"] = sp.DecodeIds(ids) if ids else ""
    out["token_ids"] = ids
    out["tokens"] = tokens
    return out


__all__ = [
    "EMOTION_TAGS",
    "EVENT_TAGS",
    "FRAME_SHIFT_MS",
    "ITN_TAGS",
    "LANGUAGE_TAGS",
    "NUM_QUERY_FRAMES",
    "OPTIONAL_EVENT_TAGS",
    "TAG_FAMILIES",
    "all_special_pieces",
    "ctc_greedy_decode",
    "load_decode_assets",
    "tag_piece",
    "token_times",
]
